"""World evaluation: exact alignment of a model's drawings, and how right its own judgement of them is.

For every prompt, K images with fixed seeds (prompt index i, image k -> seed 1000 * i + k). The oracle parses each
image: *strict* = every fact holds and nothing else is drawn, *facts_only* = the prompt's facts hold (extras
allowed). The model then answers the ground-truth decomposition of the prompt about each of its images; its answer
(p_yes > p_no) is compared with the oracle's, per question type (`judge_agreement`). The loop calls `evaluate`
after every iteration; `python -m eval world` wraps it.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from silmm.adapters.base import Diversity
from silmm.world.grammar import CATEGORIES, ParseError, classify, parse_prompt
from silmm.world.oracle import SceneView, verdict
from silmm.world.questions import answer, decompose

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "world"
SPLITS = {"heldout": ASSETS / "heldout.txt", "seen": ASSETS / "seen.txt", "single": ASSETS / "single.txt"}
DEFAULT_DIVERSITY = {
    "discrete": Diversity("nucleus", top_p=0.95, temperature=1.0),
    "continuous": Diversity("none"),
}


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines, undecodable bytes and prompts outside the world are errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"prompt file {str(path)!r} line {line} is not UTF-8") from err
    prompts = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            raise ValueError(f"prompt file {str(path)!r} line {n} is blank; remove it")
        try:
            parse_prompt(line)
        except ParseError as err:
            raise ValueError(f"prompt file {str(path)!r} line {n}: {err}") from err
        prompts.append(line.strip())
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} has no prompts")
    return prompts


def default_prompts() -> list[str]:
    return read_prompts(SPLITS["heldout"]) + read_prompts(SPLITS["single"])


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 4) if values else float("nan")


def evaluate(
    adapter,
    prompts: list[str],
    *,
    images_per_prompt: int = 4,
    diversity: Diversity | None = None,
    batch_size: int = 64,
    progress: bool = True,
    keep_images: int = 0,
    keep_answers: bool = False,
) -> dict:
    """Results dict (see module docstring); `per_prompt` holds one record per prompt, `images` the first
    `keep_images` prompts' images for a grid; with `keep_answers`, `answers` holds one (question, type, true
    answer, judge's answer) per question asked."""
    t0 = time.time()
    diversity = diversity or DEFAULT_DIVERSITY[adapter.kind]
    jobs = [(i, k, p) for i, p in enumerate(prompts) for k in range(images_per_prompt)]
    records: dict[int, dict] = {}
    agree: dict[str, list[float]] = defaultdict(list)
    kept: list[list[Image.Image]] = [[] for _ in range(min(keep_images, len(prompts)))]
    answers: list[tuple[str, str, bool, bool]] = []
    bar = tqdm(total=len(jobs), desc=f"eval world ({adapter.name})", disable=not progress, unit="img")
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        samples = adapter.sample([p for _, _, p in chunk], [1000 * i + k for i, k, _ in chunk], diversity)
        qs_images, qs_text, qs_truth, qs_type = [], [], [], []
        for (i, k, p), s in zip(chunk, samples):
            spec = parse_prompt(p)
            view = SceneView.from_image(s.image)
            v = verdict(spec, view)
            rec = records.setdefault(
                i,
                {
                    "prompt": p,
                    "category": classify(spec),
                    "strict": [],
                    "facts_only": [],
                    "n_objects": [],
                    "seeds": [],
                },
            )
            rec["strict"].append(v.strict)
            rec["facts_only"].append(v.facts_only)
            rec["n_objects"].append(v.n_objects)
            rec["seeds"].append(1000 * i + k)
            if i < len(kept):
                kept[i].append(s.image)
            for q in decompose(spec):
                qs_images.append(s.image)
                qs_text.append(q.text)
                qs_truth.append(answer(q.text, view))
                qs_type.append(q.type)
        p_yes, p_no = adapter.answer_yes_no(qs_images, qs_text)
        for said, truth, qtype in zip((p_yes > p_no).tolist(), qs_truth, qs_type):
            agree[qtype].append(float(said == truth))
            agree["overall"].append(float(said == truth))
        if keep_answers:
            answers.extend(zip(qs_text, qs_type, qs_truth, (p_yes > p_no).tolist()))
        bar.update(len(chunk))
    bar.close()
    per_cat: dict[str, dict[str, list]] = defaultdict(lambda: {"strict": [], "facts_only": []})
    for rec in records.values():
        per_cat[rec["category"]]["strict"].extend(map(float, rec["strict"]))
        per_cat[rec["category"]]["facts_only"].extend(map(float, rec["facts_only"]))
    scores = {c: _mean(v["strict"]) for c, v in sorted(per_cat.items())}
    compositional = [c for c in scores if c in CATEGORIES]
    res = {
        "benchmark": "world",
        "model": adapter.name,
        "scores": scores,
        "overall": _mean([scores[c] for c in compositional])
        if compositional
        else scores.get("single", float("nan")),
        "overall_over": compositional or ["single"],
        "facts_only": {c: _mean(v["facts_only"]) for c, v in sorted(per_cat.items())},
        "judge_agreement": {t: _mean(v) for t, v in sorted(agree.items())},
        "mean_objects": _mean([n for r in records.values() for n in r["n_objects"]]),
        "n_prompts": len(prompts),
        "images_per_prompt": images_per_prompt,
        "diversity": diversity.__dict__,
        "seconds": round(time.time() - t0, 1),
        "per_prompt": [records[i] for i in sorted(records)],
        "images": kept,
    }
    if keep_answers:
        res["answers"] = answers
    return res
