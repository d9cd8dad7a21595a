"""Paper step 2: diverse generation, N candidates per prompt.

Discrete models sample image tokens with nucleus sampling; continuous models use DropDiv (dropout switched on
in the last layers' MLPs) or, as an ablation, Gaussian feature noise: the adapter implements each mode behind
`Adapter.sample`. The seed of every candidate is derived from (run seed, iteration, prompt index, k) and
recorded, so any candidate can be regenerated alone. With `include_plain` (not in the paper), candidate k = 0 is
the model's plain output (mode "none": greedy tokens, dropout off), so the variations compete with it: on
world-continuous, DropDiv's candidates were worse than the plain drawing in every category (docs/RESULTS.md), and a
pair whose chosen image is worse than what the model already draws cannot teach it. Images are saved as PNG; the token ids or features that
produced them go to one safetensors file, keyed by candidate index, for the preference update. With
`feature_target="decoded"` (not in the paper) a continuous candidate's features are instead those of the image
they decode to (`Adapter.decoded_features`; the world model: its codes' codebook vectors): DropDiv perturbs every
feature, while a chosen and a rejected image may differ in a few cells only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from silmm import runio
from silmm.adapters.base import Adapter, Diversity, Sample
from silmm.config import SamplingConfig
from silmm.prompts import derive_seed


@dataclass(frozen=True)
class SampleRecord:
    """One drawn candidate as written to samples.jsonl; `index` keys its tensors in samples.safetensors."""

    index: int
    prompt_index: int
    k: int
    prompt: str
    seed: int
    image: str  # path relative to the iteration folder


def candidate_seed(run_seed: int, iteration: int, prompt_index: int, k: int) -> int:
    return derive_seed(run_seed, iteration, prompt_index, k)


def diversity_from(cfg: SamplingConfig) -> Diversity:
    return Diversity(
        mode=cfg.mode,
        top_p=cfg.top_p,
        temperature=cfg.temperature,
        dropout=cfg.dropout,
        layers=cfg.layers,
        noise_std=cfg.noise_std,
    )


def draw(
    adapter: Adapter,
    prompts: list[str],
    cfg: SamplingConfig,
    *,
    run_seed: int,
    iteration: int,
    iter_dir: Path,
    progress: bool = False,
    procs: runio.Processes = runio.ONE_PROCESS,
) -> tuple[list[SampleRecord], dict[str, torch.Tensor]]:
    """Draw N candidates per prompt, save their PNGs under `iter_dir/images`, return records and tensors.

    With several processes each draws (and saves) every `world`-th batch; all get every record and tensor.
    """
    jobs = [(p, k) for p in range(len(prompts)) for k in range(cfg.n)]
    starts = procs.mine(list(range(0, len(jobs), cfg.batch_size)))
    diversity = diversity_from(cfg)
    drawn = []  # per batch of mine: [(record, tensors), ...]
    n_mine = sum(len(jobs[start : start + cfg.batch_size]) for start in starts)
    bar = tqdm(total=n_mine, desc=f"iter {iteration} sampling", disable=not progress, leave=False)
    for start in starts:
        batch = jobs[start : start + cfg.batch_size]
        seeds = [candidate_seed(run_seed, iteration, p, k) for p, k in batch]
        samples = _sample(
            adapter, [prompts[p] for p, _ in batch], seeds, [k for _, k in batch], diversity, cfg
        )
        done = []
        for offset, ((p, k), seed, sample) in enumerate(zip(batch, seeds, samples, strict=True)):
            index = start + offset
            image = f"images/p{p:05d}_k{k:02d}.png"
            runio.save_png(iter_dir / image, sample.image)
            done.append((SampleRecord(index, p, k, prompts[p], seed, image), sample_tensors(index, sample)))
        drawn.append(done)
        bar.update(len(batch))
    bar.close()
    records, tensors = [], {}
    for record, sample_tensor in (row for done in procs.gather(drawn) for row in done):
        records.append(record)
        tensors.update(sample_tensor)
    return records, tensors


def _sample(
    adapter: Adapter,
    prompts: list[str],
    seeds: list[int],
    ks: list[int],
    diversity: Diversity,
    cfg: SamplingConfig,
) -> list[Sample]:
    """The batch's candidates in order; with `include_plain` the k = 0 ones come from a plain (mode "none") call."""
    plain = [i for i, k in enumerate(ks) if cfg.include_plain and k == 0]
    varied = [i for i, k in enumerate(ks) if not (cfg.include_plain and k == 0)]
    out: list[Sample | None] = [None] * len(ks)
    for idx, div in ((plain, Diversity("none")), (varied, diversity)):
        if idx:
            for i, sample in zip(
                idx, adapter.sample([prompts[i] for i in idx], [seeds[i] for i in idx], div)
            ):
                out[i] = sample
    if cfg.feature_target == "decoded":  # KC-DPO then trains towards what was drawn, not DropDiv's noise
        feats = adapter.decoded_features(out)
        out = [dataclasses.replace(s, feats=f) for s, f in zip(out, feats, strict=True)]
    return out


def sample_tensors(index: int, sample: Sample) -> dict[str, torch.Tensor]:
    if sample.ids is not None:
        return {f"{index}.ids": sample.ids.detach().cpu()}
    if sample.feats is not None:
        return {f"{index}.feats": sample.feats.detach().float().cpu()}
    raise ValueError(f"sample {index} ({sample.prompt!r}) carries neither ids nor feats")
