"""The SILMM iteration driver: prompts -> diverse images -> self-questions -> self-feedback -> preference update.

`run` checks everything it can before any work, then runs `run.iterations` iterations of `run_iteration`,
whose body follows the paper's steps. Each stage reads the previous stage's files and writes its own
atomically (silmm/runio.py), so a run killed at any moment resumes from its last finished stage with
`resume=True` and ends with the same artifacts: finished iterations are re-applied (load_adapter +
merge_adapter, in order), and all randomness is derived from `run.seed`. At the end of each iteration the
LoRA is saved and merged, so the next iteration's reference is the improved model.
With a `measure` hook (world models) every iteration also records the held-out evaluation, the judge's
agreement with the exact oracle on the iteration's own candidates, and how often the self-chosen image is the
oracle's best; iteration 0 is the base model. `summary.json` is rebuilt from the per-iteration metrics.
Under `accelerate launch` every process runs this driver; per-item work is split by batch (`runio.Processes`)
and the files are the same as a single-process run's (tests/test_multiprocess.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from silmm import feedback, pairs, prompts, questions, runio, sampling, train
from silmm.adapters.base import Adapter
from silmm.config import Config, config_diff, config_to_dict, load_config

RESUMABLE_CHANGES = ("run.iterations", "run.log_with")  # may differ between a run and its resume
DISCRETE_MODES, CONTINUOUS_MODES = ("nucleus", "none"), ("dropdiv", "noise", "none")


def check_run(cfg: Config, adapter: Adapter, *, measure: Any = None) -> None:
    """Checks that need the loaded adapter; everything else is checked by the config itself."""
    modes = DISCRETE_MODES if adapter.kind == "discrete" else CONTINUOUS_MODES
    if cfg.sampling.mode not in modes:
        raise ValueError(f"sampling.mode={cfg.sampling.mode!r} does not apply to the {adapter.kind} model {adapter.name!r}; valid: {list(modes)}")  # fmt: skip
    if cfg.sampling.feature_target == "decoded" and (
        adapter.kind != "continuous" or not hasattr(adapter, "decoded_features")
    ):
        raise ValueError(f"sampling.feature_target='decoded' needs a continuous model with decoded_features, which the {adapter.kind} model {adapter.name!r} lacks (valid: ['sampled'])")  # fmt: skip
    if cfg.questions.mode == "gt" and measure is None:
        raise ValueError(f"questions.mode='gt' needs the world's ground truth; model {adapter.name!r} has none (valid: ['self', 'whole'])")  # fmt: skip


def prepare_run_folder(
    cfg: Config, *, resume: bool, procs: runio.Processes = runio.ONE_PROCESS
) -> runio.RunLayout:
    """Create runs/<name>/ with config.yaml; refuse to overwrite without `resume`, or to resume another config."""
    layout = runio.RunLayout(Path(cfg.run.out_dir) / cfg.run.name)
    if layout.root.exists() and not resume:
        raise FileExistsError(f"run folder {layout.root} already exists: pass --resume to continue it, or choose another run.name")  # fmt: skip
    if layout.config.exists():
        diff = [d for d in config_diff(load_config(layout.config), cfg) if d not in RESUMABLE_CHANGES]
        if diff:
            raise ValueError(f"--resume: the config differs from {layout.config} in {diff}; only {list(RESUMABLE_CHANGES)} may change")  # fmt: skip
    procs.wait()  # every process has checked the folder before the main one creates it
    if procs.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        runio.write_yaml(layout.config, config_to_dict(cfg))
    procs.wait()
    return layout


def _load_images(iter_dir: Path, rows: list[dict]) -> list[Image.Image]:
    """Candidates are judged from their PNG files, so a resumed run sees exactly the same pixels."""
    images = []
    for row in rows:
        with Image.open(iter_dir / row["image"]) as im:
            images.append(im.convert("RGB"))
    return images


def _timed(timings: dict, stage: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    out = fn()
    timings[stage] = round(time.perf_counter() - start, 3)
    return out


def measure_candidates(measure: Any, candidates: list[feedback.Candidate], images: list[Image.Image]) -> dict:
    """Judge-vs-oracle agreement on this iteration's candidates, and self-best == oracle-best rate."""
    agree: dict[str, list[bool]] = {}
    question_type = getattr(measure, "question_type", None)  # optional part of the hook
    for cand, image in zip(candidates, images, strict=True):
        truth = measure.oracle_answers(image, cand.questions)
        for q, y, n, t in zip(cand.questions, cand.p_yes, cand.p_no, truth, strict=True):
            if t is not None:
                agree.setdefault("overall", []).append((y > n) == t)
                if question_type is not None:
                    agree.setdefault(question_type(q), []).append((y > n) == t)
    by_prompt: dict[int, list[tuple[feedback.Candidate, Image.Image]]] = {}
    for cand, image in zip(candidates, images, strict=True):
        by_prompt.setdefault(cand.prompt_index, []).append((cand, image))
    hits, unmeasurable = [], 0
    for group in by_prompt.values():
        try:  # a self-written prompt outside the world's grammar cannot be graded: counted, not fatal
            oracle = [measure.oracle_score(c.prompt, im) for c, im in group]
        except ValueError:
            oracle = [None]
        if None in oracle:
            unmeasurable += 1
            continue
        best = min(range(len(group)), key=lambda i: (-group[i][0].score, group[i][0].k))
        hits.append(oracle[best] >= max(oracle) - 1e-9)
    return {
        "judge_agreement": {k: sum(v) / len(v) for k, v in sorted(agree.items())},
        "self_best_is_oracle_best": sum(hits) / len(hits) if hits else None,
        "prompts_unmeasurable": unmeasurable,
    }


