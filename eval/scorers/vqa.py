"""Yes/no VQA judges for DPG-Bench (the official judge, mPLUG-large via ModelScope, has no transformers port).

A judge answers each (image, question) with a binary yes/no: `P(yes) > P(no)` at the first answer position,
which keeps the official metric's shape (mPLUG's free-form answer compared with == 'yes'). Supported judges,
picked by the checkpoint's `model_type`: BLIP VQA (`Salesforce/blip-vqa-capfilt-large`, default; the closest in
kind to mPLUG-large: a COCO-VQA generative answerer) and Qwen2.5-VL (e.g. `Qwen/Qwen2.5-VL-7B-Instruct`, through
the loop's external judge, silmm.adapters.judges.QwenVLJudge: chat template, the question followed by "Please
answer yes or no.", yes/no probabilities summed over their single-token spellings). Scores from any substitute
judge are not comparable with published DPG numbers; the judge id and its rule are recorded with every result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eval.scorers.blip_vqa import BlipVqa

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_DPG_JUDGE = "Salesforce/blip-vqa-capfilt-large"


class BlipYesNoJudge:
    """Binary yes/no answers from BLIP-VQA at the checkpoint's own resolution."""

    rule = "yes = P(yes) > P(no) at the first answer step"

    def __init__(self, vqa: BlipVqa):
        self.vqa, self.name = vqa, vqa.name

    def answer(self, images: list[Image.Image], questions: list[list[str]]) -> list[list[bool]]:
        """For each image, one boolean per question (True = yes)."""
        if not any(questions):
            return [[] for _ in images]
        p_yes, p_no = self.vqa.probs(self.vqa.encode_images(images), questions)
        yes = iter((p_yes > p_no).tolist())
        return [[bool(next(yes)) for _ in qs] for qs in questions]


class QwenYesNoJudge:
    """Binary yes/no answers from a Qwen2.5-VL judge (`silmm.adapters.judges.QwenVLJudge`)."""

    def __init__(self, judge, *, template: str = "{question} Please answer yes or no."):
        self.judge, self.template, self.name = judge, template, judge.name
        self.rule = (f"yes = P(yes) > P(no) at the first answer position (each summed over its single-token "
                     f"spellings), asked as {template!r} in the chat template")  # fmt: skip

    def answer(self, images: list[Image.Image], questions: list[list[str]]) -> list[list[bool]]:
        """For each image, one boolean per question (True = yes); every (image, question) pair is one prompt."""
        flat = [(i, q) for i, qs in enumerate(questions) for q in qs]
        out: list[list[bool]] = [[] for _ in images]
        if not flat:
            return out
        p_yes, p_no = self.judge.answer_yes_no(
            [images[i] for i, _ in flat], [q for _, q in flat], self.template
        )
        for (i, _), yes in zip(flat, (p_yes > p_no).tolist()):
            out[i].append(bool(yes))
        return out


def load_vqa_judge(name_or_path: str, *, device: str = "cpu") -> BlipYesNoJudge | QwenYesNoJudge:
    """A judge by hub id or local folder; the family comes from the checkpoint's config."""
    from transformers import AutoConfig

    from eval.common import EvalInputError, load_pretrained

    config = load_pretrained(AutoConfig.from_pretrained, name_or_path, role="VQA judge", option="--judge")
    if config.model_type == "qwen2_5_vl":
        from silmm.adapters.judges import load_judge

        judge = load_pretrained(lambda s: load_judge(s, device=device), name_or_path, role="VQA judge (Qwen2.5-VL)",
                                option="--judge")  # fmt: skip
        return QwenYesNoJudge(judge)
    if config.model_type != "blip":
        raise EvalInputError(
            f"judge {name_or_path!r} has model_type {config.model_type!r}; supported: ['blip', 'qwen2_5_vl']"
        )
    vqa = BlipVqa.from_pretrained(name_or_path, device=device, image_size=config.vision_config.image_size)
    return BlipYesNoJudge(vqa)
