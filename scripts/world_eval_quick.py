"""Evaluate world model folders on the held-out and seen splits (used after GPU training to pick checkpoints).

    python -m scripts.world_eval_quick OUT.json DIR [DIR ...] [--device cuda]
"""

import json
import sys

from silmm.adapters.world import WorldAdapter
from silmm.world.evaluate import SPLITS, evaluate, read_prompts

args = [a for a in sys.argv[1:] if not a.startswith("--")]
device = "cuda" if "--device" in sys.argv and sys.argv[sys.argv.index("--device") + 1] == "cuda" else "cpu"
args = [a for a in args if a != "cuda"]
out, dirs = args[0], args[1:]
results = {}
for d in dirs:
    adapter = WorldAdapter.from_pretrained(d, device=device)
    for split in ("heldout", "single"):
        r = evaluate(adapter, read_prompts(SPLITS[split]), images_per_prompt=2, progress=False)
        r.pop("images"), r.pop("per_prompt")
        results[f"{d}:{split}"] = r
        print(d, split, json.dumps({k: r[k] for k in ("overall", "scores", "judge_agreement", "mean_objects")}), flush=True)
json.dump(results, open(out, "w"), indent=1)
