"""Train a built-in world model from scratch: `python -m silmm.world.train --kind {discrete,continuous} --out DIR`.

Deterministic for a seed (data RNG, init and batch order all derive from --seed; one torch thread). Each step mixes
the four skills: drawing (training prompts only, see `writer.HELDOUT_*`), seeing (VQA on imperfect scenes),
self-questioning and prompt writing. The continuous kind regresses the fixed code features of a canonical layout
with MSE; the discrete kind learns image codes with cross-entropy. Writes safetensors weights, config, tokenizer,
`train_log.jsonl` and a model card (README.md) with the data, steps and validation numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from silmm.world.data import GEOMETRY_SIZE, IGNORE, RELATION_SHARE, ExampleMaker
from silmm.world.model import DRAW0, DRAW_TOKENS, SEE0, WorldLM, build_tokenizer, code_features, world_config
from silmm.world.scene import GRID

TASK_MIX = {"draw": 0.35, "see": 0.45, "ask": 0.1, "write": 0.1}
OBJECT_CELL_WEIGHT = 4.0
_OBJECT_CODES = (DRAW0 + 1, DRAW0 + len(DRAW_TOKENS) - 1)  # first and last non-empty `<d*>`
GEOMETRY_WEIGHT = 1.0  # weight of the relation geometry auxiliary (the shipped recipes' setting; 0 = off)


def collate(examples: list[dict], pad: int) -> dict:
    width = max(len(e["ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), IGNORE)
    cells = torch.full((len(examples), width), IGNORE)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(e["ids"]), torch.tensor(e["labels"]), 1
        if "cell_labels" in e:
            cells[i, :n] = torch.tensor(e["cell_labels"])
    batch = {"ids": ids, "labels": labels, "mask": mask, "cells": cells}
    if any("geometry" in e for e in examples):  # (B, 36, GEOMETRY_SIZE) at the image cells from geometry_start
        batch["geometry"] = torch.tensor([e.get("geometry", [[IGNORE] * GEOMETRY_SIZE] * GRID**2) for e in examples])
        batch["geometry_start"] = torch.tensor([e.get("geometry_start", 0) for e in examples])
    return batch


def lm_loss(model: WorldLM, batch: dict, geometry_head: torch.nn.Linear | None = None, geometry_weight: float = 0.0,
            object_weight: float = 1.0, cell_object_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Mean next-token cross-entropy over labelled positions, and the accuracy there. A drawn object's code (a
    non-empty `<d*>` target) weighs `object_weight` x any other token. With a `geometry_head`, relation questions
    also train the image cells to say where each drawn object lies relative to the subject
    (`data.relation_geometry`), weighted by `geometry_weight`. In the per-cell relevance auxiliary a cell with an
    object weighs `cell_object_weight` x an empty one."""
    hidden = model.hidden(batch["ids"], batch["mask"])  # (B, T, H)
    logits = model.lm_head(hidden)[:, :-1]  # (B, T-1, V)
    target = batch["labels"][:, 1:]
    if object_weight == 1.0:
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
    else:
        each = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")  # (B, T-1)
        lo, hi = _OBJECT_CODES
        weight = torch.where((target >= lo) & (target <= hi), object_weight, 1.0) * (target != IGNORE)
        loss = (each * weight).sum() / weight.sum()
    cells = batch["cells"]
    if (cells != IGNORE).any():  # auxiliary: image cells learn whether they are what the question asks about
        sel = cells != IGNORE
        cell_logits = model.cell_head(hidden[sel]).squeeze(-1)
        weight = torch.where(batch["ids"][sel] == SEE0, 1.0, cell_object_weight)
        loss = loss + F.binary_cross_entropy_with_logits(cell_logits, cells[sel].float(), weight=weight) / weight.mean()
    if geometry_head is not None and "geometry" in batch:
        loss = loss + geometry_weight * geometry_loss(geometry_head, hidden, batch["geometry_start"], batch["geometry"])
    sel = target != IGNORE
    acc = (logits.argmax(-1)[sel] == target[sel]).float().mean()
    return loss, acc


