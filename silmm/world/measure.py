"""Ground-truth measurement hooks that the loop calls for world models (real models have none).

`evaluate` runs the held-out world evaluation; `oracle_answers` grades the model's own yes/no questions about its
own candidates (None where a self-written question is outside the world's question forms); `oracle_score` ranks
candidates by the share of the prompt's ground-truth questions that hold, with strict alignment as a tie-break.
`OracleJudge` answers yes/no questions from the oracle (`feedback.judge: oracle`): the loop with a perfect judge, an
ablation that bounds what a better self-judge could give.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from PIL import Image

from silmm.world.evaluate import default_prompts, evaluate, read_prompts
from silmm.world.grammar import ParseError, parse_prompt
from silmm.world.oracle import SceneView, verdict
from silmm.world.questions import answer, decompose, question_type


@lru_cache(maxsize=4096)
def _view_of_pixels(size: tuple[int, int], data: bytes) -> SceneView:
    return SceneView.from_image(Image.frombytes("RGB", size, data))


def scene_view(image: Image.Image) -> SceneView:
    """The oracle's parse, cached by pixels: DropDiv candidates of one prompt are often the same image."""
    rgb = image.convert("RGB")
    return _view_of_pixels(rgb.size, rgb.tobytes())


def _answer_or_none(question: str, view: SceneView) -> bool | None:
    """The oracle's answer, or None for a question outside the world's question forms."""
    try:
        return answer(question, view)
    except ParseError:
        return None


@dataclass
class WorldMeasure:
    images_per_prompt: int  # per held-out prompt (the loop passes run.heldout_images)
    prompts_file: str | None = None

    def evaluate(self, adapter) -> dict:
        prompts = read_prompts(self.prompts_file) if self.prompts_file else default_prompts()
        res = evaluate(adapter, prompts, images_per_prompt=self.images_per_prompt, progress=True)
        res.pop("images")
        res.pop("per_prompt")
        return res

    def oracle_answers(self, image: Image.Image, questions: list[str]) -> list[bool | None]:
        view = scene_view(image)
        return [_answer_or_none(q, view) for q in questions]

    def oracle_score(self, prompt: str, image: Image.Image) -> float:
        spec = parse_prompt(prompt)
        view = scene_view(image)
        qs = decompose(spec)
        share = sum(answer(q.text, view) for q in qs) / len(qs)
        return share + float(verdict(spec, view).strict)

    def gt_questions(self, prompt: str) -> list[str]:
        return [q.text for q in decompose(prompt)]

    def question_type(self, question: str) -> str:
        try:
            return question_type(question)
        except ParseError:
            return "unreadable"


class OracleJudge:
    """A judge that is always right about world images: p(yes) = 1 where the oracle says yes, else 0.

    A question outside the world's question forms gets p(yes) = p(no) = 0.5, so it adds nothing to a score.
    """

    name = "oracle"

    def answer_yes_no(self, images: list[Image.Image], questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        said = [_answer_or_none(q, scene_view(image)) for image, q in zip(images, questions, strict=True)]
        yes = torch.tensor([0.5 if a is None else float(a) for a in said], dtype=torch.float64)
        return yes, 1.0 - yes
