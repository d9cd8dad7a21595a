"""Janus-Pro (transformers `JanusForConditionalGeneration`): the discrete half of SILMM on one real model.

One model does all five paper steps: it writes prompts and questions through its chat template (steps 1, 3),
draws 576 VQ image tokens with classifier-free guidance and seeded nucleus sampling (step 2), answers yes/no
about its own images (step 4), and gives teacher-forced image-token log-probs for DPO (step 5).
The image sampler is written out here rather than calling `generate(generation_mode="image")`, because that
draws with torch's global RNG: ours gives each candidate its own `torch.Generator`, so any image is regenerated
from its seed, and it records the conditional log-prob of what it drew, which `policy_outputs` reproduces.
The DPO policy is the *conditional* distribution (no CFG, no temperature), as in public Janus DPO code.
LoRA goes on the language model only; the vision encoder, VQ model and generation head stay frozen.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from PIL import Image

from silmm.adapters.base import Diversity, Sample
from silmm.adapters.hf_common import (
    NO_WORDS,
    QUESTION_INSTRUCTION,
    VQA_TEMPLATE,
    YES_WORDS,
    LoraSlot,
    SeededSampler,
    answer_token_ids,
    default_device_dtype,
    lm_only_targets,
    make_generators,
    open_pretrained,
    parse_prompt,
    parse_questions,
    prompt_instruction,
    sample_top_p,
)

# --- constants (real Janus-Pro values; the adapter reads the actual ones from the loaded config) ---------
HUB_IDS = {
    "janus-pro-1b": "deepseek-community/Janus-Pro-1B",
    "janus-pro-7b": "deepseek-community/Janus-Pro-7B",
}
DEFAULT_HUB_ID = HUB_IDS["janus-pro-1b"]
IMAGE_SIZE = 384  # pixels; 24 x 24 patches of 16
NUM_IMAGE_TOKENS = 576
CODEBOOK_SIZE = 16384
IMAGE_TOKEN_ID = 100581  # <image_placeholder>
GUIDANCE = 5.0  # CFG scale of the Janus-Pro demos; must be > 1 (STACK.md trap 4)
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
PROMPT_MAX_TOKENS = 48
QUESTION_MAX_TOKENS = 96
DISCRETE_MODES = ("nucleus", "none")
BATCH_SIZE = 64  # images per sampling batch (x2 rows for CFG); the per-step cost is mostly fixed overhead


class JanusAdapter:
    """Wraps a `JanusForConditionalGeneration` and its `JanusProcessor` (already on their device)."""

    name = "janus-pro"
    kind = "discrete"

    def __init__(self, model, processor, *, guidance: float = GUIDANCE, batch_size: int = BATCH_SIZE):
        if guidance <= 1.0:
            raise ValueError(f"guidance={guidance} must be > 1 (Janus CFG; use 1.0001 for near-unguided)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.model, self.processor = model.eval(), processor
        self.guidance, self.batch_size = guidance, batch_size
        self.device = next(model.parameters()).device
        tok = processor.tokenizer
        self.tokenizer = tok
        self.bos_id, self.pad_id = tok.bos_token_id, tok.pad_token_id
        self.boi_id = tok.convert_tokens_to_ids(tok.boi_token)
        self.yes_ids, self.no_ids = answer_token_ids(tok, YES_WORDS), answer_token_ids(tok, NO_WORDS)
        self.num_image_tokens = model.config.vision_config.num_image_tokens
        # text generation pads with these; the hub repos set them, models built in code may not
        model.generation_config.bos_token_id = self.bos_id
        model.generation_config.pad_token_id = self.pad_id
        text = model.config.text_config
        self.lora = LoraSlot(
            model,
            {
                "family": self.name,
                "hidden_size": text.hidden_size,
                "num_hidden_layers": text.num_hidden_layers,
                "vocab_size": text.vocab_size,
                "num_image_tokens": self.num_image_tokens,
                "codebook_size": model.config.vq_config.num_embeddings,
            },
        )

    @classmethod
    def from_pretrained(
        cls, id_or_path: str = DEFAULT_HUB_ID, device=None, dtype=None, **kwargs
    ) -> JanusAdapter:
        """Load a transformers-format Janus-Pro repo (hub id or folder): bf16 on GPU, fp32 on CPU."""
        from transformers import JanusForConditionalGeneration, JanusProcessor

        device, dtype = default_device_dtype(device, dtype)
        model = open_pretrained(
            id_or_path,
            lambda s: JanusForConditionalGeneration.from_pretrained(s, dtype=dtype),
            what="Janus-Pro",
        )
        processor = open_pretrained(id_or_path, JanusProcessor.from_pretrained, what="Janus-Pro")
        return cls(model.to(device), processor, **kwargs)

    # --- text skills (paper steps 1 and 3) ---------------------------------------------------------------
    def _chat(self, text: str, *, image: bool = False) -> str:
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )

    @torch.no_grad()
    def _generate_text(self, chats: list[str], max_new_tokens: int, generators=None, top_p=1.0) -> list[str]:
        from transformers import GenerationMixin, LogitsProcessorList

        inputs = self.processor(text=chats, padding=True, return_tensors="pt").to(self.device)
        sampler = LogitsProcessorList(
            [SeededSampler(generators, top_p=top_p, temperature=1.0)] if generators else []
        )
        # GenerationMixin.generate directly: Janus' own text mode drops `logits_processor` (transformers 5.24)
        out = GenerationMixin.generate(
            self.model,
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            guidance_scale=None,
            logits_processor=sampler,
        )
        return self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    def write_prompts(self, category: str, n: int, *, seed: int) -> list[str]:
        chat = self._chat(prompt_instruction(category))
        texts: list[str] = []
        for start in range(0, n, self.batch_size):
            rows = range(start, min(n, start + self.batch_size))
            gens = make_generators([seed * 1_000_003 + i for i in rows], self.device)
            texts += self._generate_text([chat] * len(rows), PROMPT_MAX_TOKENS, gens, top_p=0.95)
        return [parse_prompt(t) for t in texts]

    def write_questions(self, prompts: list[str]) -> list[list[str]]:
        chats = [self._chat(QUESTION_INSTRUCTION.format(prompt=p)) for p in prompts]
        texts: list[str] = []
        for start in range(0, len(chats), self.batch_size):
            texts += self._generate_text(chats[start : start + self.batch_size], QUESTION_MAX_TOKENS)
        return [parse_questions(t) for t in texts]

    # --- image sampling (paper step 2) -------------------------------------------------------------------
    def _image_prompt_ids(self, prompts: list[str]) -> dict:
        """Left-padded chat-template prompts ending in <begin_of_image>."""
        chats = [self._chat(p) for p in prompts]
        return self.processor(text=chats, generation_mode="image", padding=True, return_tensors="pt").to(
            self.device
        )

    @torch.no_grad()
    def _draw(
        self, prompts: list[str], seeds: list[int], diversity: Diversity
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens `(b, T)` for b (prompt, seed) pairs, and their conditional log-probs `(b,)`.

        Prompts of different lengths share a batch (left padding with explicit positions, like `generate`):
        on an H200 a step cost the same for the 1B and the 7B model (overhead-bound), so wide batches pay off.
        """
        from transformers import DynamicCache

        b, lm, head = len(seeds), self.model.model.language_model, self.model.model.generation_head
        inputs = self._image_prompt_ids(prompts)
        ids, mask = inputs["input_ids"], inputs["attention_mask"]  # (b, P), left padded
        keep = (ids == self.bos_id) | (ids == self.boi_id)
        uncond = torch.where(keep, ids, torch.full_like(ids, self.pad_id))  # CFG: prompt replaced by pad
        embeds = self.model.get_input_embeddings()(torch.cat([ids, uncond]))  # (2b, P, hidden)
        mask = torch.cat([mask, mask])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = make_generators(seeds, self.device)
        tokens = torch.zeros(b, self.num_image_tokens, dtype=torch.long, device=self.device)
        cond_logps = torch.zeros(b, device=self.device)
        cache = DynamicCache(config=self.model.config.text_config)
        for t in range(self.num_image_tokens):
            out = lm(
                inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
            )
            logits = head(out.last_hidden_state[:, -1]).float()  # (2b, codebook)
            cond, uncond_logits = logits[:b], logits[b:]
            guided = uncond_logits + self.guidance * (cond - uncond_logits)
            if diversity.mode == "none":
                nxt = guided.argmax(-1)
            else:
                nxt = sample_top_p(guided, gens, top_p=diversity.top_p, temperature=diversity.temperature)
            cond_logps += cond.log_softmax(-1).gather(-1, nxt[:, None]).squeeze(-1)
            tokens[:, t] = nxt
            embeds = self.model.prepare_embeddings_for_image_generation(torch.cat([nxt, nxt])[:, None])
            mask = torch.cat([mask, mask.new_ones(2 * b, 1)], 1)
            positions = positions[:, -1:] + 1
        return tokens, cond_logps

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> list[Image.Image]:
        """Image tokens `(B, T)` -> PIL images via the VQ decoder (output roughly in [-1, 1]).

        One image at a time: batched convolutions round differently, and a seed must give the same pixels.
        """
        images = []
        for row in tokens:
            pixels = self.model.decode_image_tokens(row[None]).float()[0]  # (H, W, 3)
            arr = ((pixels + 1) * 127.5).clamp(0, 255).round().to(torch.uint8).cpu().numpy()
            images.append(Image.fromarray(np.ascontiguousarray(arr)))
        return images

    def sample(self, prompts: list[str], seeds: list[int], diversity: Diversity) -> list[Sample]:
        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; pass one seed per prompt")
        if diversity.mode not in DISCRETE_MODES:
            raise ValueError(
                f"diversity mode {diversity.mode!r} does not apply to Janus; use one of {DISCRETE_MODES}"
            )
        order = sorted(range(len(prompts)), key=lambda i: prompts[i])  # equal prompts side by side
        out: list[Sample | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            tokens, logps = self._draw([prompts[i] for i in chunk], [seeds[i] for i in chunk], diversity)
            for j, (i, image) in enumerate(zip(chunk, self.decode(tokens))):
                extra = {"cond_logp": float(logps[j]), "guidance": self.guidance}
                out[i] = Sample(
                    prompt=prompts[i], seed=seeds[i], image=image, ids=tokens[j].cpu(), extra=extra
                )
        return out

    # --- self-feedback (paper step 4) --------------------------------------------------------------------
    @torch.no_grad()
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) != len(questions):
            raise ValueError(f"got {len(images)} images but {len(questions)} questions; pass one per image")
        p_yes, p_no = [], []
        for start in range(0, len(images), self.batch_size):
            qs = questions[start : start + self.batch_size]
            chats = [self._chat(VQA_TEMPLATE.format(question=q), image=True) for q in qs]
            inputs = self.processor(
                text=chats, images=images[start : start + self.batch_size], padding=True, return_tensors="pt"
            ).to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            probs = self.model(**inputs, logits_to_keep=1).logits[:, -1].float().softmax(-1)
            p_yes.append(probs[:, self.yes_ids].sum(-1).cpu())
            p_no.append(probs[:, self.no_ids].sum(-1).cpu())
        return torch.cat(p_yes), torch.cat(p_no)

    # --- preference update (paper step 5) ----------------------------------------------------------------
    def policy_outputs(self, prompts: list[str], samples: list[Sample]) -> torch.Tensor:
        """Summed log pi(ids | prompt) `(B,)` in fp32, teacher forced through the generation head."""
        inputs = self._image_prompt_ids(prompts)
        ids = torch.stack([s.ids for s in samples]).to(self.device)  # (B, T)
        prompt_embeds = self.model.get_input_embeddings()(inputs["input_ids"])
        embeds = torch.cat([prompt_embeds, self.model.prepare_embeddings_for_image_generation(ids)], 1)
        mask = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
        hidden = self.model.model.language_model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions
        ).last_hidden_state
        n_prompt = inputs["input_ids"].shape[1]
        logits = self.model.model.generation_head(hidden[:, n_prompt - 1 : -1]).float()  # (B, T, codebook)
        return logits.log_softmax(-1).gather(-1, ids[..., None]).squeeze(-1).sum(-1)

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