def geometry_loss(head: torch.nn.Linear, hidden: torch.Tensor, start: torch.Tensor, geometry: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of `head` read at the 36 image cells from `start` (B,) of `hidden` (B, T, H) against
    `data.relation_geometry` rows `geometry` (B, 36, GEOMETRY_SIZE); IGNORE entries are skipped."""
    pos = start[:, None] + torch.arange(GRID**2, device=hidden.device)  # (B, 36)
    out = head(hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1])))  # (B, 36, GEOMETRY_SIZE)
    sel = geometry != IGNORE
    return F.binary_cross_entropy_with_logits(out[sel], geometry[sel].float())


class BatchStream(torch.utils.data.IterableDataset):
    """Endless collated batches; worker w draws from seed (seed, w), so a run is fixed by (seed, workers)."""

    def __init__(self, kind: str, vocab: dict[str, int], seed: int, batch_size: int, pad: int, merge_tasks: bool,
                 task_mix: dict[str, float] = TASK_MIX, relation_share: float = RELATION_SHARE, ordered: bool = False,
                 count_share: float = 0.0, canonical_share: float = 0.0):
        self.task_mix, self.relation_share, self.ordered = task_mix, relation_share, ordered
        self.count_share, self.canonical_share = count_share, canonical_share
        self.kind, self.vocab, self.seed, self.size, self.pad, self.merge = kind, vocab, seed, batch_size, pad, merge_tasks

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        maker = ExampleMaker(self.kind, self.vocab, self.seed * 1000 + wid, relation_share=self.relation_share,
                             ordered=self.ordered, count_share=self.count_share,
                             canonical_share=self.canonical_share)
        rng = random.Random(self.seed * 1000 + wid + 1)
        while True:
            tasks = rng.choices(list(self.task_mix), list(self.task_mix.values()), k=self.size)
            groups: dict[str, list[dict]] = {}
            for task in tasks:
                groups.setdefault(task, []).append(getattr(maker, task)())
            feat = groups.pop("draw") if self.kind == "continuous" and "draw" in groups else []
            if self.merge:
                groups = {"mixed": [e for g in groups.values() for e in g]}
            batch = {"lm": [(collate(g, self.pad), len(g), task) for task, g in groups.items() if g]}
            if feat:
                fb = collate(feat, self.pad)
                fb["query_pos"] = torch.tensor([e["query_start"] for e in feat])[:, None] + torch.arange(36)[None]
                fb["feat_codes"] = torch.tensor([e["feat_codes"] for e in feat])  # (B, 36)
                fb["target"] = code_features()[fb["feat_codes"]]
                batch["feat"] = fb
            yield batch


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _bad_options(kind: str, object_weight: float, draw_factors: bool, ordered_draws: bool, relation_share: float,
                 count_share: float, canonical_share: float) -> str | None:
    """The message for options that do not fit together, or None: drawing options given to a kind they do not
    apply to, a share outside [0, 1]."""
    given = {"object_weight": object_weight != 1.0, "draw_factors": draw_factors, "ordered_draws": ordered_draws}
    if kind == "continuous" and any(given.values()):
        return (f"{sorted(k for k, v in given.items() if v)} apply to --kind discrete only "
                "(world-continuous draws features, not codes)")
    shares = {"relation_share": relation_share, "count_share": count_share, "canonical_share": canonical_share}
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            return f"{name} {share} is not a share: give a number from 0 to 1"
    return None


def train(kind: str, out: str, *, seed: int = 0, steps: int = 3000, batch_size: int = 48, lr: float = 2e-3,
          hidden: int = 192, layers: int = 6, heads: int = 6, log_every: int = 100, device: str = "cpu",
          workers: int = 0, max_minutes: float | None = None, init: str | None = None,
          task_mix: dict[str, float] | None = None, relation_share: float = RELATION_SHARE,
          geometry_weight: float = GEOMETRY_WEIGHT, object_weight: float = 1.0, draw_factors: bool = False,
          ordered_draws: bool = False, count_share: float = 0.0, cell_object_weight: float = 1.0,
          canonical_share: float = 0.0, evaluate: bool = True) -> dict:
    if problem := _bad_options(kind, object_weight, draw_factors, ordered_draws, relation_share, count_share,
                               canonical_share):
        raise ValueError(problem)
    torch.set_num_threads(int(os.environ.get("SILMM_THREADS", "1")))
    torch.manual_seed(seed)  # script entry point: the only place that seeds globally
    dev = torch.device(device)
    tok = build_tokenizer()
    model = WorldLM(world_config(kind, hidden=hidden, layers=layers, heads=heads, draw_factors=draw_factors))
    reset: list[str] = []  # --init weights whose shape changed (e.g. a new feat_head): left at their fresh init
    dropped: list[str] = []  # --init weights this kind has no use for: a continuous checkpoint's feature head
    if init:  # continue from an earlier checkpoint (a later stage of a multi-stage recipe)
        from safetensors.torch import load_file

        state = load_file(str(Path(init) / "model.safetensors"))
        if kind == "discrete":  # it draws tokens instead
            dropped = sorted(k for k in state if k.startswith("feat_head."))
            state = {k: v for k, v in state.items() if k not in dropped}
        mine = model.state_dict()
        reset = sorted(k for k, v in state.items() if k in mine and v.shape != mine[k].shape)
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in reset}, strict=False)
        if unexpected:
            raise ValueError(f"--init {init!r} has weights this model does not: {unexpected[:5]}")
    model = model.to(dev).train()
    # training-only head for the relation geometry auxiliary (not saved): data.relation_geometry per image cell
    geometry_head = torch.nn.Linear(hidden, GEOMETRY_SIZE).to(dev) if geometry_weight else None
    params = [*model.parameters(), *(geometry_head.parameters() if geometry_head is not None else [])]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    t0 = time.time()

    def progress(step: int) -> float:
        """Schedule position; a time-budgeted run (--max-minutes) anneals by wall clock and is not bit-reproducible."""
        done = step / steps
        return max(done, (time.time() - t0) / (60 * max_minutes)) if max_minutes else done

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress(s))))
    )
    stream = BatchStream(kind, tok.get_vocab(), seed, batch_size, tok.pad_token_id, merge_tasks=dev.type == "cuda",
                         task_mix=task_mix or TASK_MIX, relation_share=relation_share, ordered=ordered_draws,
                         count_share=count_share, canonical_share=canonical_share)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = []
    bar = tqdm(zip(range(steps), loader), total=steps, desc=f"train world-{kind}", unit="step", mininterval=2)
    stopped_early = False
    # per step since the last log record, kept as tensors so that only a record waits for the device
    losses: list[torch.Tensor] = []
    task_accs: dict[str, list[torch.Tensor]] = {}
    for step, batch in bar:
        if max_minutes is not None and time.time() - t0 > 60 * max_minutes:
            stopped_early = True
            break
        parts = [(lm_loss(model, _to(b, dev), geometry_head, geometry_weight, object_weight, cell_object_weight), k, task)
                 for b, k, task in batch["lm"]]
        n = sum(k for _, k, _ in parts)
        loss = sum(lo * k for (lo, _), k, _ in parts) / n
        acc = sum(a * k for (_, a), k, _ in parts) / n
        for (_, a), _, task in parts:  # per task since the last record; "see" is the judge's answer accuracy
            task_accs.setdefault(task, []).append(a.detach())
        if "feat" in batch:
            fb = _to(batch["feat"], dev)
            f_loss = F.mse_loss(model.features(fb["ids"], fb["mask"], fb["query_pos"]), fb["target"], reduction="none")
            # object cells weigh OBJECT_CELL_WEIGHT x an empty one: 1-4 objects among 36 cells would otherwise
            # let "draw nothing" be a cheap minimum
            weight = 1.0 + (OBJECT_CELL_WEIGHT - 1.0) * (fb["feat_codes"] > 0).float()
            f_loss = (f_loss.sum(-1) * weight).mean()
            loss = loss + f_loss
        losses.append(loss.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step, "loss": round(loss.item(), 4), "acc": round(acc.item(), 4), "seconds": round(time.time() - t0, 1)}
            if "feat" in batch:
                rec["feature_loss"] = round(f_loss.item(), 4)
            # means over the steps since the last record: the one-batch numbers above are noisy
            rec["mean_loss"] = round(sum(x.item() for x in losses) / len(losses), 4)
            rec["task_acc"] = {task: round(sum(x.item() for x in v) / len(v), 4) for task, v in sorted(task_accs.items())}
            losses.clear()
            task_accs.clear()
            log.append(rec)
            bar.set_postfix(loss=rec["loss"], acc=rec["acc"])
    model = model.cpu().eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    (out_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    meta = {"kind": kind, "seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "hidden": hidden,
            "layers": layers, "heads": heads, "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(dev) if dev.type == "cpu" else torch.cuda.get_device_name(dev), "workers": workers,
            "seconds": round(time.time() - t0, 1), "final": log[-1],
            "steps_done": log[-1]["step"] + 1 if not stopped_early else step, "stopped_early": stopped_early,
            "init": init, "init_reset": reset, "init_dropped": dropped, "task_mix": task_mix or TASK_MIX,
            "relation_share": relation_share, "geometry_weight": geometry_weight, "object_weight": object_weight,
            "draw_factors": draw_factors, "ordered_draws": ordered_draws, "count_share": count_share,
            "cell_object_weight": cell_object_weight, "canonical_share": canonical_share}
    (out_dir / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    write_card(out_dir, meta, quick_eval(out_dir) if evaluate else {})
    return meta


def quick_eval(out_dir: Path) -> dict:
    """Validation for the card: 48 held-out and 48 single-object prompts, 2 images each (python -m eval world
    gives the full numbers)."""
    from silmm.adapters.world import WorldAdapter
    from silmm.world.evaluate import SPLITS, evaluate, read_prompts

    adapter = WorldAdapter.from_pretrained(out_dir)
    out = {}
    for split in ("heldout", "single"):
        res = evaluate(adapter, read_prompts(SPLITS[split])[::4][:48] if split == "heldout" else read_prompts(SPLITS[split]),
                       images_per_prompt=2, progress=False)
        out[split] = {k: res[k] for k in ("overall", "scores", "facts_only", "judge_agreement", "mean_objects", "n_prompts")}
    return out


def write_card(out_dir: Path, meta: dict, results: dict) -> None:
    """README.md model card: what the model is, how it was trained, what it measured."""
    lines = [
        f"# world-{meta['kind']}: a tiny unified model of silmm's built-in compositional world",
        "",
        "Draws (" + ("image codes, autoregressive" if meta["kind"] == "discrete" else "continuous features -> fixed nearest-code decoder")
        + "), sees (VQA through factorised understanding embeddings), writes prompts and asks itself questions.",
        "Architecture: `silmm.world.model.WorldLM` (LlamaForCausalLM subclass), "
        f"{meta['parameters']:,} parameters, hidden {meta['hidden']}, {meta['layers']} layers.",
        "",
        "## Data",
        "Generated on the fly by `silmm.world.data.ExampleMaker`: drawing on training prompts only (held-out bindings and",
        "relations never appear in a multi-object drawing prompt), VQA on imperfect scenes (perturbed layouts, random",
        "scenes with occlusion; questions from the prompt's and a counterfactual prompt's decomposition, relation questions",
        "with near-miss noun phrases), question writing, prompt writing. Never the model's own drawings labelled by the oracle.",
        "",
        "## Training",
        "```json", json.dumps(meta, indent=2), "```",
        "",
        "## Measured quality (`silmm.world.evaluate`, fixed seeds)",
    ]
    for split, res in results.items():
        lines += [f"### {split}", "```json", json.dumps(res, indent=2), "```"]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n")


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in TASK_MIX:
            raise SystemExit(f"--task-mix: unknown task {key!r}; valid: {sorted(TASK_MIX)}")
        mix[key] = float(value)
    return mix


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", required=True, choices=["discrete", "continuous"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--workers", type=int, default=0, help="data worker processes (part of what fixes a run)")
    ap.add_argument("--max-minutes", type=float, help="stop early and save after this many minutes (recorded)")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--init", help="start from this checkpoint folder (a later training stage)")
    ap.add_argument("--task-mix", help=f"e.g. see=0.6,draw=0.3,ask=0.05,write=0.05 (default {TASK_MIX})")
    # the shipped recipes' settings (assets/world-*/README.md); without them the judge does not learn to read relations
    ap.add_argument("--relation-share", type=float, default=RELATION_SHARE,
                    help="share of VQA examples that ask a relation question (default %(default)s)")  # fmt: skip
    ap.add_argument("--count-share", type=float, default=0.0,
                    help="share of VQA examples that ask data.count_question about a numeracy layout (default %(default)s)")  # fmt: skip
    ap.add_argument("--canonical-share", type=float, default=0.0,
                    help="share of VQA prompt scenes laid out as world-continuous draws them (layout.canonical_layout of a training prompt), the rest random (default %(default)s)")  # fmt: skip
    ap.add_argument("--geometry-weight", type=float, default=GEOMETRY_WEIGHT,
                    help="weight of the relation geometry auxiliary (data.relation_geometry); 0 = off (default %(default)s)")  # fmt: skip
    ap.add_argument("--object-weight", type=float, default=1.0,
                    help="discrete: cross-entropy weight of a drawn object's code against any other token (default %(default)s)")  # fmt: skip
    ap.add_argument("--draw-factors", action="store_true",
                    help="discrete: tie each drawing code's output row in part to its factors (model.FactoredHead)")  # fmt: skip
    ap.add_argument("--ordered-draws", action="store_true",
                    help="discrete: drawing examples put the prompt's entities in raster order where a layout allows it")  # fmt: skip
    ap.add_argument("--cell-object-weight", type=float, default=1.0,
                    help="weight of a cell with an object against an empty one in the cell relevance auxiliary (default %(default)s)")  # fmt: skip
    ap.add_argument("--no-eval", action="store_true",
                    help="skip the card's quick evaluation (python -m eval world measures the model later)")  # fmt: skip
    args = ap.parse_args(argv)
    if problem := _bad_options(args.kind, args.object_weight, args.draw_factors, args.ordered_draws,
                               args.relation_share, args.count_share, args.canonical_share):
        ap.error(problem)
    meta = train(
        args.kind,
        args.out,
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.hidden // 32,
        device=args.device,
        workers=args.workers,
        max_minutes=args.max_minutes,
        init=args.init,
        log_every=args.log_every,
        task_mix=_parse_mix(args.task_mix) if args.task_mix else None,
        relation_share=args.relation_share,
        geometry_weight=args.geometry_weight,
        object_weight=args.object_weight,
        draw_factors=args.draw_factors,
        cell_object_weight=args.cell_object_weight,
        ordered_draws=args.ordered_draws,
        count_share=args.count_share,
        canonical_share=args.canonical_share,
        evaluate=not args.no_eval,
    )
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
