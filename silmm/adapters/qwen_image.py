"""Qwen-Image (diffusers `QwenImagePipeline`): the continuous half of SILMM, DreamLLM's shape at modern scale.

The pipeline's text encoder is a full Qwen2.5-VL whose last hidden states H condition an image transformer.
H is the continuous feature SILMM improves: the same Qwen2.5-VL writes prompts and questions (paper steps 1, 3),
DropDiv switches dropout on in the MLPs of its last decoder layers to draw different H per seed (step 2), the
images come from passing those H as `prompt_embeds`, the same Qwen2.5-VL answers yes/no about them with the image
in its chat template (step 4), and KC-DPO trains a LoRA on its language model from pooled H (step 5).
The image transformer and VAE stay frozen: only what the LMM says changes, as in the paper.
Features are padded with zeros or truncated to `FEATURE_TOKENS` rows, so `policy_outputs` is `(B, Q, D)` with a
fixed Q; the true length is kept in `Sample.extra["length"]` and only those rows condition the image.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from PIL import Image

from silmm.adapters.base import Diversity, Sample
from silmm.adapters.hf_common import (
    QUESTION_INSTRUCTION,
    LoraSlot,
    SeededSampler,
    default_device_dtype,
    lm_only_targets,
    make_generators,
    open_pretrained,
    parse_prompt,
    parse_questions,
    prompt_instruction,
)
from silmm.adapters.judges import QWEN_VQA_PIXELS, QwenVLJudge

# --- constants ------------------------------------------------------------------------------------------
HUB_ID = "Qwen/Qwen-Image"
TEXT_HIDDEN = 3584  # Qwen2.5-VL-7B hidden size = D of the features
FEATURE_TOKENS = (
    128  # Q: the user prompt plus "<|im_end|>\n<|im_start|>assistant\n" fits for benchmark prompts
)
IMAGE_SIZE = (
    512  # px; the model's default is 1024 (multiples of 16), 512 keeps 8 candidates per prompt affordable
)
STEPS = 30
TRUE_CFG = 4.0  # the pipeline's default; real CFG runs only with a negative prompt
NEGATIVE_PROMPT = " "
CHAT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
PROMPT_MAX_TOKENS = 48
QUESTION_MAX_TOKENS = 96
CONTINUOUS_MODES = ("dropdiv", "noise", "none")
DROPOUT_SEED_OFFSET = 1 << 32  # dropout masks and diffusion noise of one seed use different streams


class QwenImageAdapter:
    """Wraps a `QwenImagePipeline` (already on its device); `model` is its Qwen2.5-VL text encoder."""

    name = "qwen-image"
    kind = "continuous"

    def __init__(
        self,
        pipe,
        *,
        height: int = IMAGE_SIZE,
        width: int = IMAGE_SIZE,
        steps: int = STEPS,
        true_cfg: float = TRUE_CFG,
        negative_prompt: str = NEGATIVE_PROMPT,
        feature_tokens: int = FEATURE_TOKENS,
        vqa_pixels: int = QWEN_VQA_PIXELS,
        batch_size: int = 4,
    ):
        from transformers import Qwen2VLImageProcessorPil

        multiple = pipe.vae_scale_factor * 2
        if height % multiple or width % multiple:
            raise ValueError(
                f"height={height} and width={width} must be multiples of {multiple} for this pipeline"
            )
        if feature_tokens < 1 or batch_size < 1 or steps < 1:
            raise ValueError(
                f"feature_tokens={feature_tokens}, batch_size={batch_size}, steps={steps} must be >= 1"
            )
        self.pipe, self.model = pipe, pipe.text_encoder.eval()
        self.height, self.width, self.steps, self.true_cfg = height, width, steps, true_cfg
        self.negative_prompt, self.feature_tokens, self.batch_size = (
            negative_prompt,
            feature_tokens,
            batch_size,
        )
        self.device = next(self.model.parameters()).device
        self.tokenizer = pipe.tokenizer
        pipe.transformer.requires_grad_(False).eval()
        pipe.vae.requires_grad_(False).eval()
        pipe.set_progress_bar_config(disable=True)
        image_processor = Qwen2VLImageProcessorPil(min_pixels=min(56 * 56, vqa_pixels), max_pixels=vqa_pixels)
        self.vqa = QwenVLJudge(
            self.model, self.tokenizer, image_processor, name="self", batch_size=batch_size
        )
        self.layers = self.model.model.language_model.layers
        text = self.model.config.text_config
        self.lora = LoraSlot(
            self.model,
            {
                "family": self.name,
                "hidden_size": text.hidden_size,
                "num_hidden_layers": text.num_hidden_layers,
                "vocab_size": text.vocab_size,
                "joint_attention_dim": pipe.transformer.config.joint_attention_dim,
            },
        )

    @classmethod
    def from_pretrained(cls, id_or_path: str = HUB_ID, device=None, dtype=None, **kwargs) -> QwenImageAdapter:
        """Load a diffusers Qwen-Image repo (hub id or folder): bf16 on GPU, fp32 on CPU."""
        from diffusers import QwenImagePipeline

        device, dtype = default_device_dtype(device, dtype)
        pipe = open_pretrained(
            id_or_path, lambda s: QwenImagePipeline.from_pretrained(s, dtype=dtype), what="Qwen-Image"
        )
        return cls(pipe.to(device), **kwargs)

    # --- text skills (paper steps 1 and 3) ---------------------------------------------------------------
    @torch.no_grad()
    def _generate_text(self, texts: list[str], max_new_tokens: int, generators=None, top_p=1.0) -> list[str]:
        from transformers import LogitsProcessorList

        enc = self.tokenizer(
            [CHAT.format(t) for t in texts], padding=True, padding_side="left", return_tensors="pt"
        )
        enc = enc.to(self.device)
        sampler = LogitsProcessorList(
            [SeededSampler(generators, top_p=top_p, temperature=1.0)] if generators else []
        )
        out = self.model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            logits_processor=sampler,
        )
        return self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def write_prompts(self, category: str, n: int, *, seed: int) -> list[str]:
        instruction = prompt_instruction(category)
        texts: list[str] = []
        for start in range(0, n, self.batch_size):
            rows = range(start, min(n, start + self.batch_size))
            gens = make_generators([seed * 1_000_003 + i for i in rows], self.device)
            texts += self._generate_text([instruction] * len(rows), PROMPT_MAX_TOKENS, gens, top_p=0.95)
        return [parse_prompt(t) for t in texts]

    def write_questions(self, prompts: list[str]) -> list[list[str]]:
        texts: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [QUESTION_INSTRUCTION.format(prompt=p) for p in prompts[start : start + self.batch_size]]
            texts += self._generate_text(chunk, QUESTION_MAX_TOKENS)
        return [parse_questions(t) for t in texts]

    # --- features H and DropDiv (paper step 2) -----------------------------------------------------------
    @contextlib.contextmanager
    def dropdiv(self, p: float, layers: int, generators: list[torch.Generator]):
        """Dropout (rate p, one generator per batch row) on the MLP outputs of the last `layers` decoder layers."""
        if not 1 <= layers <= len(self.layers):
            raise ValueError(
                f"dropdiv layers={layers} must lie in [1, {len(self.layers)}] for this text encoder"
            )

        def hook(module, args, out):
            if out.shape[0] != len(generators):
                raise ValueError(f"batch of {out.shape[0]} rows but {len(generators)} dropout generators")
            keep = torch.stack(
                [torch.rand(out.shape[1:], generator=g, device=out.device) >= p for g in generators]
            )
            return out * keep.to(out.dtype) / (1.0 - p)

        handles = [layer.mlp.register_forward_hook(hook) for layer in self.layers[-layers:]]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's prompt embeddings `(B, L, D)` and mask `(B, L)` (never None)."""
        embeds, mask = self.pipe.encode_prompt(prompts, device=self.device)
        if mask is None:  # encode_prompt drops the mask when every token is valid (STACK.md Addendum 1a)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return embeds, mask

    def _fixed(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Zero padded rows, then pad/truncate the token axis to Q: `(B, Q, D)` in fp32."""
        feats = (embeds * mask[..., None]).float()[:, : self.feature_tokens]
        return torch.nn.functional.pad(feats, (0, 0, 0, self.feature_tokens - feats.shape[1]))

    @torch.no_grad()
    def _features(
        self, prompt: str, seeds: list[int], diversity: Diversity
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features `(b, L, D)` for one prompt and b seeds, with their mask `(b, L)`."""
        b = len(seeds)
        if diversity.mode == "dropdiv":
            gens = make_generators([s + DROPOUT_SEED_OFFSET for s in seeds], self.device)
            with self.dropdiv(diversity.dropout, diversity.layers, gens):
                return self._encode([prompt] * b)
        embeds, mask = self._encode([prompt])
        embeds, mask = embeds.expand(b, -1, -1), mask.expand(b, -1)
        if diversity.mode == "noise":
            gens = make_generators([s + DROPOUT_SEED_OFFSET for s in seeds], self.device)
            noise = torch.stack(
                [torch.randn(embeds.shape[1:], generator=g, device=self.device) for g in gens]
            )
            embeds = embeds + diversity.noise_std * noise.to(embeds.dtype) * mask[..., None]
        return embeds, mask

    @torch.no_grad()
    def render(self, embeds: torch.Tensor, mask: torch.Tensor, seeds: list[int]) -> list[Image.Image]:
        """Images from features (the pipeline's denoising, one latent-noise generator per seed)."""
        b = embeds.shape[0]
        neg, neg_mask = self._encode([self.negative_prompt])
        return self.pipe(
            prompt_embeds=embeds,
            prompt_embeds_mask=mask,
            negative_prompt_embeds=neg.expand(b, -1, -1),
            negative_prompt_embeds_mask=neg_mask.expand(b, -1),
            true_cfg_scale=self.true_cfg,
            height=self.height,
            width=self.width,
            num_inference_steps=self.steps,
            generator=make_generators(seeds, self.device),
        ).images

    def sample(self, prompts: list[str], seeds: list[int], diversity: Diversity) -> list[Sample]:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
        if diversity.mode not in CONTINUOUS_MODES:
            raise ValueError(
                f"diversity mode {diversity.mode!r} does not apply to Qwen-Image; use one of {CONTINUOUS_MODES}"
            )
        by_prompt: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            by_prompt[p].append(i)
        out: list[Sample | None] = [None] * len(prompts)
        for prompt, rows in by_prompt.items():  # one prompt per batch: no padding, so a seed's features never
            for start in range(0, len(rows), self.batch_size):  # depend on what it was batched with
                chunk = rows[start : start + self.batch_size]
                chunk_seeds = [seeds[i] for i in chunk]
                embeds, mask = self._features(prompt, chunk_seeds, diversity)
                feats = self._fixed(embeds, mask).cpu()
                length = int(mask[0].sum())
                for j, (i, image) in enumerate(zip(chunk, self.render(embeds, mask, chunk_seeds))):
                    extra = {"length": length, "diversity": diversity.mode}
                    out[i] = Sample(prompt=prompt, seed=seeds[i], image=image, feats=feats[j], extra=extra)
        return out

    # --- self-feedback (paper step 4) --------------------------------------------------------------------
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vqa.answer_yes_no(images, questions)

    # --- preference update (paper step 5) ----------------------------------------------------------------
    def policy_outputs(self, prompts: list[str], samples: list[Sample]) -> torch.Tensor:
        """The policy's features H `(B, Q, D)` in fp32 for `prompts`, dropout off, differentiable in the LoRA."""
        return self._fixed(*self._encode(prompts))

    def reference(self) -> contextlib.AbstractContextManager:
        return self.lora.disabled()

    def add_lora(
        self, *, r: int, alpha: int, dropout: float, target_modules: list[str] | str = LORA_TARGETS
    ) -> None:
        from peft import LoraConfig

        targets = lm_only_targets(target_modules)
        self.lora.add(LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets))

    def save_adapter(self, path: str) -> None:
        self.lora.save(path)

    def load_adapter(self, path: str) -> None:
        self.lora.load(path)

    def merge_adapter(self) -> None:
        self.lora.merge()
