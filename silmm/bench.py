"""`python -m silmm.bench`: sampling and VQA throughput of a world model, measured in one run.

Compares the adapter's batched, KV-cached image-token sampling with a naive loop that draws one sample at a time
and recomputes the whole sequence at every step (no cache), on the same prompts and seeds; reports medians over
repeats and their ratio, plus self-VQA questions per second. Set the thread count with --threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from silmm.adapters import load_adapter
from silmm.adapters.base import Diversity
from silmm.world.tokenizer import N_CELLS

PROMPTS = ["a red circle to the left of a blue square", "two green triangles and one yellow diamond",
           "a striped purple circle and a dotted orange square", "a large diamond behind a small circle"]


@torch.no_grad()
def naive_sample(adapter, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """One sample at a time, full forward per token, no KV cache (the baseline)."""
    from silmm.adapters.world import _DRAW_ALLOWED
    from silmm.world.model import _nucleus

    out = []
    for row, seed in zip(adapter._draw_rows(prompts), seeds):
        g = torch.Generator().manual_seed(seed)
        ids = list(row)
        for _ in range(N_CELLS):
            logits = adapter.base(input_ids=torch.tensor([ids])).logits[0, -1].float()
            ids.append(int(_nucleus(logits.masked_fill(~_DRAW_ALLOWED, float("-inf"))[None], 0.95, 1.0, [g])[0]))
        out.append(ids[-N_CELLS:])
    return torch.tensor(out)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-discrete")
    ap.add_argument("--batch", type=int, default=32, help="images per batched call")
    ap.add_argument("--naive", type=int, default=8, help="images drawn by the naive loop (time is per image)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    adapter = load_adapter(args.model)
    if adapter.kind != "discrete":
        raise SystemExit(f"--model {args.model!r} is {adapter.kind}; the sampling benchmark needs a discrete world model")
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
    seeds = list(range(args.batch))
    div = Diversity("nucleus", top_p=0.95)
    adapter.sample(prompts[:2], seeds[:2], div)  # warm-up
    batched = median_seconds(lambda: adapter.sample(prompts, seeds, div), args.repeats) / args.batch
    naive = median_seconds(lambda: naive_sample(adapter, prompts[: args.naive], seeds[: args.naive]), args.repeats)
    naive /= args.naive
    images = [s.image for s in adapter.sample(prompts, seeds, div)]
    questions = ["is there a red circle?", "are there exactly two objects?", "is the red circle to the left of the blue square?"]
    qi = [img for img in images for _ in questions]
    qq = [q for _ in images for q in questions]
    vqa = median_seconds(lambda: adapter.answer_yes_no(qi, qq), args.repeats)
    result = {
        "model": args.model,
        "threads": args.threads,
        "batched_kv_cached_s_per_image": round(batched, 4),
        "naive_per_sample_s_per_image": round(naive, 4),
        "speedup": round(naive / batched, 2),
        "vqa_questions_per_s": round(len(qq) / vqa, 1),
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
