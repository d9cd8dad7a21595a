"""Ten diagnostics of a world model or a loop run, behind numbers in docs/RESULTS.md.

    python -m scripts.world_probe relations MODEL        # the judge on clean renders: true vs flipped relations
    python -m scripts.world_probe attributes MODEL       # single-object drawings: one object? each attribute right?
    python -m scripts.world_probe vqa MODEL              # the judge on fresh training-distribution VQA, per type
    python -m scripts.world_probe judge MODEL            # the judge on its own drawings, split by the true answer
    python -m scripts.world_probe candidates MODEL [TOP_P]  # plain drawing vs N diverse candidates, held-out split
    python -m scripts.world_probe pairs RUN_ITER_DIR     # a loop iteration's pairs, checked by the oracle
    python -m scripts.world_probe iterations RUN_DIR     # each iteration's model, scored by its own judge
    python -m scripts.world_probe bindings RUN_DIR       # per held-out binding: candidates that draw it, its pairs
    python -m scripts.world_probe rules RUN_ITER_DIR     # which score rule picks an oracle-right candidate
    python -m scripts.world_probe more RUN_DIR           # 32 more candidates for iteration 1's hard prompts

MODEL is world-discrete, world-continuous or a model folder. `relations` renders 300 relation prompts exactly as
written, each in a random layout and in the canonical one (the scene world-continuous learns to draw), and asks each
prompt's relation and its opposite ("... to the left of ..." vs "... to the right of ..."); a judge that reads the
geometry says yes to the first and no to the second. `attributes` draws each single-object
prompt 4 times (the evaluation's diversity, seeds 0..191) and reports the share of drawings with exactly one object
and, among those, the share whose shape and each attribute the prompt names (colour, texture, size) are right.
`vqa` answers 1,500 fresh VQA examples as the training data makes them (`data.ExampleMaker.see`, seed 12345,
relation share 0.3) and reports per question type the count, accuracy, the judge's yes rate and the true yes rate:
the judge on the mistakes the data teaches, against `eval world`'s agreement on the model's own drawings.
`judge` splits that agreement: the model draws what `eval world` draws (held-out and single prompts, 8 images each,
its seeds and diversity) and answers each prompt's questions; agreement with the oracle is reported per question
type and true answer, relation questions per relation, count questions per number asked (of an entity or of all
objects). Most true answers on good drawings are yes, so a type's overall agreement can hide a judge that says yes
to everything, or one that cannot count past one.
`candidates` draws each held-out prompt once plainly (the evaluation's drawing) and N times with the shipped config's
N and diversity (read from configs/world-KIND.yaml, or that diversity with top-p TOP_P), and reports per category the
oracle's strict rate of the plain drawing, of the average candidate, of the best candidate (best-of-N) and of the
candidate the model's own judge ranks first.
`pairs` reads runs/NAME/iter_K/{pairs,candidates}.jsonl and the candidate PNGs, and counts per category the pairs
whose chosen image is strictly right and rejected one wrong (the oracle agrees with the judge), the reverse, both
right, both wrong, and prompts outside the world's grammar. `iterations` asks whether the model's own judgement could
tell its iterations apart without labels: the base model and each iteration's model (runs/NAME/iter_K/adapter, with
the earlier ones merged) draw iteration 1's self-written prompts once plainly; each drawing is scored with those
prompts' self-written questions, s = mean[p(yes) - p(no)], by the base model and by the drawing model, and the
oracle's strict rate on the same drawings is printed beside them. `bindings` reads every iteration of a run and
prints, per held-out binding (silmm.world.writer.HELDOUT_BINDINGS) that a self-written prompt asks for: the prompts
that ask for it, how many of their candidates draw it (an object with that attribute and shape), and the pairs whose
chosen image draws it and rejected one does not (+) or the reverse (-), for those prompts and for all other prompts.
`rules` re-ranks a loop iteration's judged candidates (candidates.jsonl) by several score rules and counts per
category the prompts whose first-ranked candidate is strictly right, and the best-vs-worst pairs that are right
(chosen right, rejected wrong) or reversed. `more` takes iteration 1 of a run, finds the prompts whose best
self-score is below 0.8, draws 32 more candidates for each with the run's base model and diversity (other seeds),
judges them with the prompt's own questions, and counts per category the prompts with a strictly right candidate and
those whose self-chosen candidate is right, among the 16 and among all 48.
Fixed seeds; one torch thread.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image

from silmm import feedback, runio
from silmm.adapters import load_adapter
from silmm.config import load_config
from silmm.sampling import diversity_from
from silmm.world.data import _OPPOSITE
from silmm.world.evaluate import DEFAULT_DIVERSITY, SPLITS, read_prompts
from silmm.world.grammar import RELATIONS, ParseError, classify, parse_prompt
from silmm.world.layout import canonical_layout, random_layout
from silmm.world.oracle import SceneView, judge_prompt, verdict
from silmm.world.questions import _words, decompose
from silmm.world.scene import render
from silmm.world.writer import HELDOUT_BINDINGS, sample_prompt

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def relation_items(n: int = 300) -> tuple[list[Image.Image], list[str], list[tuple[str, str, str]]]:
    """`relations`' images, questions and (relation kind, layout, true or flipped) groups for n prompts."""
    rng = random.Random(5)
    images, questions, groups = [], [], []
    while len(groups) < 4 * n:
        spec = parse_prompt(sample_prompt(rng.choice(["spatial2d", "spatial3d", "non_spatial"]), rng))
        r = spec.relations[0]
        a, b = _words(spec.entities[r.subject]), _words(spec.entities[r.object])
        kind = {"spatial2d": "2d", "spatial3d": "depth", "non_spatial": "size"}[RELATIONS[r.relation]]
        for layout in ("random", "canonical"):
            try:
                objs = random_layout(spec, rng) if layout == "random" else canonical_layout(spec)
            except RuntimeError:  # a crowded prompt without a layout
                continue
            image = render(list(SceneView.from_objs(objs).objects))
            for rel, truth in ((r.relation, "true"), (_OPPOSITE[r.relation], "flipped")):
                images.append(image)
                questions.append(f"is the {a} {rel} the {b}?")
                groups.append((kind, layout, truth))
    return images, questions, groups