def replayed_pairs(
    layout: runio.RunLayout, it: int, replay: int, first_index: int
) -> tuple[list[pairs.PreferencePair], dict[str, Any]]:
    """NOT in the paper (`pairs.replay`): the pairs of iterations it-replay .. it-1, with their candidates' tensors.

    Their candidates are renumbered from `first_index` on (chosen, rejected, chosen, ...), so they can join this
    iteration's pairs and tensors in one `train.PairData`. Every process reads the same finished files.
    """
    found: list[pairs.PreferencePair] = []
    tensors: dict[str, Any] = {}
    for j in range(max(1, it - replay), it):
        source = runio.load_tensors(layout.sample_tensors(j))
        for row in runio.read_jsonl(layout.pairs(j)):
            pair = pairs.PreferencePair(**row)
            chosen, rejected = first_index + 2 * len(found), first_index + 2 * len(found) + 1
            for new, old in ((chosen, pair.chosen), (rejected, pair.rejected)):
                for k in ("ids", "feats"):
                    if f"{old}.{k}" in source:
                        tensors[f"{new}.{k}"] = source[f"{old}.{k}"]
            found.append(dataclasses.replace(pair, chosen=chosen, rejected=rejected))
    return found, tensors


def _reapply(adapter: Adapter, path: Path) -> None:
    adapter.load_adapter(str(path))
    adapter.merge_adapter()


def _todo(procs: runio.Processes, path: Path) -> bool:
    """Whether a stage must run: the main process decides, so every process takes the same branch."""
    return procs.main_says(not path.exists())


