"""BLIP-VQA yes/no probabilities, shared by the loop's external BLIP judge and the benchmark scorers.

`BlipVqa` wraps a `BlipForQuestionAnswering`: images are encoded once (`encode_images`) and shared by all their
questions; `probs` gives P(yes), P(no) at the answer decoder's first step (fed `[DEC]`, full-vocabulary softmax).
As the original BLIP does for VQA, a question is lower-cased with `.!"()*#:;~` removed (`pre_question`) and its
first token is `[ENC]` (transformers' BLIP keeps `[CLS]`; issue #22732). Pixels: bicubic resize to `image_size`,
CLIP mean/std (`to_pixels`); the vision model runs with `interpolate_pos_encoding=True`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_QUESTION_TOKENS = 35
_STRIP_CHARS = re.compile(r"([.!\"()*#:;~])")


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's `pre_question`: lower-case, drop `.!"()*#:;~`, strip trailing spaces, at most 50 words."""
    question = _STRIP_CHARS.sub("", question.lower()).rstrip(" ")
    return " ".join(question.split(" ")[:max_words])


def to_pixels(images: list[Image.Image], size: int, *, resample: str = "bicubic") -> torch.Tensor:
    """(B, 3, size, size) tensor: PIL resize, [0, 1], CLIP normalisation (official BLIP transform)."""
    import numpy as np
    import torch
    from PIL import Image

    mode = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[resample]
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), mode)) for im in images])  # uint8
    # one division for the batch: the same float32 numbers as np.asarray(im, dtype=np.float32) / 255, 4x faster
    pix = torch.from_numpy(np.divide(arr, np.float32(255), dtype=np.float32))  # (B, H, W, 3)
    pix = pix.permute(0, 3, 1, 2)  # (B, 3, H, W)
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

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        import torch

        pix = to_pixels(images, self.image_size).to(self.device)
        with torch.no_grad():
            return self.model.vision_model(pixel_values=pix, interpolate_pos_encoding=True).last_hidden_state

    def probs(self, image_embeds: torch.Tensor, questions: list[list[str]], *, pack: bool | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """P(yes), P(no) (full-vocabulary softmax) for every question of every image, flat in order; each `(n,)`.

        `pack` (default: whichever costs less, `_packing_pays`) puts the questions of one image in one
        text-encoder sequence, each attending only to its own tokens (block-diagonal mask, positions restarting at
        0): the image's cross-attention keys and values are then computed once instead of once per question.
        The answer decoder reads each question's states without padding, questions of equal token length
        together: transformers 5.24's BLIP text layers drop the cross-attention mask, so padded states would
        leak into the answer. Either way the numbers equal one question at a time, up to float rounding."""
        import torch

        position = {q: i for i, q in enumerate(dict.fromkeys(q for qs in questions for q in qs))}
        encoded = self.tokenizer([pre_question(q) for q in position], truncation=True, max_length=MAX_QUESTION_TOKENS,
                                 return_attention_mask=False, return_token_type_ids=False).input_ids  # fmt: skip
        if self.enc_id is not None:
            encoded = [[self.enc_id, *ids[1:]] for ids in encoded]  # BLIP's [ENC] replaces [CLS]
        per_image = [(i, [encoded[position[q]] for q in qs]) for i, qs in enumerate(questions) if qs]
        if pack is None:
            pack = self._packing_pays([row for _, row in per_image], image_embeds.shape[1])
        rows = per_image if pack else [(i, [ids]) for i, row in per_image for ids in row]
        ids, pos, segment, row, first, length = _layout([row for _, row in rows], self.tokenizer.pad_token_id)
        allowed = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)  # (R, T, T)
        mask = None  # one question per row and no padding: nothing to mask (adding zeros changes no score)
        if not bool(allowed.all()):
            dtype = image_embeds.dtype
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
            mask = mask[:, None].to(self.device)  # (R, 1, T, T)
        logits = torch.empty(len(length), self.model.config.text_config.vocab_size)
        with torch.no_grad():
            states = self.model.text_encoder(
                input_ids=ids.to(self.device),
                attention_mask=mask,
                position_ids=pos.to(self.device),
                encoder_hidden_states=image_embeds[[i for i, _ in rows]],
            ).last_hidden_state  # (R, T, H)
            for n in length.unique().tolist():
                sel = (length == n).nonzero()[:, 0]
                index = (first[sel, None] + torch.arange(n)).to(self.device)  # (k, n) token positions
                q = states[row[sel, None].to(self.device), index]  # (k, n, H): these questions' own states
                start = torch.full((len(sel), 1), self.model.decoder_start_token_id, device=self.device)
                out = self.model.text_decoder(input_ids=start, encoder_hidden_states=q)
                logits[sel] = out.logits[:, -1].float().cpu()
        p = logits.softmax(-1)
        return p[:, self.yes_id], p[:, self.no_id]

    def _packing_pays(self, rows: list[list[list[int]]], image_tokens: int) -> bool:
        """Packing saves the image keys/values of all but one question per image (image tokens x width each)
        and adds self-attention between the questions of an image that the mask then discards (T^2 - sum L^2);
        both per layer and head dimension. Real BLIP (577 tokens x 768) packs; tiny test models do not."""
        width = self.model.config.text_config.encoder_hidden_size
        saved = sum(len(row) - 1 for row in rows) * image_tokens * width
        added = sum(sum(map(len, row)) ** 2 - sum(len(ids) ** 2 for ids in row) for row in rows)
        return saved > added

    def yes_ratio(self, images: list[Image.Image], questions: list[list[str]]) -> list[list[float]]:
        """P(yes)/(P(yes)+P(no)) for every question of every image; each image encoded once."""
        if not any(questions):
            return [[] for _ in images]
        p_yes, p_no = self.probs(self.encode_images(images), questions)
        ratio = iter((p_yes / (p_yes + p_no)).tolist())
        return [[next(ratio) for _ in qs] for qs in questions]


def _layout(rows: list[list[list[int]]], pad_id: int):
    """Row r holds its questions' token ids back to back: ids `(R, T)`, positions `(R, T)` restarting at 0 per
    question, segment `(R, T)` = the question's number in its row (-1: padding), and (row, first, length), each
    `(Q,)`, for every question in order. Built with numpy index arrays: Python loops over tokens (and
    torch.tensor of nested lists) took ~0.8 ms per DPG grid, a tenth of its scoring time."""
    import itertools

    import numpy as np
    import torch

    counts = np.array([len(row) for row in rows])
    length = np.array([len(ids) for row in rows for ids in row])  # (Q,)
    row = np.repeat(np.arange(len(rows)), counts)  # (Q,)
    flat_start = np.cumsum(length) - length  # (Q,) in all tokens back to back
    row_first = np.cumsum(counts) - counts  # (R,) each row's first question
    first = flat_start - flat_start[row_first][row]  # (Q,) within its row
    token_question = np.repeat(np.arange(len(length)), length)  # (N,)
    within = np.arange(length.sum()) - flat_start[token_question]  # (N,) position within its question
    r, c = row[token_question], first[token_question] + within
    shape = (len(rows), int((first + length).max()))
    ids, pos, segment = np.full(shape, pad_id), np.zeros(shape, dtype=np.int64), np.full(shape, -1)
    ids[r, c] = np.fromiter(itertools.chain.from_iterable(q for row_ids in rows for q in row_ids), np.int64)
    pos[r, c] = within
    segment[r, c] = (np.arange(len(length)) - row_first[row])[token_question]
    return tuple(torch.from_numpy(x) for x in (ids, pos, segment, row, first, length))