def relations(adapter, n: int = 300) -> None:
    images, questions, groups = relation_items(n)
    p_yes, p_no = adapter.answer_yes_no(images, questions)
    said = defaultdict(list)
    for group, yes in zip(groups, (p_yes > p_no).tolist()):
        said[group].append(yes)
    print("relation kind | layout | relation | n | share answered yes")
    for (kind, layout, truth), v in sorted(said.items()):
        print(f"{kind} | {layout} | {truth} | {len(v)} | {sum(v) / len(v):.3f}")


def attributes(adapter, repeats: int = 4) -> None:
    from silmm.world.tokenizer import parse

    prompts = [p for p in read_prompts(SPLITS["single"]) for _ in range(repeats)]
    samples = adapter.sample(prompts, list(range(len(prompts))), DEFAULT_DIVERSITY[adapter.kind])
    right, asked = defaultdict(int), defaultdict(int)
    for s in samples:
        objs = parse(s.image).objects
        asked["one object"] += 1
        right["one object"] += len(objs) == 1
        if len(objs) == 1:
            entity = parse_prompt(s.prompt).entities[0]
            for factor in ("shape", "color", "texture", "size"):
                if want := getattr(entity, factor):
                    asked[factor] += 1
                    right[factor] += getattr(objs[0], factor) == want
    print(" | ".join(f"{k} {right[k] / asked[k]:.3f} (n={asked[k]})" for k in asked))


def vqa(adapter, n: int = 1500) -> None:
    from silmm.world.data import ExampleMaker
    from silmm.world.model import VOCAB
    from silmm.world.questions import question_type

    vocab = {t: i for i, t in enumerate(VOCAB)}
    maker = ExampleMaker(adapter.kind, vocab, seed=12345, relation_share=0.3)
    stats = defaultdict(lambda: [0, 0, 0, 0])  # n, right, judge yes, truly yes
    for _ in range(n):
        ex = maker.see()
        with torch.no_grad():
            logits = adapter.base(input_ids=torch.tensor([ex["ids"][:-1]])).logits[0, -1]
        said_yes = bool(logits[vocab["yes"]] > logits[vocab["no"]])
        truly_yes = ex["ids"][-1] == vocab["yes"]
        words = [VOCAB[i] for i in ex["ids"]]
        st = stats[question_type(" ".join(words[2 : words.index("<img>")]))]
        st[0], st[1], st[2], st[3] = st[0] + 1, st[1] + (said_yes == truly_yes), st[2] + said_yes, st[3] + truly_yes
    print("question type | n | accuracy | judge yes | true yes")
    for qtype, (k, right, yes, true) in sorted(stats.items()):
        print(f"{qtype} | {k} | {right / k:.3f} | {yes / k:.2f} | {true / k:.2f}")