def run_iteration(
    cfg: Config,
    adapter: Adapter,
    layout: runio.RunLayout,
    it: int,
    *,
    measure: Any = None,
    judge: Any = None,
    user_prompts: list[str] | None = None,
    accelerator: Any = None,
    progress: bool = False,
    procs: runio.Processes = runio.ONE_PROCESS,
) -> dict:
    """One SILMM iteration; every stage whose output file exists is loaded instead of recomputed.

    With several processes, prompts, questions, sampling and feedback are split over them by batch and
    gathered, training is data parallel; the main process alone builds the pairs, measures, and writes the
    run files (each process saves the PNGs it drew); the others wait at `procs.wait()` before reading them.
    """
    d = layout.iter_dir(it)
    d.mkdir(parents=True, exist_ok=True)
    timings = runio.read_json(layout.timings(it)) if layout.timings(it).exists() else {}
    metrics: dict[str, Any] = {"iteration": it}

    # 1. prompts: self-written per category (+ a user file), deduplicated. Their questions (paper step 3)
    #    depend only on the prompt and are asked here, so a prompt the question step cannot handle
    #    (empty question list) is dropped and counted before any image is drawn.
    if _todo(procs, layout.prompts(it)):

        def write_prompts() -> list[dict]:
            recs = prompts.write_prompts(
                adapter,
                categories=cfg.prompts.categories,
                per_category=cfg.prompts.per_category,
                seed=prompts.derive_seed(cfg.run.seed, it, "prompts"),
                user_prompts=user_prompts,
                replace=cfg.prompts.file_mode == "replace",
                progress=progress,
                procs=procs,
            )
            qs = questions.ask(
                adapter,
                [r.prompt for r in recs],
                mode=cfg.questions.mode,
                whole_template=cfg.questions.whole_template,
                gt_questions=measure.gt_questions if measure is not None else None,
                batch_size=cfg.questions.batch_size,
                progress=progress,
                procs=procs,
            )
            rows = [dataclasses.asdict(r) | {"questions": q} for r, q in zip(recs, qs, strict=True)]
            return [row | {"kept": bool(row["questions"])} for row in rows]

        rows = _timed(timings, "prompts", write_prompts)
        if procs.is_main:
            runio.write_jsonl(layout.prompts(it), rows)
            runio.write_json(layout.timings(it), timings)
        procs.wait()
    written = runio.read_jsonl(layout.prompts(it))
    prompt_rows = [r for r in written if r["kept"]]
    n_written = len(written)
    metrics |= {
        "prompts_written": n_written,
        "prompts_dropped": n_written - len(prompt_rows),
        "prompts": len(prompt_rows),
    }
    if not prompt_rows:
        if cfg.prompts.file_mode == "replace":
            raise ValueError(f"prompt file {cfg.prompts.file}: no prompt could be turned into questions (no usable prompts)")  # fmt: skip
        return metrics | {
            "stopped": "no usable prompts (every prompt got an empty question list)",
            "seconds": timings,
        }

    # 2. diverse generation: N candidates per prompt, each with its own derived seed
    if _todo(procs, layout.samples(it)):
        records, tensors = _timed(
            timings,
            "sampling",
            lambda: sampling.draw(
                adapter, [r["prompt"] for r in prompt_rows], cfg.sampling,
                run_seed=cfg.run.seed, iteration=it, iter_dir=d, progress=progress, procs=procs,
            ),
        )  # fmt: skip
        if procs.is_main:
            runio.save_tensors(layout.sample_tensors(it), tensors)
            runio.write_jsonl(layout.samples(it), [dataclasses.asdict(r) for r in records])
            runio.write_json(layout.timings(it), timings)
        procs.wait()
    sample_rows = runio.read_jsonl(layout.samples(it))
    tensors = runio.load_tensors(layout.sample_tensors(it))

    # 3./4. decompositional questions (from step 1) answered about every candidate: VQA self-feedback
    if _todo(procs, layout.candidates(it)):

        def judge_candidates() -> list[dict]:
            images = _load_images(d, sample_rows)
            qs = [prompt_rows[r["prompt_index"]]["questions"] for r in sample_rows]
            yes, no = feedback.answer_all(
                judge or adapter, images, qs, batch_size=cfg.feedback.batch_size,
                desc=f"iter {it} feedback", progress=progress, procs=procs,
            )  # fmt: skip
            rule = {"rule": cfg.feedback.rule, "renormalize": cfg.feedback.renormalize}
            return [
                r
                | {
                    "questions": q,
                    "p_yes": y,
                    "p_no": n,
                    "score": feedback.score(y, n, seed=r["seed"], **rule),
                }
                for r, q, y, n in zip(sample_rows, qs, yes, no, strict=True)
            ]

        rows = _timed(timings, "feedback", judge_candidates)
        if procs.is_main:
            runio.write_jsonl(layout.candidates(it), rows)
            runio.write_json(layout.timings(it), timings)
        procs.wait()
    candidates = [feedback.Candidate(**r) for r in runio.read_jsonl(layout.candidates(it))]
    scores = [c.score for c in candidates]
    metrics |= {
        "candidates": len(candidates),
        "mean_score": sum(scores) / len(scores),
        "judge": cfg.feedback.judge or "self",
    }

    # 5. preference update: best-vs-worst pairs (reference outputs cached now), LoRA DPO / KC-DPO, merge.
    #    With `pairs.replay`, earlier iterations' pairs join them; the reference is this iteration's model.
    replayed, replay_tensors = replayed_pairs(
        layout, it, cfg.pairs.replay, first_index=1 + max(r["index"] for r in sample_rows)
    )
    if _todo(procs, layout.pairs(it)):

        def build_pairs() -> list[pairs.PreferencePair]:
            found = pairs.make_pairs(candidates, per_prompt=cfg.pairs.per_prompt, min_gap=cfg.pairs.min_gap)
            if found:
                refs = pairs.reference_outputs(
                    adapter, found + replayed, tensors | replay_tensors,
                    batch_size=cfg.train.batch_size, progress=progress,
                )  # fmt: skip
                runio.save_tensors(layout.pair_tensors(it), refs)
            return found

        if procs.is_main:  # one forward pass per pair: not worth splitting
            found = _timed(timings, "pairs", build_pairs)
            runio.write_jsonl(layout.pairs(it), [dataclasses.asdict(p) for p in found])
            runio.write_json(layout.timings(it), timings)
        procs.wait()
    pair_list = [pairs.PreferencePair(**r) for r in runio.read_jsonl(layout.pairs(it))]
    metrics["pairs"] = len(pair_list)
    if cfg.pairs.replay:
        metrics["pairs_replayed"] = len(replayed)
    if not pair_list:
        return metrics | {"stopped": f"no pairs (no prompt had candidates with a score gap > 0 and >= pairs.min_gap={cfg.pairs.min_gap})", "seconds": timings}  # fmt: skip
    if _todo(procs, layout.adapter(it)):
        data = train.PairData(
            pair_list + replayed, tensors | replay_tensors, runio.load_tensors(layout.pair_tensors(it))
        )
        train_metrics = _timed(
            timings,
            "train",
            lambda: train.preference_update(
                adapter, data, lora=cfg.lora, dpo=cfg.dpo, train=cfg.train,
                seed=prompts.derive_seed(cfg.run.seed, it, "train"), accelerator=accelerator,
                progress=progress, desc=f"iter {it} train",
            ),
        )  # fmt: skip
        if procs.is_main:  # every process holds the same LoRA
            with runio.atomic_dir(layout.adapter(it)) as tmp:
                adapter.save_adapter(str(tmp))
                runio.write_json(tmp / "train_metrics.json", train_metrics)
            runio.write_json(layout.timings(it), timings)
        procs.wait()
        adapter.merge_adapter()
    else:
        _reapply(adapter, layout.adapter(it))
    metrics["train"] = runio.read_json(layout.adapter(it) / "train_metrics.json")

    # measurement (world only, main process): the judge against the oracle, then the improved model on held-out
    if measure is not None and procs.is_main:
        images = _load_images(d, [dataclasses.asdict(c) for c in candidates])
        metrics |= _timed(timings, "measure", lambda: measure_candidates(measure, candidates, images))
        if cfg.run.heldout_eval:
            metrics["eval"] = _timed(timings, "eval", lambda: measure.evaluate(adapter))
    return metrics | {"seconds": timings}


