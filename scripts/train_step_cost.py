"""What 20 minutes of this CPU buys the world models' training: seconds per step, measured through the real script.

`python -m scripts.train_step_cost [--steps 12] [--repeats 3] [--threads 1,2] [--sizes 192x6,128x4]` runs
`silmm.world.train.train` for a few steps per setting (the shipped recipes' batch, task mix and relation geometry
target), takes the mean step time from its log (the first three steps left out; the log keeps 0.1 s), reports the median
of the repeats, and prints how many steps fit in 20 minutes next to the steps the shipped checkpoints were trained
for (their cards; all at the discrete or continuous step cost, although the discrete recipe starts from continuous
stage 1). A 1024x1024 fp32 matmul on one thread, timed in the same run, says how fast this machine's core is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from silmm.world.train import train

# steps x batch 48 behind the shipped checkpoints (assets/world-*/README.md)
RECIPE_STEPS = {"continuous": 5364 + 2500, "discrete": 5364 + 3 * 3000}
MIX = {"continuous": {"see": 0.55, "draw": 0.35, "ask": 0.05, "write": 0.05},
       "discrete": {"see": 0.35, "draw": 0.55, "ask": 0.05, "write": 0.05}}  # fmt: skip
BUDGET_MINUTES = 20


def matmul_gflops(n: int = 1024, repeats: int = 9) -> float:
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = []
    for _ in range(repeats + 2):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times[2:]) / 1e9


def step_seconds(kind: str, hidden: int, layers: int, threads: int, steps: int) -> float:
    os.environ["SILMM_THREADS"] = str(threads)  # train() sets torch's thread count from it
    with tempfile.TemporaryDirectory() as out:
        train(kind, out, steps=steps, hidden=hidden, layers=layers, heads=hidden // 32, log_every=1, evaluate=False,
              task_mix=MIX[kind])  # relation share and geometry weight: train()'s defaults, the recipes'
        seconds = [json.loads(line)["seconds"] for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return mean_step(seconds)


def mean_step(seconds: list[float]) -> float:
    """Mean duration of steps 3.. from the run's clock after each step (`seconds[k]`: after step k)."""
    return (seconds[-1] - seconds[2]) / (len(seconds) - 3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sizes", default="192x6,128x4", help="hidden x layers; 192x6 is the shipped size")
    ap.add_argument("--kinds", default="discrete,continuous")
    args = ap.parse_args(argv)
    if args.steps < 5 or args.repeats < 1:
        raise SystemExit(f"--steps {args.steps} --repeats {args.repeats}: need steps >= 5 (the first three are left out), repeats >= 1")
    print(f"matmul 1024^2 fp32, 1 thread: {matmul_gflops():.1f} GFLOP/s")
    print(f"| kind | hidden x layers | threads | s/step (batch 48) | steps in {BUDGET_MINUTES} min | shipped recipe: steps, minutes here |")
    print("|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        for size in args.sizes.split(","):
            hidden, layers = (int(x) for x in size.split("x"))
            for threads in (int(t) for t in args.threads.split(",")):
                s = statistics.median(step_seconds(kind, hidden, layers, threads, args.steps) for _ in range(args.repeats))
                if s <= 0:
                    raise SystemExit(f"{kind} {size}: {args.steps} steps ran within the log's 0.1 s clock; raise --steps")
                recipe = RECIPE_STEPS[kind]
                shipped = f"{recipe}, {recipe * s / 60:.0f}" if size == "192x6" else "-"
                print(f"| {kind} | {size} | {threads} | {s:.3f} | {int(BUDGET_MINUTES * 60 / s)} | {shipped} |", flush=True)


if __name__ == "__main__":
    main()