def candidates(adapter, top_p: str | None = None) -> None:
    plain_div = DEFAULT_DIVERSITY[adapter.kind]
    sampling = load_config(CONFIGS / f"world-{adapter.kind}.yaml").sampling
    if top_p is not None:
        sampling = dataclasses.replace(sampling, top_p=float(top_p))
    n, loop_div = sampling.n, diversity_from(sampling)
    stats: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, prompt in enumerate(read_prompts(SPLITS["heldout"])):
        spec = parse_prompt(prompt)
        plain = adapter.sample([prompt], [1000 * i], plain_div)[0]
        drawn = adapter.sample([prompt] * n, [7 + 100 * i + k for k in range(n)], loop_div)
        strict = [float(verdict(spec, SceneView.from_image(s.image)).strict) for s in drawn]
        qs = [q.text for q in decompose(spec)]
        p_yes, p_no = adapter.answer_yes_no([s.image for s in drawn for _ in qs], qs * n)
        self_best = int((p_yes - p_no).view(n, len(qs)).mean(1).argmax())
        for st in (stats[classify(spec)], stats["(all)"]):
            st["plain"].append(float(verdict(spec, SceneView.from_image(plain.image)).strict))
            st["mean candidate"].append(sum(strict) / n)
            st["best of N"].append(max(strict))
            st["self-chosen"].append(strict[self_best])
            st["distinct images"].append(len({s.image.tobytes() for s in drawn}))
    print(f"N = {n}, {loop_div}")
    keys = ["plain", "mean candidate", "best of N", "self-chosen", "distinct images"]
    print("category | " + " | ".join(keys))
    for cat, st in sorted(stats.items()):
        print(f"{cat} | " + " | ".join(f"{sum(st[k]) / len(st[k]):.3f}" for k in keys))


def pairs(iter_dir: Path) -> None:
    image = {(r["prompt"], r["seed"]): iter_dir / r["image"] for r in runio.read_jsonl(iter_dir / "candidates.jsonl")}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for pair in runio.read_jsonl(iter_dir / "pairs.jsonl"):
        try:
            spec = parse_prompt(pair["prompt"])
        except ParseError:
            counts["(outside the grammar)"]["pairs"] += 1
            continue
        right = []
        for seed in (pair["chosen_seed"], pair["rejected_seed"]):
            with Image.open(image[pair["prompt"], seed]) as im:
                right.append(verdict(spec, SceneView.from_image(im.convert("RGB"))).strict)
        kind = {(True, False): "chosen right", (False, True): "reverse", (True, True): "both right"}.get(tuple(right), "both wrong")  # fmt: skip
        category = counts[classify(spec)]
        category[kind] += 1
        category["pairs"] += 1
    keys = ["pairs", "chosen right", "reverse", "both right", "both wrong"]
    print("category | " + " | ".join(keys))
    for cat, c in sorted(counts.items()):
        print(f"{cat} | " + " | ".join(str(c[k]) for k in keys))


def iterations(run: Path) -> None:
    rows = [r for r in runio.read_jsonl(run / "iter_1" / "prompts.jsonl") if r["kept"]]
    prompts, questions = [r["prompt"] for r in rows], [r["questions"] for r in rows]
    model = load_config(run / "config.yaml").model.name
    base = load_adapter(model)
    iters = sorted(int(d.name[5:]) for d in run.glob("iter_*") if (d / "adapter").is_dir())
    print(f"{run.name} ({model}, the {len(prompts)} self-written prompts of iteration 1)")
    print("iteration | base judge | own judge | oracle strict")
    for k in [0, *iters]:
        drawer = base if k == 0 else load_adapter(model, adapter_dir=str(run / f"iter_{k}" / "adapter"))
        drawn = drawer.sample(prompts, [7 + i for i in range(len(prompts))], DEFAULT_DIVERSITY[drawer.kind])
        images = [s.image for s in drawn]
        scores = []
        for judge in (base, drawer):
            yes, no = feedback.answer_all(judge, images, questions, batch_size=64, progress=False)
            scores.append(sum(feedback.score(y, n, rule="prob_diff") for y, n in zip(yes, no)) / len(images))
        strict = []
        for prompt, im in zip(prompts, images):
            try:
                strict.append(judge_prompt(prompt, im).strict)
            except ParseError:
                continue
        print(f"{k} | {scores[0]:.4f} | {scores[1]:.4f} | {sum(strict) / len(strict):.4f}")