def _summary_line(m: dict) -> str:
    parts = [f"iter {m['iteration']}"]
    if "prompts" in m:
        parts.append(f"prompts {m['prompts']} (dropped {m['prompts_dropped']}) pairs {m.get('pairs', 0)}")
    if "train" in m:
        parts.append(f"margin {m['train']['reward_margin']:.3f} acc {m['train']['reward_accuracy']:.2f}")
    if m.get("eval"):
        parts.append(f"held-out overall {m['eval']['overall']:.3f}")
    if "overall" in m.get("judge_agreement", {}):
        parts.append(f"judge agreement {m['judge_agreement']['overall']:.2f}")
    if "stopped" in m:
        parts.append(f"STOPPED: {m['stopped']}")
    return " | ".join(parts) + f" | {sum(m.get('seconds', {}).values()):.1f}s"


def _numeric(prefix: str, obj: Any) -> dict[str, float]:
    """Flatten numeric leaves for accelerate trackers: {"train/loss": 0.6, ...}."""
    if isinstance(obj, dict):
        return {
            k: v
            for key, val in obj.items()
            for k, v in _numeric(f"{prefix}/{key}" if prefix else key, val).items()
        }
    return {prefix: float(obj)} if isinstance(obj, int | float) and not isinstance(obj, bool) else {}


