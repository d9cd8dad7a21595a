"""`python -m silmm.bench`: sampling and VQA throughput of a world model, measured in one run.

Compares the adapter's batched, KV-cached image-token sampling with a naive loop that draws one sample at a time
and recomputes the whole sequence at every step (no cache), on the same prompts and seeds; reports medians over
repeats and their ratio. Self-VQA is timed as the loop's feedback asks it (each prompt's own decomposed questions
about its candidates), with each question's prefix shared across the images asked it against one whole sequence per
pair, in the same run. Set the thread count with --threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from types import SimpleNamespace

import torch

from silmm.adapters import load_adapter
from silmm.adapters.base import Diversity
from silmm.feedback import answer_all
from silmm.world.questions import decompose
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
    ap.add_argument("--vqa-batch", type=int, default=64, help="pairs per VQA call (the shipped feedback.batch_size)")
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
    drawn = sorted(adapter.sample(prompts, seeds, div), key=lambda s: PROMPTS.index(s.prompt))  # prompt by prompt,
    images = [s.image for s in drawn]  # as the loop orders its candidates
    questions = [[q.text for q in decompose(s.prompt)] for s in drawn]  # each prompt's own questions

    def feedback(share: bool):  # as the loop asks them: in calls of feedback.batch_size pairs
        judge = SimpleNamespace(answer_yes_no=partial(adapter.answer_yes_no, share_prefix=share))
        return answer_all(judge, images, questions, batch_size=args.vqa_batch)

    (whole_y, whole_n), (shared_y, shared_n) = feedback(False), feedback(True)  # warm-up (parses the images)
    vqa = {}
    for _ in range(args.repeats):  # the two paths alternate, so that drift on a shared machine hits both
        for share in (False, True):
            vqa.setdefault(share, []).append(median_seconds(partial(feedback, share), 1))
    whole, shared = statistics.median(vqa[False]), statistics.median(vqa[True])
    n_pairs = sum(map(len, questions))
    diff = max(abs(a - b) for rows in ((whole_y, shared_y), (whole_n, shared_n)) for ra, rb in zip(*rows) for a, b in zip(ra, rb))
    result = {
        "model": args.model,
        "threads": args.threads,
        "batched_kv_cached_s_per_image": round(batched, 4),
        "naive_per_sample_s_per_image": round(naive, 4),
        "speedup": round(naive / batched, 2),
        "vqa_pairs": n_pairs,
        "vqa_batch": args.vqa_batch,
        "vqa_questions_per_s": round(n_pairs / shared, 1),
        "vqa_whole_sequences_questions_per_s": round(n_pairs / whole, 1),
        "vqa_shared_prefix_speedup": round(whole / shared, 2),
        "vqa_max_abs_diff": diff,
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