def bindings(run: Path) -> None:
    drawn: dict[Path, set] = {}

    def draws(path: Path, binding: tuple[str, str]) -> bool:
        if path not in drawn:
            with Image.open(path) as im:
                objs = SceneView.from_image(im.convert("RGB")).objects
            drawn[path] = {(v, o.shape) for o in objs for v in (o.color, o.texture, o.size)}
        return binding in drawn[path]

    print("iteration | binding | prompts | candidates that draw it | pairs +/- | other prompts' pairs +/-")
    for it in sorted(run.glob("iter_*"), key=lambda d: int(d.name.removeprefix("iter_"))):
        if not (it / "pairs.jsonl").is_file():
            continue
        cands = list(runio.read_jsonl(it / "candidates.jsonl"))
        image = {(r["prompt"], r["seed"]): it / r["image"] for r in cands}
        asks: dict[str, set] = {}
        for prompt in {r["prompt"] for r in cands}:
            try:
                spec = parse_prompt(prompt)
            except ParseError:
                continue
            asks[prompt] = {(v, e.shape) for e in spec.entities for _, v in e.attrs()} & HELDOUT_BINDINGS
        pair_list = list(runio.read_jsonl(it / "pairs.jsonl"))
        for b in sorted(set().union(*asks.values())):
            mine = {p for p, bs in asks.items() if b in bs}
            n = [draws(it / r["image"], b) for r in cands if r["prompt"] in mine]
            signs = {True: [0, 0], False: [0, 0]}
            for p in pair_list:
                c, r = (draws(image[p["prompt"], p[k]], b) for k in ("chosen_seed", "rejected_seed"))
                if c != r:
                    signs[p["prompt"] in mine][r] += 1
            (pp, pm), (op, om) = signs[True], signs[False]
            print(f"{it.name} | {' '.join(b)} | {len(mine)} | {sum(n)}/{len(n)} | +{pp} -{pm} | +{op} -{om}")


def _strict_or_none(prompt: str, image: Image.Image) -> bool | None:
    try:
        return judge_prompt(prompt, image.convert("RGB")).strict
    except ParseError:
        return None


def _rule_scores(p_yes: list[float], p_no: list[float]) -> dict[str, float]:
    diff = [y - n for y, n in zip(p_yes, p_no)]
    log_ratio = sum(math.log(max(y / max(y + n, 1e-12), 1e-9)) for y, n in zip(p_yes, p_no))
    return {
        "mean[p(yes) - p(no)]": sum(diff) / len(diff),
        "min[p(yes) - p(no)]": min(diff),
        "yes-ratio": sum(d > 0 for d in diff) / len(diff),
        "sum log renormalised p(yes)": log_ratio,
    }


def _candidates_by_prompt(path: Path) -> dict[int, list[dict]]:
    """candidates.jsonl rows grouped by prompt index, in file order."""
    by_prompt: dict[int, list[dict]] = defaultdict(list)
    for r in runio.read_jsonl(path):
        by_prompt[r["prompt_index"]].append(r)
    return by_prompt


