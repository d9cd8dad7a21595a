"""CLIP similarity, the T2I-CompBench non-spatial scorer (and the action part of complex 3-in-1).

Official rule (BENCHMARKS.md 1.7): OpenAI CLIP ViT-B/32 (`openai/clip-vit-base-patch32` holds the same weights),
score = raw cosine between the L2-normalised image and text embeddings: no x100, no 2.5 scaling, no clamp.
Preprocessing is the checkpoint's own CLIP image processor (224 bicubic resize + centre crop). Texts longer than
77 tokens are truncated (the official `clip.tokenize` would raise instead).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image


class ClipScorer:
    """Raw cosine similarity of (image, text) pairs, batched."""

    def __init__(self, model, tokenizer, image_processor, *, device: str = "cpu"):
        self.model, self.tokenizer, self.image_processor = model.to(device).eval(), tokenizer, image_processor
        self.device, self.name = device, getattr(model, "name_or_path", "clip")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu") -> ClipScorer:
        from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

        from eval.common import load_pretrained

        def load(path):
            return (CLIPModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                    CLIPImageProcessorPil.from_pretrained(path))  # fmt: skip

        model, tok, proc = load_pretrained(load, name_or_path, role="CLIP scorer", option="--clip")
        scorer = cls(model, tok, proc, device=device)
        scorer.name = name_or_path
        return scorer

    def cosine(self, images: list[Image.Image], texts: list[str]) -> torch.Tensor:
        """cos(image_i, text_i) for each pair, `(B,)`."""
        import torch

        pix = self.image_processor(
            images=[im.convert("RGB") for im in images], return_tensors="pt"
        ).pixel_values
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        with torch.no_grad():
            img = self.model.get_image_features(pixel_values=pix.to(self.device)).pooler_output
            txt = self.model.get_text_features(input_ids=tok.input_ids.to(self.device),
                                               attention_mask=tok.attention_mask.to(self.device)).pooler_output  # fmt: skip
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return (img * txt).sum(-1).float().cpu()
