"""Paper step 5a: preference pairs from self-feedback scores.

Per prompt, the candidates are ranked by score (ties broken by candidate order, so pairs are reproducible);
the top-k are paired with the bottom-k (k x k pairs; k = 1 is best vs worst, the default), and a pair is kept
only if s_chosen - s_rejected >= min_gap and > 0. Reference log-probs / features for the pairs are computed
here, once, by the model at the start of the iteration (`reference_outputs`), and cached next to the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from silmm.adapters.base import Adapter, Sample
from silmm.feedback import Candidate


@dataclass(frozen=True)
class PreferencePair:
    """One row of pairs.jsonl; `chosen` / `rejected` are candidate indices (keys of samples.safetensors)."""

    prompt_index: int
    prompt: str
    chosen: int
    rejected: int
    chosen_score: float
    rejected_score: float
    chosen_seed: int
    rejected_seed: int


def make_pairs(
    candidates: list[Candidate], *, per_prompt: int = 1, min_gap: float = 0.1
) -> list[PreferencePair]:
    """Top-`per_prompt` x bottom-`per_prompt` pairs per prompt whose score gap is >= `min_gap` (and > 0)."""
    by_prompt: dict[int, list[Candidate]] = {}
    for cand in candidates:
        by_prompt.setdefault(cand.prompt_index, []).append(cand)
    pairs = []
    for prompt_index in sorted(by_prompt):
        ranked = sorted(by_prompt[prompt_index], key=lambda c: (-c.score, c.k))
        for chosen in ranked[:per_prompt]:
            for rejected in ranked[::-1][:per_prompt]:
                gap = chosen.score - rejected.score
                if gap > 0 and gap >= min_gap:
                    pairs.append(
                        PreferencePair(
                            prompt_index, chosen.prompt, chosen.index, rejected.index,
                            chosen.score, rejected.score, chosen.seed, rejected.seed,
                        )
                    )  # fmt: skip
    return pairs


def pair_samples(pairs: list[PreferencePair], tensors: dict[str, torch.Tensor], which: str) -> list[Sample]:
    """Samples (without images: training needs only ids / feats) for the chosen or rejected side."""
    out = []
    for pair in pairs:
        index, seed = (
            (pair.chosen, pair.chosen_seed) if which == "chosen" else (pair.rejected, pair.rejected_seed)
        )
        out.append(
            Sample(
                pair.prompt, seed, None, ids=tensors.get(f"{index}.ids"), feats=tensors.get(f"{index}.feats")
            )
        )
    return out


@torch.no_grad()
def reference_outputs(
    adapter: Adapter,
    pairs: list[PreferencePair],
    tensors: dict[str, torch.Tensor],
    *,
    batch_size: int,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Cache of the reference model's outputs for `pairs`, taken from the model as it is now (no LoRA attached).

    discrete: {"ref_chosen_logps", "ref_rejected_logps"} `(P,)`; continuous: {"ref_feats"} `(P, Q, D)`.
    """
    chosen, rejected = pair_samples(pairs, tensors, "chosen"), pair_samples(pairs, tensors, "rejected")
    prompts = [p.prompt for p in pairs]
    outs: dict[str, list[torch.Tensor]] = {}
    for s in tqdm(
        range(0, len(pairs), batch_size), desc="reference outputs", disable=not progress, leave=False
    ):
        sl = slice(s, s + batch_size)
        if adapter.kind == "discrete":
            outs.setdefault("ref_chosen_logps", []).append(
                adapter.policy_outputs(prompts[sl], chosen[sl]).float().cpu()
            )
            outs.setdefault("ref_rejected_logps", []).append(
                adapter.policy_outputs(prompts[sl], rejected[sl]).float().cpu()
            )
        else:
            outs.setdefault("ref_feats", []).append(
                adapter.policy_outputs(prompts[sl], chosen[sl]).float().cpu()
            )
    return {k: torch.cat(v) for k, v in outs.items()}