def rules(iter_dir: Path) -> None:
    by_prompt = _candidates_by_prompt(iter_dir / "candidates.jsonl")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    names = list(_rule_scores([1.0], [0.0]))
    for cands in by_prompt.values():
        right = []
        for c in cands:
            with Image.open(iter_dir / c["image"]) as im:
                right.append(_strict_or_none(c["prompt"], im))
        if None in right:
            continue
        scored = [_rule_scores(c["p_yes"], c["p_no"]) for c in cands]
        for st in (counts[classify(parse_prompt(cands[0]["prompt"]))], counts["(all)"]):
            st["prompts"] += 1
            st["any right"] += any(right)
            for name in names:
                order = sorted(range(len(cands)), key=lambda i: (-scored[i][name], cands[i]["k"]))
                best, worst = right[order[0]], right[order[-1]]
                st[name] += best
                st[name + " pair"] += best and not worst
                st[name + " reversed"] += worst and not best
    print("per rule: first-ranked right / pairs right / pairs reversed")
    print("category | prompts | any right | " + " | ".join(names))
    for cat, st in sorted(counts.items()):
        cells = [f"{st[n]} / {st[n + ' pair']} / {st[n + ' reversed']}" for n in names]
        print(f"{cat} | {st['prompts']} | {st['any right']} | " + " | ".join(cells))


def more(run: Path, below: float = 0.8, extra: int = 32) -> None:
    cfg = load_config(run / "config.yaml")
    adapter = load_adapter(cfg.model.name)
    by_prompt = _candidates_by_prompt(run / "iter_1" / "candidates.jsonl")
    hard = [p for p, cands in by_prompt.items() if max(c["score"] for c in cands) < below]
    print(f"{len(hard)} of {len(by_prompt)} prompts have no candidate scored >= {below}")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for p in hard:
        cands, prompt = by_prompt[p], by_prompt[p][0]["prompt"]
        images = []
        for c in cands:
            with Image.open(run / "iter_1" / c["image"]) as im:
                images.append(im.convert("RGB"))
        seeds = [10_000_000 + 1000 * p + k for k in range(extra)]
        new = [s.image for s in adapter.sample([prompt] * extra, seeds, diversity_from(cfg.sampling))]
        yes, no = feedback.answer_all(adapter, new, [cands[0]["questions"]] * extra, batch_size=64)
        scores = [c["score"] for c in cands] + [feedback.score(y, n, rule="prob_diff") for y, n in zip(yes, no)]
        right = [_strict_or_none(prompt, im) for im in images + new]
        if None in right:
            continue
        first = min(range(len(cands)), key=lambda i: (-scores[i], i))
        every = min(range(len(scores)), key=lambda i: (-scores[i], i))
        for st in (counts[classify(parse_prompt(prompt))], counts["(all)"]):
            st["prompts"] += 1
            st["right among 16"] += any(right[: len(cands)])
            st[f"right among {len(scores)}"] += any(right)
            st["chosen of 16 right"] += right[first]
            st[f"chosen of {len(scores)} right"] += right[every]
    keys = list(counts["(all)"])
    print("category | " + " | ".join(keys))
    for cat, st in sorted(counts.items()):
        print(f"{cat} | " + " | ".join(str(st[k]) for k in keys))


def judge(adapter, images_per_prompt: int = 8, prompts: list[str] | None = None) -> None:
    from silmm.world.evaluate import default_prompts, evaluate
    from silmm.world.questions import read

    res = evaluate(adapter, prompts or default_prompts(), images_per_prompt=images_per_prompt, keep_answers=True)
    agree = defaultdict(list)
    for question, qtype, truth, said in res["answers"]:
        detail = ""
        if qtype == "relation":
            detail = read(question)[1][2]
        elif qtype == "count":
            form = read(question)[1]
            detail = f"{'all objects' if form[0] == 'total' else 'an entity'}, {form[-1]}"
        agree[(qtype, detail, "yes" if truth else "no")].append(said == truth)
    print("question type | relation or number asked | true answer | n | agreement")
    for (qtype, detail, truth), v in sorted(agree.items()):
        print(f"{qtype} | {detail or '-'} | {truth} | {len(v)} | {sum(v) / len(v):.3f}")


def main(argv: list[str]) -> None:
    on_model = {"relations": relations, "attributes": attributes, "vqa": vqa, "judge": judge, "candidates": candidates}
    on_run = {"pairs": pairs, "iterations": iterations, "bindings": bindings, "rules": rules, "more": more}
    if not (argv and argv[0] in on_model | on_run and (len(argv) == 2 or argv[:1] == ["candidates"] and len(argv) == 3)):
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    if argv[0] in on_run:
        return on_run[argv[0]](Path(argv[1]))
    on_model[argv[0]](load_adapter(argv[1]), *argv[2:])


if __name__ == "__main__":
    main(sys.argv[1:])
