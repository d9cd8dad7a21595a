"""Run configuration: nested frozen dataclasses, one per stage of the SILMM loop.

Precedence: defaults <- YAML file <- dotted command-line overrides (`dpo.beta=0.2`, `lora.target_modules=[q_proj]`).
Every value is checked before any work starts; an error names the bad field, its value and the valid options.
Paper symbols (N, beta, gamma) are given in the field comments; `[ours]` marks defaults the paper does not state
(../shared/docs/SILMM.md). This module imports only the standard library and PyYAML.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DIVERSITY_MODES = ("nucleus", "dropdiv", "noise", "none")
FEATURE_TARGETS = ("sampled", "decoded")
QUESTION_MODES = ("self", "whole", "gt")
SCORE_RULES = ("prob_diff", "yes_ratio", "random")
KERNEL_POOLS = ("avg", "max", "none")
KERNEL_DISTANCES = ("cosine", "sqeuclidean")
REFERENCE_MODES = ("cached", "adapter_off")
PROMPT_FILE_MODES = ("replace", "extend")
TRACKERS = ("none", "tensorboard", "wandb")
WHOLE_QUESTION_TEMPLATE = 'does the image show "{prompt}"?'


def _fail(name: str, value: Any, valid: str) -> None:
    raise ValueError(f"config field {name}={value!r} is invalid: {valid}")


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    if value not in options:
        _fail(name, value, f"must be one of {list(options)}")


@dataclass(frozen=True)
class RunConfig:
    name: str = "silmm"  # run folder: <out_dir>/<name>
    out_dir: str = "runs"
    seed: int = 0  # every other seed is derived from this one
    iterations: int = 3  # [paper] 3 iterations
    log_with: str = "none"  # accelerate tracker: none | tensorboard | wandb
    heldout_eval: bool = True  # world models: held-out evaluation after every iteration (and of the base)
    heldout_images: int = 2  # images per held-out prompt in that evaluation (2: about ±0.015 overall; 8: ±0.007)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            _fail("run.name", self.name, "must be a non-empty folder name without '/'")
        if self.iterations < 1:
            _fail("run.iterations", self.iterations, "must be >= 1")
        if self.heldout_images < 1:
            _fail("run.heldout_images", self.heldout_images, "must be >= 1")
        _choice("run.log_with", self.log_with, TRACKERS)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "world-discrete"  # adapter name, see silmm.adapters
    weights: str = ""  # weights folder or hub id; "" = the adapter's default
    device: str = "auto"  # auto | cpu | cuda | cuda:0 ...

    def __post_init__(self):
        if not self.name:
            _fail("model.name", self.name, "must name an adapter")


@dataclass(frozen=True)
class PromptsConfig:
    categories: tuple[str, ...] = (
        "color",
        "shape",
        "texture",
        "spatial2d",
        "spatial3d",
        "numeracy",
        "non_spatial",
        "complex",
    )
    per_category: int = 32  # self-written prompts asked for per category, before deduplication
    file: str = ""  # user prompt file, one prompt per line
    file_mode: str = "extend"  # replace | extend the self-written prompts

    def __post_init__(self):
        if self.per_category < 0:
            _fail("prompts.per_category", self.per_category, "must be >= 0")
        _choice("prompts.file_mode", self.file_mode, PROMPT_FILE_MODES)
        if self.file_mode == "replace" and not self.file:
            _fail("prompts.file_mode", self.file_mode, "'replace' needs prompts.file")
        if not self.file and (self.per_category == 0 or not self.categories):
            _fail(
                "prompts.per_category",
                self.per_category,
                "no prompts: set categories/per_category or prompts.file",
            )


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 8  # N candidates per prompt [ours]
    mode: str = "nucleus"  # nucleus (discrete) | dropdiv (continuous) | noise (ablation) | none
    top_p: float = 0.95  # [ours]
    temperature: float = 1.0  # [ours]
    dropout: float = 0.1  # DropDiv rate [ours]
    layers: int = 2  # DropDiv: last layers whose MLPs get dropout [ours]
    noise_std: float = 0.1  # "Noisy DreamEmb" ablation
    # candidate k = 0 drawn without diversity (greedy / dropout off); NOT in the paper
    include_plain: bool = False
    # continuous models: the candidate features KC-DPO trains towards. "sampled" = those the sampler produced
    # (paper); "decoded" = the features of the image they decode to (the adapter's decoded_features; NOT in the paper)
    feature_target: str = "sampled"
    batch_size: int = 16

    def __post_init__(self):
        if self.n < 2:
            _fail("sampling.n", self.n, "N must be >= 2 (a pair needs two candidates)")
        _choice("sampling.mode", self.mode, DIVERSITY_MODES)
        _choice("sampling.feature_target", self.feature_target, FEATURE_TARGETS)
        if not 0.0 < self.top_p <= 1.0:
            _fail("sampling.top_p", self.top_p, "must lie in (0, 1]")
        if self.temperature <= 0:
            _fail("sampling.temperature", self.temperature, "must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            _fail("sampling.dropout", self.dropout, "must lie in [0, 1)")
        if self.layers < 1:
            _fail("sampling.layers", self.layers, "must be >= 1")
        if self.noise_std < 0:
            _fail("sampling.noise_std", self.noise_std, "must be >= 0")
        if self.batch_size < 1:
            _fail("sampling.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class QuestionsConfig:
    mode: str = "self"  # self (paper) | whole (one whole-prompt question) | gt (world ground truth)
    whole_template: str = WHOLE_QUESTION_TEMPLATE
    batch_size: int = 64  # prompts per write_questions call ("self" mode)

    def __post_init__(self):
        _choice("questions.mode", self.mode, QUESTION_MODES)
        if "{prompt}" not in self.whole_template:
            _fail("questions.whole_template", self.whole_template, "must contain '{prompt}'")
        if self.batch_size < 1:
            _fail("questions.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class FeedbackConfig:
    rule: str = "prob_diff"  # s = mean_i[p(yes|q_i) - p(no|q_i)] (paper) | yes_ratio | random (ablations)
    renormalize: bool = False  # renormalise p over {yes, no} [ours option]
    judge: str = ""  # "" = the model judges itself; else an external judge id or folder; "oracle" (world only)
    batch_size: int = 32

    def __post_init__(self):
        _choice("feedback.rule", self.rule, SCORE_RULES)
        if self.batch_size < 1:
            _fail("feedback.batch_size", self.batch_size, "must be >= 1")


@dataclass(frozen=True)
class PairsConfig:
    per_prompt: int = 1  # k: top-k x bottom-k pairs per prompt; 1 = best vs worst [ours]
    min_gap: float = 0.1  # skip pairs with s_chosen - s_rejected below this [ours]
    replay: int = 0  # NOT in the paper: also train on the pairs of the previous `replay` iterations

    def __post_init__(self):
        if self.per_prompt < 1:
            _fail("pairs.per_prompt", self.per_prompt, "must be >= 1")
        if self.replay < 0:
            _fail("pairs.replay", self.replay, "must be >= 0 (0 = only this iteration's pairs, the paper)")
        if not 0.0 <= self.min_gap <= 2.0:
            _fail("pairs.min_gap", self.min_gap, "scores lie in [-1, 1], so the gap must lie in [0, 2]")


@dataclass(frozen=True)
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | str = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    )  # names, or one regex string

    def __post_init__(self):
        if self.r < 1:
            _fail("lora.r", self.r, "must be >= 1")
        if self.alpha <= 0:
            _fail("lora.alpha", self.alpha, "must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            _fail("lora.dropout", self.dropout, "must lie in [0, 1)")
        if not self.target_modules:
            _fail("lora.target_modules", self.target_modules, "must name at least one module")


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1  # beta of DPO (discrete) [ours]
    gamma: float = 1.0  # gamma of KC-DPO (continuous) [ours]
    kernel_pool: str = "avg"  # KC-DPO kernel: pooling over the query axis
    kernel_distance: str = "cosine"  # KC-DPO kernel: distance
    sft_weight: float = 0.0  # chosen-likelihood regulariser, NOT in the paper (0 = off)

    def __post_init__(self):
        if self.beta <= 0:
            _fail("dpo.beta", self.beta, "beta must be > 0")
        if self.gamma <= 0:
            _fail("dpo.gamma", self.gamma, "gamma must be > 0")
        _choice("dpo.kernel_pool", self.kernel_pool, KERNEL_POOLS)
        _choice("dpo.kernel_distance", self.kernel_distance, KERNEL_DISTANCES)
        if self.sft_weight < 0:
            _fail("dpo.sft_weight", self.sft_weight, "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-5
    epochs: int = 2
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping
    reference: str = "cached"  # cached ref log-probs/features from pair building | adapter_off each step
    mixed_precision: str = "no"  # accelerate: no | fp16 | bf16

    def __post_init__(self):
        if self.lr <= 0:
            _fail("train.lr", self.lr, "must be > 0")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                _fail(f"train.{name}", getattr(self, name), "must be >= 1")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            _fail("train.weight_decay/max_grad_norm", (self.weight_decay, self.max_grad_norm), "must be >= 0")
        _choice("train.reference", self.reference, REFERENCE_MODES)
        _choice("train.mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    questions: QuestionsConfig = field(default_factory=QuestionsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check `value` against the annotation `hint`; YAML lists become tuples, ints are accepted as floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(name, option, value)
            except ValueError:
                continue
        _fail(name, value, f"must be of type {hint}")
    if origin is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            _fail(name, value, "must be a list of strings")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(name, value, "must be true or false")
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-5" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    _fail(name, value, f"must be of type {getattr(hint, '__name__', hint)}")


def _build(cls: type, values: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ValueError(
                f"unknown config key {full!r}; valid keys here: {sorted(f'{prefix}{n}' for n in names)}"
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                _fail(
                    full, value, f"must be a mapping with keys {[f.name for f in dataclasses.fields(hint)]}"
                )
            kwargs[key] = _build(hint, value, f"{full}.")
        else:
            kwargs[key] = _coerce(full, hint, value)
    return cls(**kwargs)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """`["dpo.beta=0.2", "run.name=x"]` -> nested dict; values are parsed as YAML scalars or lists."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value (e.g. dpo.beta=0.2)")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else "")
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """defaults <- YAML file at `path` <- dotted `overrides`; raises ValueError naming the first bad field."""
    tree: dict = {}
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        tree = yaml.safe_load(text) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"config file {path} must hold a mapping of sections, got {type(tree).__name__}")
    tree = _merge(tree, parse_overrides(overrides or []))
    return _build(Config, tree, "")


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists), the form written to runs/<name>/config.yaml."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, tuple | list):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def config_diff(a: Config, b: Config) -> list[str]:
    """Dotted names of the fields that differ between two configs."""
    da, db = config_to_dict(a), config_to_dict(b)
    return [f"{s}.{k}" for s in da for k in da[s] if da[s][k] != db[s][k]]
