"""The one adapter protocol: everything the SILMM loop needs from a unified multimodal model.

A model that can both draw and see is wrapped in one adapter per model family (`silmm/adapters/<family>.py`).
Generic code (prompts, sampling, questions, feedback, pairs, train, loop, eval) imports only this file.

- `kind`: "discrete" (image tokens, trained with DPO) or "continuous" (image features, trained with KC-DPO).
- text skills: `write_prompts` (paper step 1) and `write_questions` (step 3).
- `sample` (step 2): one image per (prompt, seed), with the token ids or features that produced it, so any
  candidate can be regenerated from its seed.
- `answer_yes_no` (step 4): p("yes"), p("no") at the first answer position, softmax over the full vocabulary.
- `policy_outputs` (step 5): discrete -> summed image-token log-probs `(B,)` of given ids under the current
  policy (teacher forced); continuous -> the policy's features `(B, Q, D)` for the prompts, dropout off.
- optional, continuous: `decoded_features(samples)` -> `(B, Q, D)` features of the images the samples decode to
  (`sampling.feature_target="decoded"`).
- `reference()`: a context in which the LoRA is switched off, i.e. the model at the start of the iteration.
- LoRA: `add_lora`, `save_adapter`, `load_adapter`, `merge_adapter`; `model` is the torch module to train.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from PIL import Image

KINDS = ("discrete", "continuous")
DIVERSITY_MODES = ("nucleus", "dropdiv", "noise", "none")


@dataclass(frozen=True)
class Diversity:
    """How candidates are made different from each other (paper step 2).

    nucleus: top-p sampling of image tokens (discrete models).
    dropdiv: dropout switched on in the MLPs of the last `layers` decoder layers, rate `dropout` (continuous).
    noise: Gaussian noise of std `noise_std` added to the features (the paper's "Noisy DreamEmb" ablation).
    none: deterministic (greedy / dropout off).
    """

    mode: str = "nucleus"
    top_p: float = 0.95
    temperature: float = 1.0
    dropout: float = 0.1
    layers: int = 2
    noise_std: float = 0.1

    def __post_init__(self):
        if self.mode not in DIVERSITY_MODES:
            raise ValueError(f"diversity mode {self.mode!r} is not one of {list(DIVERSITY_MODES)}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        if self.layers < 1:
            raise ValueError(f"layers={self.layers} must be >= 1")
        if self.noise_std < 0:
            raise ValueError(f"noise_std={self.noise_std} must be >= 0")


@dataclass(frozen=True)
class Sample:
    """One drawn candidate. `ids` (T,) for discrete models, `feats` (Q, D) for continuous ones (CPU tensors)."""

    prompt: str
    seed: int
    image: Image.Image
    ids: torch.Tensor | None = None
    feats: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Adapter(Protocol):
    name: str
    kind: Literal["discrete", "continuous"]
    model: torch.nn.Module  # the module whose LoRA parameters are trained
    device: torch.device

    def write_prompts(self, category: str, n: int, *, seed: int) -> list[str]:
        """Self-written compositional prompts for one category (may contain duplicates; callers dedupe)."""

    def write_questions(self, prompts: list[str]) -> list[list[str]]:
        """Decompositional self-questioning: one list of yes/no questions per prompt (greedy decoding)."""

    def sample(self, prompts: list[str], seeds: list[int], diversity: Diversity) -> list[Sample]:
        """One image per (prompt, seed) pair; the same pair and diversity always give the same sample."""

    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p(yes), p(no) for each (image, question) pair, each `(B,)`; p_yes + p_no <= 1."""

    def policy_outputs(self, prompts: list[str], samples: list[Sample]) -> torch.Tensor:
        """Discrete: summed log pi(ids | prompt) `(B,)`. Continuous: features H `(B, Q, D)`, dropout off."""

    def reference(self) -> contextlib.AbstractContextManager:
        """Context in which the model is the reference policy (LoRA disabled)."""

    def add_lora(self, *, r: int, alpha: int, dropout: float, target_modules: list[str] | str) -> None:
        """Attach a fresh trainable LoRA; every other parameter is frozen."""

    def save_adapter(self, path: str) -> None:
        """Write the current LoRA (peft format) to `path`."""

    def load_adapter(self, path: str) -> None:
        """Attach a LoRA saved by `save_adapter`; raises if it was made for another model."""

    def merge_adapter(self) -> None:
        """Fold the LoRA into the base weights, so the improved model becomes the next reference."""
