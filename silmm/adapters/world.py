"""Adapter for the built-in world models (`world-discrete`, `world-continuous`), trained by silmm.world.train.

Everything the loop needs runs on a laptop CPU: prompts and questions are decoded from the model's own text skill,
images from its image codes (discrete: nucleus sampling) or features (continuous: one forward with DropDiv or
feature noise, then the fixed nearest-code decoder), and self-VQA reads the image back through the pixel parser
into the separate understanding embeddings. Randomness comes only from per-sample seeds.
"""

from __future__ import annotations

import contextlib
import json
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from silmm.adapters.base import Diversity, Sample
from silmm.world.data import see_sequence
from silmm.world.grammar import ALL_CATEGORIES, normalize
from silmm.world.model import (
    DRAW0,
    DRAW_TOKENS,
    VOCAB,
    WORDS,
    WorldLM,
    code_features,
    features_to_codes,
    generate_tokens,
    left_pad,
)
from silmm.world.tokenizer import N_CELLS, decode, encode

ASSETS = Path(__file__).resolve().parents[2] / "assets"
MAX_PROMPT_TOKENS = 40
MAX_QUESTION_TOKENS = 160
ADAPTER_META = "silmm_adapter.json"
_ID = {t: i for i, t in enumerate(VOCAB)}


def _mask(tokens: list[str]) -> torch.Tensor:
    m = torch.zeros(len(VOCAB), dtype=torch.bool)
    m[[_ID[t] for t in tokens]] = True
    return m


_TEXT_ALLOWED = _mask([*WORDS, "<eos>"])
_DRAW_ALLOWED = _mask(DRAW_TOKENS)


@lru_cache(maxsize=8192)
def _encode_bytes(data: bytes, size: tuple[int, int]) -> tuple[int, ...]:
    return tuple(encode(Image.frombytes("RGB", size, data)))


def _see_codes(image: Image.Image) -> tuple[int, ...]:
    """The pixel parser's codes for an image, cached by content (the loop asks many questions per image)."""
    rgb = image.convert("RGB")
    return _encode_bytes(rgb.tobytes(), rgb.size)


