"""Per-category change between two world evaluations, with its standard error:
`python -m scripts.paired_change BASE_DIR NEW_DIR [NEW_DIR ...]`.

Each DIR is an `--out` folder of `python -m eval world` (its per_prompt.jsonl). Both evaluations must have drawn
every prompt with the same seeds (same `--images-per-prompt`), so the change of a prompt's strict rate is a paired
difference. Printed per category: the mean change over the category's prompts ± its standard error (sample
standard deviation / sqrt(prompts)).
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import fmean, stdev

from silmm import runio


def _per_prompt(folder: Path) -> dict[str, dict]:
    return {r["prompt"]: r for r in runio.read_jsonl(folder / "per_prompt.jsonl")}


def paired_change(base: Path, new: Path) -> dict[str, tuple[float, float]]:
    """category -> (mean change of the strict rate, standard error), over the prompts of `base`."""
    old, now = _per_prompt(base), _per_prompt(new)
    diffs: dict[str, list[float]] = defaultdict(list)
    for prompt, b in old.items():
        n = now.get(prompt)
        if n is None or n["seeds"] != b["seeds"]:
            raise ValueError(f"{new} did not draw {prompt!r} with the seeds {b['seeds']} of {base}")
        diffs[b["category"]].append(sum(n["strict"]) / len(n["strict"]) - sum(b["strict"]) / len(b["strict"]))
    return {
        cat: (fmean(xs), stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0) for cat, xs in sorted(diffs.items())
    }


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    for new in argv[1:]:
        change = paired_change(Path(argv[0]), Path(new))
        print(new + " | " + " | ".join(f"{c} {m:+.3f} ± {se:.3f}" for c, (m, se) in change.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
