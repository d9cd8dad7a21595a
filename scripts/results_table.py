"""Markdown tables for docs/RESULTS.md from run folders: `python -m scripts.results_table runs/NAME [runs/OTHER ...]`.

Per run: held-out strict alignment per category for iteration 0 (base) .. k, overall, facts-only overall, mean
drawn objects, the self-judge's agreement with the oracle on that iteration's candidates, how often the
self-chosen image is the oracle's best, and the DPO reward margin / accuracy.
"""

import json
import sys
from pathlib import Path

from silmm.world.grammar import CATEGORIES


def fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table(run: Path) -> str:
    summary = json.loads((run / "summary.json").read_text())
    cats = [c for c in (*CATEGORIES, "single") if any(c in m.get("eval", {}).get("scores", {}) for m in summary)]
    head = ["iter", *cats, "overall", "facts-only", "objects", "judge agr.", "self=oracle best", "margin", "pair acc"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in summary:
        ev = m.get("eval", {})
        fo = ev.get("facts_only", {})
        fo_overall = sum(fo.get(c, 0) for c in cats if c != "single") / max(1, len([c for c in cats if c != "single"]))
        tr = m.get("train", {})
        cells = [m["iteration"], *[ev.get("scores", {}).get(c) for c in cats], ev.get("overall"),
                 fo_overall if fo else None, ev.get("mean_objects"), m.get("judge_agreement", {}).get("overall"),
                 m.get("self_best_is_oracle_best"), tr.get("reward_margin"), tr.get("reward_accuracy")]
        rows.append("| " + " | ".join(fmt(c) for c in cells) + " |")
        if "stopped" in m:
            rows.append(f"\nstopped: {m['stopped']}")
    secs = sum(sum(m.get("seconds", {}).values()) for m in summary)
    return f"**{run.name}** ({secs / 60:.1f} min of stage time)\n\n" + "\n".join(rows)


if __name__ == "__main__":
    print("\n\n".join(table(Path(p)) for p in sys.argv[1:]))