class WorldAdapter:
    def __init__(
        self, model: WorldLM, name: str, device: str | torch.device = "cpu", base_path: str | None = None
    ):
        self.base = model.to(device).eval()
        self.model: torch.nn.Module = self.base
        self.name = name
        self.kind = model.config.world_kind
        self.device = torch.device(device)
        self.base_path = base_path

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | None = None, name: str | None = None
    ) -> WorldAdapter:
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
            raise FileNotFoundError(
                f"world model folder {str(path)!r} lacks config.json or model.safetensors; "
                f"train one with `python -m silmm.world.train --kind discrete --out {path}`"
            )
        try:
            model = WorldLM.from_pretrained(path)
        except Exception as err:  # corrupt weights or config: say which folder
            raise ValueError(f"cannot load the world model in {str(path)!r}: {err}") from err
        if getattr(model.config, "world_kind", None) not in ("discrete", "continuous"):
            raise ValueError(f"{str(path)!r} is not a world model (config.world_kind missing)")
        return cls(model, name or f"world-{model.config.world_kind}", device or "cpu", str(path))

    # -- text skills ------------------------------------------------------------------------------------------
    def _text(self, rows: list[list[int]], n_new: int, seeds: list[int] | None) -> list[str]:
        out = generate_tokens(self.base, rows, n_new, _TEXT_ALLOWED, seeds=seeds, stop_id=_ID["<eos>"])
        texts = []
        for row in out.tolist():
            words = [VOCAB[i] for i in row]
            texts.append(" ".join(words[: words.index("<eos>")] if "<eos>" in words else words))
        return texts

    def write_prompts(self, category: str, n: int, *, seed: int) -> list[str]:
        if category not in ALL_CATEGORIES:
            raise ValueError(f"category {category!r} is not one of {list(ALL_CATEGORIES)}")
        row = [_ID["<bos>"], _ID["<write>"], _ID[f"<c:{category}>"]]
        return self._text([row] * n, MAX_PROMPT_TOKENS, [seed * 100_003 + i for i in range(n)])

    def write_questions(self, prompts: list[str]) -> list[list[str]]:
        rows = [[_ID["<bos>"], _ID["<ask>"], *self._word_ids(p), _ID["<sep>"]] for p in prompts]
        out = []
        for text in self._text(rows, MAX_QUESTION_TOKENS, None):
            qs = [q.strip().replace(" ?", "?") for q in text.split(";")]
            out.append([q for q in qs if q.endswith("?") and len(q) > 1])
        return out

    @staticmethod
    def _word_ids(text: str) -> list[int]:
        return [_ID.get(w, _ID["<unk>"]) for w in normalize(text.replace("?", " ?"))]

    # -- drawing ----------------------------------------------------------------------------------------------
    def _draw_rows(self, prompts: list[str]) -> list[list[int]]:
        return [[_ID["<bos>"], _ID["<draw>"], *self._word_ids(p), _ID["<img>"]] for p in prompts]

    def sample(self, prompts: list[str], seeds: list[int], diversity: Diversity) -> list[Sample]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if self.kind == "discrete":
            greedy = diversity.mode == "none"
            ids = (
                generate_tokens(
                    self.base,
                    self._draw_rows(prompts),
                    N_CELLS,
                    _DRAW_ALLOWED,
                    seeds=None if greedy else seeds,
                    top_p=diversity.top_p,
                    temperature=diversity.temperature,
                )
                - DRAW0
            )  # (B, 36) codes
            return [Sample(p, s, decode(c.tolist()), ids=c) for p, s, c in zip(prompts, seeds, ids)]
        feats = self._features(prompts, seeds, diversity)  # (B, 36, D)
        codes = features_to_codes(feats)
        return [Sample(p, s, decode(c.tolist()), feats=f) for p, s, c, f in zip(prompts, seeds, codes, feats)]

    def _features(self, prompts: list[str], seeds: list[int] | None, diversity: Diversity) -> torch.Tensor:
        rows = [r + [_ID[f"<q{i}>"] for i in range(N_CELLS)] for r in self._draw_rows(prompts)]
        width = max(map(len, rows))
        ids = torch.tensor([r + [_ID["<pad>"]] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        qpos = torch.tensor(
            [[len(r) - N_CELLS + i for i in range(N_CELLS)] for r in rows], device=self.device
        )
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds] if seeds is not None else None
        ctx = (
            self.dropdiv(diversity.dropout, diversity.layers, gens)
            if diversity.mode == "dropdiv"
            else contextlib.nullcontext()
        )
        with torch.no_grad(), ctx:
            feats = self.base.features(ids, mask, qpos).float().cpu()
        if diversity.mode == "noise":
            feats = feats + diversity.noise_std * torch.stack(
                [torch.randn(feats.shape[1:], generator=g) for g in gens]
            )
        return feats

    @contextlib.contextmanager
    def dropdiv(self, p: float, n_layers: int, gens: list[torch.Generator]):
        """Dropout on the outputs of the last `n_layers` MLPs, one seeded mask per sample (DropDiv)."""
        layers = self.base.model.layers
        if not 1 <= n_layers <= len(layers):
            raise ValueError(f"dropdiv layers={n_layers} must lie in [1, {len(layers)}]")

        def hook(_module, _inputs, out):
            keep = torch.stack([(torch.rand(out.shape[1:], generator=g) >= p) for g in gens]).to(out.device)
            return out * keep / (1.0 - p)

        handles = [layer.mlp.register_forward_hook(hook) for layer in layers[-n_layers:]]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def decoded_features(self, samples: list[Sample]) -> torch.Tensor:
        """(B, 36, D) features of the images that continuous samples decode to: their codes' codebook vectors."""
        return code_features()[features_to_codes(torch.stack([s.feats for s in samples]))]

    # -- seeing -----------------------------------------------------------------------------------------------
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str], *, share_prefix: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p(yes), p(no) at `<ans>` of `see_sequence(image, question)` for each pair. The sequence puts the question
        first, so with `share_prefix` each distinct question's prefix (`<bos> <see> question <img>`) runs once per
        chunk and its KV cache serves every image asked it; the 38 image-and-answer tokens run per pair. The
        answers equal whole sequences' to float rounding (tested); `python -m silmm.bench` times both."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        rows = [[_ID.get(t, _ID["<unk>"]) for t in see_sequence(_see_codes(im), q)] for im, q in zip(images, questions)]
        p_yes, p_no = [], []
        for i in range(0, len(rows), 256):
            chunk = rows[i : i + 256]
            with torch.no_grad():
                logits = self._shared_prefix(chunk) if share_prefix else self._whole(chunk)
            probs = logits.float().softmax(-1)
            p_yes.append(probs[:, _ID["yes"]].cpu())
            p_no.append(probs[:, _ID["no"]].cpu())
        return torch.cat(p_yes), torch.cat(p_no)

    def _whole(self, rows: list[list[int]]) -> torch.Tensor:
        """(B, V) last-position logits of left-padded whole sequences."""
        ids, mask, pos = left_pad(rows, _ID["<pad>"])
        ids, mask, pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        return self.base(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]

    def _shared_prefix(self, rows: list[list[int]]) -> torch.Tensor:
        """(B, V) the same logits, each distinct prefix (everything before the 38-token image suffix) run once."""
        n = N_CELLS + 2  # image codes, </see>, <ans>
        prefixes: dict[tuple[int, ...], int] = {}
        owner = torch.tensor([prefixes.setdefault(tuple(r[:-n]), len(prefixes)) for r in rows], device=self.device)
        ids, mask, pos = (t.to(self.device) for t in left_pad([list(p) for p in prefixes], _ID["<pad>"]))
        cache = self.base(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1).cache
        cache.reorder_cache(owner)  # one cache row per pair
        suffix = torch.tensor([r[-n:] for r in rows], device=self.device)
        return self.base(
            input_ids=suffix,
            attention_mask=torch.cat([mask[owner], torch.ones_like(suffix)], 1),
            position_ids=(pos[owner, -1:] + 1) + torch.arange(n, device=self.device),
            cache=cache,
            logits_to_keep=1,
        ).logits[:, -1]

    # -- training ---------------------------------------------------------------------------------------------
    def policy_outputs(self, prompts: list[str], samples: list[Sample]) -> torch.Tensor:
        if self.kind == "continuous":
            return self._features_grad(prompts)
        rows = [r + [DRAW0 + int(c) for c in s.ids] for r, s in zip(self._draw_rows(prompts), samples)]
        width = max(map(len, rows))
        ids = torch.tensor([[_ID["<pad>"]] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.base(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -N_CELLS - 1 : -1]
        logps = F.log_softmax(logits[..., DRAW0 : DRAW0 + len(DRAW_TOKENS)].float(), -1)  # (B, 36, codes)
        target = ids[:, -N_CELLS:] - DRAW0
        return logps.gather(-1, target[..., None]).squeeze(-1).sum(-1)  # (B,)

    def _features_grad(self, prompts: list[str]) -> torch.Tensor:
        rows = [r + [_ID[f"<q{i}>"] for i in range(N_CELLS)] for r in self._draw_rows(prompts)]
        width = max(map(len, rows))
        ids = torch.tensor([r + [_ID["<pad>"]] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        qpos = torch.tensor(
            [[len(r) - N_CELLS + i for i in range(N_CELLS)] for r in rows], device=self.device
        )
        return self.base.features(ids, mask, qpos)  # (B, 36, D)

    def reference(self) -> contextlib.AbstractContextManager:
        return self.model.disable_adapter() if self.model is not self.base else contextlib.nullcontext()

    def add_lora(self, *, r: int, alpha: int, dropout: float, target_modules: list[str] | str) -> None:
        from peft import LoraConfig, get_peft_model

        if self.model is not self.base:
            raise RuntimeError("a LoRA is already attached; merge_adapter() first")
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.model = get_peft_model(self.base, cfg)

    def save_adapter(self, path: str) -> None:
        if self.model is self.base:
            raise RuntimeError("no LoRA attached: call add_lora() or load_adapter() first")
        self.model.save_pretrained(path)
        meta = {
            "adapter": self.name,
            "kind": self.kind,
            "vocab_size": self.base.config.vocab_size,
            "hidden_size": self.base.config.hidden_size,
            "num_hidden_layers": self.base.config.num_hidden_layers,
        }
        (Path(path) / ADAPTER_META).write_text(json.dumps(meta, indent=2) + "\n")

    def load_adapter(self, path: str) -> None:
        from peft import PeftModel

        meta_file = Path(path) / ADAPTER_META
        if not meta_file.is_file():
            raise FileNotFoundError(f"{str(path)!r} is not a silmm adapter folder (no {ADAPTER_META})")
        meta = json.loads(meta_file.read_text())
        mine = {
            "kind": self.kind,
            "hidden_size": self.base.config.hidden_size,
            "vocab_size": self.base.config.vocab_size,
            "num_hidden_layers": self.base.config.num_hidden_layers,
        }
        if any(meta.get(k) != v for k, v in mine.items()) or not str(meta.get("adapter", "")).startswith(
            "world"
        ):
            raise ValueError(
                f"adapter in {str(path)!r} was made for {meta.get('adapter')!r} ({meta}), not for {self.name!r}"
            )
        if self.model is not self.base:
            raise RuntimeError("a LoRA is already attached; merge_adapter() first")
        self.model = PeftModel.from_pretrained(self.base, path, is_trainable=True)

    def merge_adapter(self) -> None:
        if self.model is not self.base:
            self.base = self.model.merge_and_unload()
            self.model = self.base
