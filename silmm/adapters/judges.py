"""External VLM judges for paper step 4: p(yes), p(no) from a model other than the one being improved.

`feedback.judge=<hub id or folder>` lets a model that cannot see (or sees badly) still be improved, and lets
self- and external feedback be compared. Two families, chosen by the folder's `config.json` model_type:
- Qwen2.5-VL (`qwen2_5_vl`): chat template with the image, softmax over the full vocabulary at the first answer
  position, probabilities of the single-token spellings of yes / no summed. The Qwen-Image adapter reuses this
  class for self-VQA with its own text encoder.
- BLIP-VQA (`blip`): its forward returns only a loss, so the first decoder step is computed by hand
  (../shared/docs/STACK.md 2b), by the same code as the benchmark scorers (`silmm.adapters.blip`): the original
  BLIP's question preprocessing and `[ENC]` token, the checkpoint's own resolution.
The question template is a visible default argument; `name` is recorded with every score.
"""

from __future__ import annotations

import torch
from PIL import Image

from silmm.adapters.blip import BlipVqa
from silmm.adapters.hf_common import (
    NO_WORDS,
    VQA_TEMPLATE,
    YES_WORDS,
    answer_token_ids,
    default_device_dtype,
    open_pretrained,
)

# --- constants ------------------------------------------------------------------------------------------
HUB_IDS = {"qwen2.5-vl-7b": "Qwen/Qwen2.5-VL-7B-Instruct", "blip-vqa": "Salesforce/blip-vqa-base"}
JUDGE_MODEL_TYPES = ("blip", "qwen2_5_vl")
QWEN_VQA_CHAT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|>{image_pads}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
)
QWEN_VQA_PIXELS = 448 * 448  # max pixels per image for VQA: 256 visual tokens, enough for yes/no questions


def _check_pairs(images: list, questions: list) -> None:
    if len(images) != len(questions):
        raise ValueError(f"got {len(images)} images but {len(questions)} questions; pass one per image")


def _by_image(
    images: list, questions: list[str], template: str, batch_size: int, answer
) -> tuple[torch.Tensor, torch.Tensor]:
    """P(yes), P(no) per (image, question) pair from `answer(distinct images, their questions)`, `batch_size`
    distinct images a call. Distinct means distinct objects: the loop passes one object per candidate."""
    _check_pairs(images, questions)
    asked: dict[int, list[int]] = {}  # id(image) -> positions of its questions, images in first-seen order
    for i, image in enumerate(images):
        asked.setdefault(id(image), []).append(i)
    per_image = list(asked.values())
    p_yes, p_no = torch.zeros(len(images)), torch.zeros(len(images))
    for start in range(0, len(per_image), batch_size):
        rows = per_image[start : start + batch_size]
        asks = [[template.format(question=questions[i]) for i in row] for row in rows]
        yes, no = answer([images[row[0]] for row in rows], asks)
        order = [i for row in rows for i in row]
        p_yes[order], p_no[order] = yes, no
    return p_yes, p_no


