"""The tiny unified world models: one Llama decoder over a joint vocabulary of words, image codes and specials.

Four skills share the decoder, each selected by a task token:
    <write> <c:CATEGORY> prompt <eos>                       self-written prompts
    <ask> prompt <sep> q1 ? ; q2 ? ... <eos>               decompositional self-questioning
    <draw> prompt <img> d_1 .. d_36                          discrete: image codes, sampled autoregressively
    <draw> prompt <img> q_1 .. q_36                          continuous: 36 query tokens -> features (feat_head)
    <see> s_1 .. s_36 </see> question <ans> yes|no          VQA on its own (or any) image
The understanding path reads an image through its own embeddings (`<s*>` codes from the pixel parser), separate
from the drawing codes `<d*>`, as Janus separates its understanding and generation encoders. The continuous model's
features live in a fixed, entangled codebook space (`code_features`) that a fixed decoder (nearest code, then the
renderer) turns into crisp pixels. `WorldLM` subclasses `LlamaForCausalLM`, so generate, the KV cache, peft LoRA
and save_pretrained work unchanged; it only adds `feat_head` when `config.feat_dim > 0`.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from silmm.world.grammar import ALL_CATEGORIES, NUMBER_WORDS, RELATIONS
from silmm.world.scene import COLORS, GRID, PLURALS, SHAPES, SIZES, TEXTURES
from silmm.world.tokenizer import ATTRS, N_CELLS, N_CODES

SPECIALS = [
    "<pad>",
    "<bos>",
    "<eos>",
    "<unk>",
    "<write>",
    "<ask>",
    "<draw>",
    "<see>",
    "<img>",
    "</see>",
    "<sep>",
    "<ans>",
]
WORDS = sorted(
    {"yes", "no", ";", "?", "a", "an", "the", "and", "is", "there", "are", "exactly", "object", "objects"}
    | set(NUMBER_WORDS.values())
    | set(COLORS)
    | set(SHAPES)
    | set(PLURALS.values())
    | set(TEXTURES)
    | set(SIZES)
    | {w for rel in RELATIONS for w in rel.split()}
)
CATEGORY_TOKENS = [f"<c:{c}>" for c in ALL_CATEGORIES]
DRAW_TOKENS = [f"<d{i}>" for i in range(N_CODES)]
SEE_TOKENS = [f"<s{i}>" for i in range(N_CODES)]
QUERY_TOKENS = [f"<q{i}>" for i in range(N_CELLS)]
VOCAB = SPECIALS + WORDS + CATEGORY_TOKENS + DRAW_TOKENS + SEE_TOKENS + QUERY_TOKENS


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


FEAT_DIM = 12


@lru_cache(maxsize=1)
def _codebook() -> torch.Tensor:
    feats = torch.randn(N_CODES, FEAT_DIM, generator=torch.Generator().manual_seed(0))
    return nn.functional.normalize(feats, dim=-1)


def code_features() -> torch.Tensor:
    """(N_CODES, FEAT_DIM) fixed codebook: every code (the empty cell included) a seeded random unit vector, as a
    VQ codebook's entries are (an empty cell at 0 made features shrunk by regression to the mean decode as empty).
    The space is entangled on purpose: a code's colour, shape, texture and size are not separate directions, so
    binding an unseen combination is not a sum of seen parts (a factorised one-hot space let the model compose
    held-out bindings linearly, leaving nothing to improve), and nearby codes (median distance to the nearest other
    code 0.74) let DropDiv's perturbed features decode to different images."""
    return _codebook().clone()


_FACTORS = (COLORS, SHAPES, TEXTURES, SIZES, (0, 1))
SEE0 = VOCAB.index(SEE_TOKENS[0])  # the first seen code `<s0>` (an empty cell); `<s c>` is SEE0 + c


def _factor_table() -> torch.Tensor:
    """(N_CODES, 5) factor indices of each code; the empty cell takes the extra last index of each factor."""
    table = torch.tensor([[len(v) for v in _FACTORS]] * N_CODES)
    for code, attrs in enumerate(ATTRS, start=1):
        table[code] = torch.tensor([list(v).index(a) for a, v in zip(attrs, _FACTORS)])
    return table


_FACTOR_TABLE = _factor_table()  # not a buffer: from_pretrained leaves non-persistent buffers uninitialised

DRAW0 = VOCAB.index(DRAW_TOKENS[0])  # the first drawing code `<d0>` (the empty cell); `<d c>` is DRAW0 + c
_N_FACTOR_ROWS = sum(len(v) + 1 for v in _FACTORS)


@lru_cache(maxsize=1)
def _draw_factor_map() -> torch.Tensor:
    """(F, V) 0/1: factor value f (all factors' values, empty included, back to back) -> the draw codes that have it."""
    offsets = torch.tensor([0, *[len(v) + 1 for v in _FACTORS]], device="cpu").cumsum(0)  # never on meta
    out = torch.zeros(_N_FACTOR_ROWS, len(VOCAB), device="cpu")
    for i in range(len(_FACTORS)):
        out[offsets[i] + _FACTOR_TABLE[:, i], DRAW0 + torch.arange(N_CODES, device="cpu")] = 1.0
    return out


class FactoredHead(nn.Linear):
    """The LM head with each drawing code's output row tied in part to its factors: the row of `<d c>` is its own
    weight plus one learned row per factor value of c (colour, shape, texture, size, layer; the empty cell takes
    each factor's extra value). Every red code then shares what any red code's gradient teaches, so a model drawing
    from scratch learns attributes several times faster; the own rows keep codes apart. Other tokens are as in
    `nn.Linear`."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__(hidden, vocab, bias=False)
        self.factors = nn.Linear(hidden, _N_FACTOR_ROWS, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = _draw_factor_map().to(x.device, self.weight.dtype)
        return nn.functional.linear(x, self.weight + m.T @ self.factors.weight)


def features_to_codes(feats: torch.Tensor) -> torch.Tensor:
    """The fixed decoder's first half: (..., 36, D) features -> (..., 36) nearest image codes."""
    table = code_features().to(feats.device, feats.dtype)
    return torch.cdist(feats.reshape(-1, feats.shape[-1]), table).argmin(-1).reshape(feats.shape[:-1])


