"""Disentangled BLIP-VQA, the T2I-CompBench attribute-binding scorer (color, shape, texture, complex part).

Official rule (BENCHMARKS.md 1.3): for each of at most 8 noun phrases ask `f"{phrase}?"`, take
P(yes) / (P(yes) + P(no)) from the text decoder's first step (fed `[DEC]`), round each factor to 4 decimals and
multiply. Inputs: 480x480 bicubic resize, CLIP mean/std, question lower-cased with `.!"()*#:;~` removed, first
token replaced by `[ENC]` (transformers' BLIP keeps `[CLS]`; issue #22732). The HF model is run at 480 px with
`interpolate_pos_encoding=True`. Images are encoded once and shared by all their questions (batched).
`attribute_score` is the pure product rule, taking any `p_yes(question) -> float`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_PHRASES = 8  # official --np_num 8
MAX_QUESTION_TOKENS = 35
_STRIP_CHARS = re.compile(r"([.!\"()*#:;~])")


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's `pre_question`: lower-case, drop `.!"()*#:;~`, strip trailing spaces, at most 50 words."""
    question = _STRIP_CHARS.sub("", question.lower()).rstrip(" ")
    return " ".join(question.split(" ")[:max_words])


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


def to_pixels(images: list[Image.Image], size: int, *, resample: str = "bicubic") -> torch.Tensor:
    """(B, 3, size, size) tensor: PIL resize, [0, 1], CLIP normalisation (official BLIP transform)."""
    import numpy as np
    import torch
    from PIL import Image

    mode = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[resample]
    arr = np.stack(
        [np.asarray(im.convert("RGB").resize((size, size), mode), dtype=np.float32) / 255 for im in images]
    )
    pix = torch.from_numpy(arr).permute(0, 3, 1, 2)  # (B, 3, H, W)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pix - mean) / std


class BlipVqa:
    """P(yes), P(no) for (image, question) pairs from a `BlipForQuestionAnswering`, batched."""

    def __init__(
        self, model, tokenizer, *, image_size: int = 480, use_enc_token: bool = True, device: str = "cpu"
    ):
        self.model, self.tokenizer = model.to(device).eval(), tokenizer
        self.image_size, self.device = image_size, device
        self.name = getattr(model, "name_or_path", "blip")
        self.yes_id = tokenizer.convert_tokens_to_ids("yes")
        self.no_id = tokenizer.convert_tokens_to_ids("no")
        enc = tokenizer.convert_tokens_to_ids("[ENC]")
        self.enc_id = enc if use_enc_token and enc != tokenizer.unk_token_id else None

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

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        pix = to_pixels(images, self.image_size).to(self.device)
        with torch.no_grad():
            return self.model.vision_model(pixel_values=pix, interpolate_pos_encoding=True).last_hidden_state

    def probs(self, image_embeds: torch.Tensor, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """P(yes), P(no) (full-vocabulary softmax) for row i of `image_embeds` with question i; each `(B,)`."""
        import torch

        tok = self.tokenizer([pre_question(q) for q in questions], padding="longest", truncation=True,
                             max_length=MAX_QUESTION_TOKENS, return_tensors="pt").to(self.device)  # fmt: skip
        ids = tok.input_ids.clone()
        if self.enc_id is not None:
            ids[:, 0] = self.enc_id
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        with torch.no_grad():
            q = self.model.text_encoder(input_ids=ids, attention_mask=tok.attention_mask, encoder_hidden_states=image_embeds,
                                        encoder_attention_mask=image_mask).last_hidden_state  # fmt: skip
            start = torch.full((len(questions), 1), self.model.decoder_start_token_id, device=self.device)
            logits = self.model.text_decoder(input_ids=start, encoder_hidden_states=q,
                                             encoder_attention_mask=tok.attention_mask).logits[:, -1]  # fmt: skip
        p = logits.float().softmax(-1)
        return p[:, self.yes_id].cpu(), p[:, self.no_id].cpu()

    def yes_ratio(self, images: list[Image.Image], questions: list[list[str]]) -> list[list[float]]:
        """P(yes)/(P(yes)+P(no)) for every question of every image; each image encoded once."""
        flat = [(i, q) for i, qs in enumerate(questions) for q in qs]
        if not flat:
            return [[] for _ in images]
        embeds = self.encode_images(images)
        rows = embeds[[i for i, _ in flat]]
        p_yes, p_no = self.probs(rows, [q for _, q in flat])
        ratio = (p_yes / (p_yes + p_no)).tolist()
        out: list[list[float]] = [[] for _ in images]
        for (i, _), r in zip(flat, ratio):
            out[i].append(r)
        return out

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