def make_accelerator(cfg: Config) -> Any:
    """The run's Accelerator, made before the run folder: it knows which process this is."""
    from accelerate import Accelerator

    log_with = None if cfg.run.log_with == "none" else cfg.run.log_with
    project_dir = Path(cfg.run.out_dir) / cfg.run.name / "logs"
    return Accelerator(
        mixed_precision=cfg.train.mixed_precision, log_with=log_with, project_dir=str(project_dir)
    )


def run(
    cfg: Config,
    adapter: Adapter,
    *,
    resume: bool = False,
    measure: Any = None,
    judge: Any = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    accelerator: Any = None,
) -> list[dict]:
    """Run (or resume) a SILMM run; returns the summary, one entry per iteration (0 = base model).

    Under `accelerate launch` with several processes every process calls this; the main one logs and writes.
    `accelerator`: the one `make_accelerator(cfg)` returned, if it was made earlier (before loading the model).
    """
    check_run(cfg, adapter, measure=measure)
    user_prompts = prompts.read_prompt_file(cfg.prompts.file) if cfg.prompts.file else None
    accelerator = accelerator or make_accelerator(cfg)
    procs = runio.Processes(accelerator.process_index, accelerator.num_processes)
    progress = progress and procs.is_main
    layout = prepare_run_folder(cfg, resume=resume, procs=procs)
    if cfg.run.log_with != "none":
        flat = {f"{s}.{k}": (v if isinstance(v, int | float | str | bool) else str(v)) for s, sec in config_to_dict(cfg).items() for k, v in sec.items()}  # fmt: skip
        accelerator.init_trackers(cfg.run.name, config=flat)  # main process only
    summary: list[dict] = []

    def finish(path: Path, metrics: dict) -> None:
        """Main: write the iteration's metrics and the summary, log; others: read the metrics once written."""
        if procs.is_main:
            runio.write_json(path, metrics)
            runio.write_json(layout.summary, [*summary, metrics])
            log(_summary_line(metrics))
            accelerator.log(_numeric("", metrics), step=metrics["iteration"])
        procs.wait()
        summary.append(metrics if procs.is_main else runio.read_json(path))

    if not _todo(procs, layout.metrics(0)):
        summary.append(runio.read_json(layout.metrics(0)))
    else:
        base: dict[str, Any] = {"iteration": 0, "seconds": {}}
        if measure is not None and cfg.run.heldout_eval and procs.is_main:
            base["eval"] = _timed(base["seconds"], "eval", lambda: measure.evaluate(adapter))
        finish(layout.metrics(0), base)
    for it in range(1, cfg.run.iterations + 1):
        if not _todo(procs, layout.metrics(it)):  # finished before a crash: re-apply its adapter, in order
            metrics = runio.read_json(layout.metrics(it))
            if "stopped" not in metrics:
                _reapply(adapter, layout.adapter(it))
            summary.append(metrics)
        else:
            metrics = run_iteration(
                cfg, adapter, layout, it, measure=measure, judge=judge, user_prompts=user_prompts,
                accelerator=accelerator, progress=progress, procs=procs,
            )  # fmt: skip
            finish(layout.metrics(it), metrics)
            metrics = summary[-1]
        if "stopped" in metrics:
            break
    if procs.is_main:
        runio.write_json(layout.summary, summary)
    accelerator.end_training()
    return summary