class QwenVLJudge:
    """Yes/no VQA with a `Qwen2_5_VLForConditionalGeneration`, its tokenizer and a Qwen2-VL image processor."""

    def __init__(self, model, tokenizer, image_processor, *, name: str = "qwen2.5-vl", batch_size: int = 8):
        self.model, self.tokenizer, self.image_processor = model, tokenizer, image_processor
        self.name, self.batch_size = name, batch_size
        self.yes_ids, self.no_ids = (
            answer_token_ids(tokenizer, YES_WORDS),
            answer_token_ids(tokenizer, NO_WORDS),
        )

    @torch.no_grad()
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str], template: str = VQA_TEMPLATE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-vocabulary P(yes), P(no) at the first answer position; `batch_size` distinct images a call.

        The chat template puts the image before the question, so each distinct image (object) is encoded once:
        its vision pass and the prompt up to the image's end run once, and all its questions continue from that
        prefix's KV cache, with the positions the whole prompt would give them (Qwen's 3D positions)."""
        return _by_image(images, questions, template, self.batch_size, self._answer)

    def _answer(self, images: list[Image.Image], questions: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """P(yes), P(no) for each image's questions, flattened in order: prefixes (left-padded) in one forward,
        their KV cache repeated per question, then the question suffixes (left-padded) in a second forward."""
        device = next(self.model.parameters()).device
        vis = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        grid_thw = vis["image_grid_thw"].to(device)
        merge = self.image_processor.merge_size**2
        prefix, suffix = QWEN_VQA_CHAT.split("{question}")
        pre = self.tokenizer([prefix.format(image_pads="<|image_pad|>" * (int(thw.prod()) // merge)) for thw in grid_thw],
                             padding=True, padding_side="left", return_tensors="pt").to(device)  # fmt: skip
        image_tokens = (pre.input_ids == self.model.config.image_token_id).int()
        positions, _ = self.model.model.get_rope_index(
            pre.input_ids, image_tokens, image_grid_thw=grid_thw, attention_mask=pre.attention_mask
        )
        cache = self.model(
            input_ids=pre.input_ids,
            attention_mask=pre.attention_mask,
            position_ids=positions,
            pixel_values=vis["pixel_values"].to(device, self.model.dtype),
            image_grid_thw=grid_thw,
            mm_token_type_ids=image_tokens,
            use_cache=True,
            logits_to_keep=1,
        ).cache
        owner = torch.tensor([k for k, qs in enumerate(questions) for _ in qs], device=device)
        cache.reorder_cache(owner)  # one cache row per question
        suf = self.tokenizer([q + suffix for qs in questions for q in qs], padding=True, padding_side="left",
                             return_tensors="pt").to(device)  # fmt: skip
        # text after the image continues from the prefix's largest position (as `get_rope_index` numbers it)
        start = (positions * pre.attention_mask).amax(dim=(0, 2))[owner] + 1
        text_positions = start[:, None] + (suf.attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=suf.input_ids,
            attention_mask=torch.cat([pre.attention_mask[owner], suf.attention_mask], dim=1),
            position_ids=text_positions[None].expand(3, -1, -1),
            cache=cache,
            logits_to_keep=1,
        ).logits[:, -1]
        probs = logits.float().softmax(-1)
        return probs[:, self.yes_ids].sum(-1).cpu(), probs[:, self.no_ids].sum(-1).cpu()


class BlipJudge:
    """Yes/no VQA with a `BlipForQuestionAnswering` through `silmm.adapters.blip.BlipVqa`: each distinct image is
    encoded once and its questions share its cross-attention keys and values (packed when that pays)."""

    def __init__(self, vqa: BlipVqa, *, name: str = "blip-vqa", batch_size: int = 16):
        self.vqa, self.name, self.batch_size = vqa, name, batch_size

    @torch.no_grad()
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str], template: str = "{question}"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-vocabulary P(yes), P(no) at the answer decoder's first step; `batch_size` distinct images a call.
        Distinct means distinct objects: the loop passes one image object per candidate for all its questions."""
        return _by_image(images, questions, template, self.batch_size,
                         lambda ims, qs: self.vqa.probs(self.vqa.encode_images(ims), qs))  # fmt: skip


def load_judge(spec: str, device=None, dtype=None) -> QwenVLJudge | BlipJudge:
    """An external judge from a hub id or folder of a Qwen2.5-VL or BLIP-VQA model (chosen by model_type)."""
    from transformers import AutoConfig, AutoTokenizer

    device, dtype = default_device_dtype(device, dtype)
    model_type = open_pretrained(spec, AutoConfig.from_pretrained, what="judge").model_type
    if model_type == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

        model = open_pretrained(
            spec, lambda s: Qwen2_5_VLForConditionalGeneration.from_pretrained(s, dtype=dtype), what="judge"
        )
        image_processor = open_pretrained(
            spec,
            lambda s: Qwen2VLImageProcessorPil.from_pretrained(s, max_pixels=QWEN_VQA_PIXELS),
            what="judge",
        )
        tokenizer = open_pretrained(spec, AutoTokenizer.from_pretrained, what="judge")
        return QwenVLJudge(model.to(device).eval(), tokenizer, image_processor, name=spec)
    if model_type == "blip":
        from transformers import BlipForQuestionAnswering

        model = open_pretrained(
            spec, lambda s: BlipForQuestionAnswering.from_pretrained(s, dtype=dtype), what="judge"
        )
        tokenizer = open_pretrained(spec, AutoTokenizer.from_pretrained, what="judge")
        size = model.config.vision_config.image_size
        return BlipJudge(BlipVqa(model, tokenizer, image_size=size, device=device), name=spec)
    raise ValueError(
        f"judge {spec!r} has model_type {model_type!r}; supported judges: {list(JUDGE_MODEL_TYPES)}"
    )
