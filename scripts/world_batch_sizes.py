"""How wide the world loop's sampling and feedback calls should be: time per image / pair and whether results change.

`python -m scripts.world_batch_sizes [--model world-discrete] [--sampling 32,64,128,256] [--feedback 64,128,256]`
draws 16 candidates (`--candidates`, with the shipped config's diversity) for each of 16 seen prompts (`--prompts`)
in calls of each sampling batch size, then answers every prompt's own questions about its candidates
(`feedback.answer_all`) in calls of each feedback batch size. It prints the median of `--repeats` per size, the
ratio to the first size (measured in the same run), and whether the samples (image codes or features) and the
answers equal those of the first size. One torch thread. world-continuous's DropDiv draws each sample's mask over
the batch's padded width, so its samples depend on the sampling batch size (the shipped config keeps 32);
world-discrete's do not.
"""

from __future__ import annotations

import argparse
import json

import torch

from silmm.adapters import load_adapter
from silmm.bench import median_seconds
from silmm.config import load_config
from silmm.feedback import answer_all
from silmm.sampling import diversity_from
from silmm.world.evaluate import SPLITS, read_prompts
from silmm.world.questions import decompose


def timed(fn, repeats: int):
    """(median seconds over `repeats` calls, the last call's result)."""
    last = []
    return median_seconds(lambda: last.append(fn()), repeats), last[-1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="world-discrete")
    ap.add_argument("--sampling", default="32,64,128,256", help="sampling batch sizes; the first is the baseline")
    ap.add_argument("--feedback", default="64,128,256", help="feedback batch sizes; the first is the baseline")
    ap.add_argument("--prompts", type=int, default=16, help="seen prompts")
    ap.add_argument("--candidates", type=int, default=16, help="candidates per prompt (the shipped sampling.n)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    adapter = load_adapter(args.model)
    seen = read_prompts(SPLITS["seen"])  # spread over the split: every category, prompts of different lengths
    prompts = [p for p in seen[:: max(1, len(seen) // args.prompts)][: args.prompts] for _ in range(args.candidates)]
    seeds = list(range(len(prompts)))
    div = diversity_from(load_config(f"configs/{args.model}.yaml").sampling)  # the shipped config's sampling

    def sample(size: int) -> list:
        return [s for i in range(0, len(prompts), size) for s in adapter.sample(prompts[i : i + size], seeds[i : i + size], div)]  # fmt: skip

    result: dict = {"model": args.model, "images": len(prompts), "sampling": [], "feedback": []}
    first = base = None
    for size in map(int, args.sampling.split(",")):
        seconds, samples = timed(lambda size=size: sample(size), args.repeats)
        out = torch.stack([s.ids if s.ids is not None else s.feats for s in samples])
        first = out if first is None else first
        base = seconds if base is None else base
        result["sampling"].append({"batch": size, "ms_per_image": round(1000 * seconds / len(prompts), 2),
                                   "speedup": round(base / seconds, 2), "same_samples": bool(torch.equal(out, first))})  # fmt: skip
    images = [s.image for s in samples]
    questions = [[q.text for q in decompose(p)] for p in prompts]
    n_pairs, first, base = sum(map(len, questions)), None, None
    for size in map(int, args.feedback.split(",")):
        seconds, (yes, no) = timed(lambda size=size: answer_all(adapter, images, questions, batch_size=size), args.repeats)  # fmt: skip
        flat = [v for rows in (yes, no) for row in rows for v in row]
        first = flat if first is None else first
        base = seconds if base is None else base
        result["feedback"].append({"batch": size, "ms_per_pair": round(1000 * seconds / n_pairs, 3),
                                   "speedup": round(base / seconds, 2), "max_abs_diff": max(abs(a - b) for a, b in zip(flat, first))})  # fmt: skip
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
