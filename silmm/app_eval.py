"""The Evaluate tab's work: a model (or a run at iteration k) on a benchmark, results saved in the runs folder.

The world benchmark runs in-process on the backend's cached model; T2I-CompBench++ and DPG-Bench run
`python -m eval` in a subprocess (real judges; the app never imports eval/). Results are written under
`<runs_dir>/_eval/<benchmark>/<label>/` (results.json, results.csv; world: per_prompt.jsonl).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from pathlib import Path

from silmm import runio
from silmm.app_backend import ROOT, Backend, InputError, check_range, is_world
from silmm.config import load_config

EVAL_DIR = "_eval"  # under the runs folder
BENCHMARKS = ("world", "t2i-compbench", "dpg-bench")


def evaluate(be: Backend, benchmark: str, model: str, adapter: str = "", *, categories: list[str] | None = None,
             limit: int = 20, images_per_prompt: int = 2) -> dict:  # fmt: skip
    """Evaluate a model (optionally a run at iteration k: adapter = '<run>/iter_<k>'); writes results under
    `<runs_dir>/_eval/<benchmark>/<label>/` (results.json, results.csv; world: per_prompt.jsonl)."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"benchmark {benchmark!r} is not one of {list(BENCHMARKS)}")
    limit = check_range("limit", limit)
    images_per_prompt = check_range("images_per_prompt", images_per_prompt)
    run_root, upto, weights = None, 0, ""
    if adapter:
        run_name, _, it = adapter.rpartition("/iter_")
        run_root = be.run_root(run_name)
        if not it.isdigit() or int(it) not in be.iterations_with_adapter(run_name):
            raise InputError(f"adapter {adapter!r}: choose '<run>/iter_<k>' with k in {be.iterations_with_adapter(run_name)}")  # fmt: skip
        upto = int(it)
        cfg = load_config(run_root / "config.yaml")
        if model and model != cfg.model.name:
            raise InputError(f"adapter {adapter!r} belongs to model {cfg.model.name!r}, not {model!r}")
        model, weights = cfg.model.name, cfg.model.weights
    else:
        be.check_model(model)
    label = (f"{run_root.name}-iter_{upto}" if run_root else Path(model).name).replace("/", "_")
    out = be.runs_dir / EVAL_DIR / benchmark / label
    if benchmark == "world":
        res = _evaluate_world(be, model, weights, run_root, upto, categories, limit, images_per_prompt, out)
    else:
        res = _evaluate_real(benchmark, model, run_root, upto, categories, limit, out)
    return {"label": label, "dir": out, "results": res}


def _evaluate_world(
    be: Backend, model, weights, run_root, upto, categories, limit, images_per_prompt, out
) -> dict:
    from silmm.world.evaluate import default_prompts
    from silmm.world.evaluate import evaluate as evaluate_world
    from silmm.world.grammar import ALL_CATEGORIES, classify, parse_prompt

    if not is_world(model):
        raise InputError(f"the world benchmark needs a world model; {model!r} is not one (use t2i-compbench or dpg-bench)")  # fmt: skip
    categories = list(categories or ALL_CATEGORIES)
    bad = [c for c in categories if c not in ALL_CATEGORIES]
    if bad:
        raise InputError(f"categories {bad} are not world categories; valid: {list(ALL_CATEGORIES)}")
    by_cat: dict[str, list[str]] = {}
    for p in default_prompts():
        by_cat.setdefault(classify(parse_prompt(p)), []).append(p)
    prompts = [p for c in categories for p in by_cat.get(c, [])[:limit]]
    adapter, lock = be.adapter(model, weights, run_root, upto)
    with lock:
        res = evaluate_world(adapter, prompts, images_per_prompt=images_per_prompt, progress=True)
    res.pop("images")
    per_prompt = res.pop("per_prompt")
    res |= {
        "label": out.name,
        "limit_per_category": limit,
        "categories": categories,
        "created": time.time(),
    }
    rows = [
        {"category": c, "strict": v, "facts_only": res["facts_only"][c]} for c, v in res["scores"].items()
    ]
    out.mkdir(parents=True, exist_ok=True)
    runio.write_jsonl(out / "per_prompt.jsonl", per_prompt)
    runio.write_text(out / "results.csv", _csv(rows))
    runio.write_json(out / "results.json", res)
    return res


def _evaluate_real(benchmark, model, run_root, upto, categories, limit, out) -> dict:
    """`python -m eval <benchmark>` in a subprocess (real judges; the app never imports eval/)."""
    if is_world(model):
        raise InputError(f"{benchmark} scores real images with real judges; {model!r} is a world model (use 'world')")  # fmt: skip
    # iteration k > 1: silmm.adapters.load_adapter merges iterations 1..k-1 before applying iter_<k>/adapter
    argv = [
        sys.executable,
        "-m",
        "eval",
        benchmark,
        "--model",
        model,
        "--limit",
        str(limit),
        "--out",
        str(out),
    ]
    if run_root is not None:
        argv += ["--adapter", str(runio.RunLayout(run_root).adapter(upto))]
    if benchmark == "t2i-compbench" and categories:
        argv += ["--categories", ",".join(categories)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")]
        raise InputError(
            f"{benchmark} failed: {(errors or lines or ['exit status ' + str(proc.returncode)])[-1]}"
        )
    return runio.read_json(out / "results.json") | {"label": out.name}


def saved_results(runs_dir: Path) -> list[str]:
    """'<benchmark>/<label>' of every finished evaluation in the runs folder, newest first."""
    found = sorted((runs_dir / EVAL_DIR).glob("*/*/results.json"), key=lambda p: -p.stat().st_mtime)
    return [f"{p.parent.parent.name}/{p.parent.name}" for p in found]


def load_results(runs_dir: Path, key: str) -> dict:
    path = (runs_dir / EVAL_DIR / key / "results.json").resolve()
    if not path.is_relative_to(runs_dir / EVAL_DIR) or not path.is_file():
        raise InputError(f"no saved result {key!r}; saved: {saved_results(runs_dir)}")
    return runio.read_json(path) | {"label": key}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["category"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
