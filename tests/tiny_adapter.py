"""A small but real adapter for tests: a tiny random LlamaForCausalLM that writes, draws, sees and learns.

World: 8 colours. A prompt is a few words ("red and blue"); an image is a 2x2 grid of coloured 4x4 blocks.
- discrete ("tiny-discrete"): the LM samples 4 image-code tokens after `<img>` (nucleus sampling with a seeded
  generator); each code is one colour block. `policy_outputs` = summed log-probs of the codes (softmax over the
  code tokens only, the distribution it samples from).
- continuous ("tiny-continuous"): features H `(4, D)` = the LM's last hidden states at 4 query tokens; a fixed
  random projection decodes each query to a colour. DropDiv = dropout hooks on the last layers' MLPs.
- seeing: the image is read back into code tokens and the LM's next-token softmax after `<a>` gives p(yes), p(no).
- questions: one "is there <colour> ?" per colour word (rule-based: enough to exercise the loop).
`TinyMeasure` is the matching exact oracle and held-out evaluation (the `measure` hook of the loop).
Every example is run alone (no padding), so outputs do not depend on how a batch is composed.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM

from silmm.adapters.base import Diversity, Sample

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 40, 180),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
}
COLOR_NAMES = list(COLORS)
CATEGORIES = ("color", "pair")
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<img>", "<q>", "<a>", "<qry0>", "<qry1>", "<qry2>", "<qry3>"]
WORDS = ["a", "and", "is", "there", "?", "yes", "no", *COLOR_NAMES]
CODES = [f"<c{i}>" for i in range(len(COLORS))]
VOCAB = SPECIALS + [f"<cat:{c}>" for c in CATEGORIES] + WORDS + CODES
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
CODE_IDS = [TOKEN_ID[c] for c in CODES]
PROMPT_WORD_IDS = [TOKEN_ID[w] for w in ("a", "and", *COLOR_NAMES)]
N_QUERIES, BLOCK = 4, 4


def encode_words(text: str, *, strict: bool = True) -> list[int]:
    """Whitespace words -> ids; prompts must use the vocabulary, questions may not (unknown words -> <unk>)."""
    ids = []
    for word in text.replace('"', " ").replace("?", " ? ").split():
        if word not in TOKEN_ID and strict:
            raise ValueError(f"word {word!r} is not in the tiny vocabulary {WORDS}")
        ids.append(TOKEN_ID.get(word, TOKEN_ID["<unk>"]))
    return ids


def render(codes: list[int]) -> Image.Image:
    """4 colour indices -> a 2x2 grid of 4x4 blocks (8x8 RGB)."""
    img = Image.new("RGB", (2 * BLOCK, 2 * BLOCK))
    for q, code in enumerate(codes):
        x, y = (q % 2) * BLOCK, (q // 2) * BLOCK
        img.paste(COLORS[COLOR_NAMES[code]], (x, y, x + BLOCK, y + BLOCK))
    return img


def read_blocks(image: Image.Image) -> list[int]:
    """Nearest palette colour of each block's centre pixel."""
    out = []
    palette = torch.tensor(list(COLORS.values()), dtype=torch.float32)
    for q in range(N_QUERIES):
        px = torch.tensor(image.getpixel(((q % 2) * BLOCK + 1, (q // 2) * BLOCK + 1)), dtype=torch.float32)
        out.append(int((palette - px).pow(2).sum(-1).argmin()))
    return out


def _nucleus(logits: torch.Tensor, top_p: float, temperature: float, generator: torch.Generator) -> int:
    probs = (logits / temperature).softmax(-1)
    sorted_p, order = probs.sort(descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    pick = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
    return int(order[pick])


class TinyAdapter:
    """The protocol of silmm/adapters/base.py over a 2-layer, 32-wide Llama."""

    def __init__(self, kind: str = "discrete", *, seed: int = 0):
        self.kind = kind
        self.name = f"tiny-{kind}"
        self.device = torch.device("cpu")
        cfg = LlamaConfig(
            vocab_size=len(VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=64, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.lm = LlamaForCausalLM(cfg).eval()
            self.decoder = torch.randn(cfg.hidden_size, len(COLORS))  # fixed feature -> colour projection
        self.peft = None
        self.model = self.lm

    # ---- text skills -------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_prompts(self, category: str, n: int, *, seed: int) -> list[str]:
        if category not in CATEGORIES:
            raise ValueError(f"category {category!r} is not one of {list(CATEGORIES)}")
        gen = torch.Generator().manual_seed(seed)
        length = 2 if category == "color" else 3
        out = []
        for _ in range(n):
            ids = [TOKEN_ID["<bos>"], TOKEN_ID[f"<cat:{category}>"]]
            for _ in range(length):
                logits = self.lm(torch.tensor([ids])).logits[0, -1, PROMPT_WORD_IDS]
                ids.append(PROMPT_WORD_IDS[_nucleus(logits, 1.0, 1.0, gen)])
            out.append(" ".join(VOCAB[i] for i in ids[2:]))
        return out

    def write_questions(self, prompts: list[str]) -> list[list[str]]:
        return [
            [f"is there {c} ?" for c in dict.fromkeys(w for w in p.split() if w in COLORS)] for p in prompts
        ]

    # ---- drawing -----------------------------------------------------------------------------------------
    def _prefix(self, prompt: str) -> list[int]:
        return [TOKEN_ID["<bos>"], *encode_words(prompt), TOKEN_ID["<img>"]]

    @contextlib.contextmanager
    def _dropdiv(self, p: float, layers: int):
        def hook(module, args, out):
            return F.dropout(out, p, training=True)

        handles = [layer.mlp.register_forward_hook(hook) for layer in self.lm.model.layers[-layers:]]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _feats(self, prompt: str) -> torch.Tensor:
        ids = self._prefix(prompt) + [TOKEN_ID[f"<qry{i}>"] for i in range(N_QUERIES)]
        return self.lm.model(torch.tensor([ids])).last_hidden_state[0, -N_QUERIES:]  # (Q, D)

    def _decode_feats(self, feats: torch.Tensor) -> Image.Image:
        return render((feats @ self.decoder).argmax(-1).tolist())

    @torch.no_grad()
    def sample(self, prompts: list[str], seeds: list[int], diversity: Diversity) -> list[Sample]:
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            gen = torch.Generator().manual_seed(seed)
            if self.kind == "discrete":
                ids = self._prefix(prompt)
                codes = []
                for _ in range(N_QUERIES):
                    logits = self.lm(torch.tensor([ids])).logits[0, -1, CODE_IDS]
                    if diversity.mode == "none":
                        code = int(logits.argmax())
                    else:
                        code = _nucleus(logits, diversity.top_p, diversity.temperature, gen)
                    codes.append(code)
                    ids.append(CODE_IDS[code])
                out.append(Sample(prompt, seed, render(codes), ids=torch.tensor(codes)))
                continue
            if diversity.mode == "dropdiv":
                with torch.random.fork_rng(devices=[]), self._dropdiv(diversity.dropout, diversity.layers):
                    torch.manual_seed(seed)
                    feats = self._feats(prompt)
            else:
                feats = self._feats(prompt)
                if diversity.mode == "noise":
                    feats = feats + diversity.noise_std * torch.randn(feats.shape, generator=gen)
            out.append(Sample(prompt, seed, self._decode_feats(feats), feats=feats.clone()))
        return out

    # ---- seeing ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p_yes, p_no = [], []
        for image, question in zip(images, questions, strict=True):
            codes = [CODE_IDS[c] for c in read_blocks(image)]
            ids = [
                TOKEN_ID["<bos>"],
                *codes,
                TOKEN_ID["<q>"],
                *encode_words(question, strict=False),
                TOKEN_ID["<a>"],
            ]
            probs = self.lm(torch.tensor([ids])).logits[0, -1].softmax(-1)
            p_yes.append(probs[TOKEN_ID["yes"]])
            p_no.append(probs[TOKEN_ID["no"]])
        return torch.stack(p_yes), torch.stack(p_no)

    # ---- learning ----------------------------------------------------------------------------------------
    def policy_outputs(self, prompts: list[str], samples: list[Sample]) -> torch.Tensor:
        if self.kind == "continuous":
            return torch.stack([self._feats(p) for p in prompts])  # (B, Q, D)
        out = []
        for prompt, sample in zip(prompts, samples, strict=True):
            prefix = self._prefix(prompt)
            codes = sample.ids.tolist()
            logits = self.lm(torch.tensor([prefix + [CODE_IDS[c] for c in codes]])).logits[0]
            steps = logits[len(prefix) - 1 : len(prefix) - 1 + len(codes), CODE_IDS].log_softmax(-1)  # (T, 8)
            out.append(steps.gather(-1, torch.tensor(codes)[:, None]).sum())
        return torch.stack(out)  # (B,)

    def reference(self) -> contextlib.AbstractContextManager:
        return self.peft.disable_adapter() if self.peft is not None else contextlib.nullcontext()

    def add_lora(self, *, r: int, alpha: int, dropout: float, target_modules: list[str] | str) -> None:
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules)
        self.peft = get_peft_model(self.lm, cfg)
        self.model = self.peft

    def save_adapter(self, path: str) -> None:
        self.peft.save_pretrained(path)
        Path(path, "silmm_adapter.json").write_text(json.dumps({"adapter": self.name}))

    def load_adapter(self, path: str) -> None:
        from peft import PeftModel

        made_for = json.loads(Path(path, "silmm_adapter.json").read_text())["adapter"]
        if made_for != self.name:
            raise ValueError(f"adapter folder {path} was made for {made_for!r}, not {self.name!r}")
        self.peft = PeftModel.from_pretrained(self.lm, path)
        self.model = self.peft

    def merge_adapter(self) -> None:
        self.lm = self.peft.merge_and_unload()
        self.peft = None
        self.model = self.lm


class TinyMeasure:
    """Exact oracle and held-out evaluation for the tiny colour world (the loop's `measure` hook)."""

    heldout = ("red and blue", "a green", "yellow and white", "purple and orange", "a black", "blue and red")

    def gt_questions(self, prompt: str) -> list[str]:
        return [f"is there {c} ?" for c in dict.fromkeys(w for w in prompt.split() if w in COLORS)]

    def question_type(self, question: str) -> str:
        return "color" if question.startswith("is there") else "other"

    def oracle_answers(self, image: Image.Image, questions: list[str]) -> list[bool | None]:
        drawn = {COLOR_NAMES[c] for c in read_blocks(image)}
        out: list[bool | None] = []
        for q in questions:
            words = q.split()
            out.append(words[2] in drawn if len(words) == 4 and words[:2] == ["is", "there"] else None)
        return out

    def oracle_score(self, prompt: str, image: Image.Image) -> float:
        asked = [c for c in prompt.split() if c in COLORS]
        answers = self.oracle_answers(image, [f"is there {c} ?" for c in asked])
        return sum(bool(a) for a in answers) / max(len(asked), 1)

    def evaluate(self, adapter: TinyAdapter) -> dict:
        samples = adapter.sample(list(self.heldout), list(range(len(self.heldout))), Diversity(mode="none"))
        scores = [self.oracle_score(s.prompt, s.image) for s in samples]
        overall = sum(scores) / len(scores)
        objects = [len(set(read_blocks(s.image))) for s in samples]
        return {
            "scores": {"color": overall},
            "overall": overall,
            "facts_only": {"color": overall},
            "mean_objects": sum(objects) / len(objects),
        }


def load_tiny(cfg) -> tuple[TinyAdapter, TinyMeasure, None]:
    """The `load` hook of `silmm.__main__.main` for model.name in {tiny-discrete, tiny-continuous}."""
    kinds = {"tiny-discrete": "discrete", "tiny-continuous": "continuous"}
    if cfg.model.name not in kinds:
        raise ValueError(f"model.name={cfg.model.name!r} is not one of {sorted(kinds)}")
    return TinyAdapter(kinds[cfg.model.name]), TinyMeasure(), None
