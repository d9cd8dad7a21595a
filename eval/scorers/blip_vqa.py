"""Disentangled BLIP-VQA, the T2I-CompBench attribute-binding scorer (color, shape, texture, complex part).

Official rule (BENCHMARKS.md 1.3): for each of at most 8 noun phrases ask `f"{phrase}?"`, take
P(yes) / (P(yes) + P(no)) from the text decoder's first step (fed `[DEC]`), round each factor to 4 decimals and
multiply. Inputs: 480x480 bicubic resize, CLIP mean/std, question lower-cased with `.!"()*#:;~` removed, first
token replaced by `[ENC]` (transformers' BLIP keeps `[CLS]`; issue #22732). The HF model is run at 480 px with
`interpolate_pos_encoding=True`. Images are encoded once and shared by all their questions (batched); the
model code is `silmm.adapters.blip.BlipVqa`, shared with the loop's external BLIP judge. `attribute_score` is
the pure product rule, taking any `p_yes(question) -> float`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from silmm.adapters import blip

if TYPE_CHECKING:
    from PIL import Image

MAX_PHRASES = 8  # official --np_num 8


def attribute_score(phrases: list[str], p_yes: Callable[[str], float], *, max_phrases: int = MAX_PHRASES,
                    decimals: int | None = 4) -> tuple[float, list[float]]:  # fmt: skip
    """Product over the first `max_phrases` phrases of P(yes | "phrase?"), each factor rounded (official)."""
    factors = []
    for phrase in phrases[:max_phrases]:
        p = float(p_yes(f"{phrase}?"))
        factors.append(round(p, decimals) if decimals is not None else p)
    score = 1.0
    for f in factors:
        score *= f
    return score, factors


class BlipVqa(blip.BlipVqa):
    """`silmm.adapters.blip.BlipVqa` loaded with the evaluator's errors, plus the official attribute score."""

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", **kw) -> BlipVqa:
        from transformers import AutoTokenizer, BlipForQuestionAnswering

        from eval.common import load_pretrained

        def load(path):
            return BlipForQuestionAnswering.from_pretrained(path), AutoTokenizer.from_pretrained(path)

        model, tok = load_pretrained(load, name_or_path, role="VQA judge (BLIP)", option="--judge")
        vqa = cls(model, tok, device=device, **kw)
        vqa.name = name_or_path
        return vqa

    def attribute_scores(
        self, images: list[Image.Image], phrases: list[list[str]]
    ) -> list[tuple[float, list[float]]]:
        """Official attribute-binding score for each image, given its prompt's noun phrases."""
        questions = [[f"{p}?" for p in ph[:MAX_PHRASES]] for ph in phrases]
        ratios = self.yes_ratio(images, questions)
        return [
            attribute_score(ph, dict(zip(qs, rs)).__getitem__)
            for ph, qs, rs in zip(phrases, questions, ratios)
        ]