def world_config(
    kind: str, *, hidden: int = 192, layers: int = 6, heads: int = 6, seed_vocab: int | None = None,
    draw_factors: bool = False,
) -> LlamaConfig:
    if kind not in ("discrete", "continuous"):
        raise ValueError(f"kind {kind!r} is not one of ['discrete', 'continuous']")
    tok = {t: i for i, t in enumerate(VOCAB)}
    return LlamaConfig(
        vocab_size=seed_vocab or len(VOCAB),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 16 * 16,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        bos_token_id=tok["<bos>"],
        eos_token_id=tok["<eos>"],
        pad_token_id=tok["<pad>"],
        tie_word_embeddings=False,
        feat_dim=FEAT_DIM if kind == "continuous" else 0,
        world_kind=kind,
        draw_factors=draw_factors,
    )


class WorldLM(LlamaForCausalLM):
    """LlamaForCausalLM plus, for the continuous kind, a linear feature head over the query positions; with
    `config.draw_factors`, a `FactoredHead` as the LM head."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        if getattr(config, "draw_factors", False):
            self.lm_head = FactoredHead(config.hidden_size, config.vocab_size)
        feat_dim = getattr(config, "feat_dim", 0)
        self.feat_head = nn.Linear(config.hidden_size, feat_dim) if feat_dim else None
        # understanding path: a seen cell's code is also embedded by its factors and its 2D cell position
        h = config.hidden_size
        self.see_factor_embed = nn.ModuleList(nn.Embedding(len(v) + 1, h) for v in _FACTORS)
        self.see_row_embed, self.see_col_embed = nn.Embedding(GRID, h), nn.Embedding(GRID, h)
        self.cell_head = nn.Linear(h, 1)  # training-only auxiliary: is this cell what the question asks about?
        self.post_init()

    def _see_embeddings(self, input_ids: torch.Tensor, see: torch.Tensor) -> torch.Tensor:
        """(B, T, H) factor + row/col embeddings on the `<s*>` positions `see` (B, T), zero elsewhere."""
        factors = _FACTOR_TABLE.to(input_ids.device)[(input_ids - SEE0).clamp(0, N_CODES - 1)]  # (B, T, 5)
        out = sum(emb(factors[..., i]) for i, emb in enumerate(self.see_factor_embed))
        cell = (see.cumsum(1) - 1).clamp(0, N_CELLS - 1)  # one image per sequence
        out = out + self.see_row_embed(cell // GRID) + self.see_col_embed(cell % GRID)
        return out * see[..., None]

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """(B, T, H) input embeddings with the understanding path added, or None when no image is in the input."""
        see = (input_ids >= SEE0) & (input_ids < SEE0 + N_CODES)  # (B, T)
        if not bool(see.any()):
            return None
        return self.model.embed_tokens(input_ids) + self._see_embeddings(input_ids, see)

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, H) final (normed) hidden states, understanding embeddings included."""
        embeds = self.embed(input_ids)
        if embeds is None:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None, **kwargs):
        if input_ids is not None and inputs_embeds is None and (inputs_embeds := self.embed(input_ids)) is not None:
            input_ids = None
        return super().forward(input_ids=input_ids, inputs_embeds=inputs_embeds, **kwargs)

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """(B, 36, D) features read at the query positions `query_pos` (B, 36)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        picked = hidden.gather(1, query_pos[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, 36, H)
        return self.feat_head(picked)


# ---- inference: batched, KV-cached, every sample seeded by its own generator --------------------------------


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, positions) of `rows` padded on the left; real tokens take positions 0, 1, ..."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, pos


def _nucleus(
    logits: torch.Tensor, top_p: float, temperature: float, gens: list[torch.Generator]
) -> torch.Tensor:
    """Sample one token per row with top-p / temperature, each row from its own generator. logits (B, V)."""
    probs = (logits.float() / temperature).softmax(-1)
    sorted_p, order = probs.sort(-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
    sorted_p = sorted_p * keep
    out = [order[i, torch.multinomial(sorted_p[i], 1, generator=g)] for i, g in enumerate(gens)]
    return torch.cat(out)


@torch.no_grad()
def generate_tokens(
    model: WorldLM,
    rows: list[list[int]],
    n_new: int,
    allowed: torch.Tensor | None,
    *,
    seeds: list[int] | None,
    top_p: float = 1.0,
    temperature: float = 1.0,
    stop_id: int | None = None,
) -> torch.Tensor:
    """(B, n_new) continuation of each row. seeds=None -> greedy. `allowed` (V,) bool restricts the vocabulary."""
    device = model.device
    ids, mask, pos = (t.to(device) for t in left_pad(rows, model.config.pad_token_id))
    gens = None if seeds is None else [torch.Generator().manual_seed(int(s)) for s in seeds]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    cache, new = out.cache, []
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    for step in range(n_new):
        logits = out.logits[:, -1].float().cpu()
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        nxt = logits.argmax(-1) if gens is None else _nucleus(logits, top_p, temperature, gens)
        nxt = nxt.to(device)
        if stop_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
            done |= nxt == stop_id
        new.append(nxt)
        if step == n_new - 1 or (stop_id is not None and bool(done.all())):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt[:, None],
            attention_mask=mask,
            position_ids=pos,
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
    return torch.stack(new, 1).cpu()
