"""Can a small world model learn relation geometry from yes/no answers alone? A from-scratch diagnostic.

    python -m scripts.relation_toy --steps 3000 --geometry-weight 0 --seed 0     # the answer only
    python -m scripts.relation_toy --steps 3000 --geometry-weight 1 --seed 0     # plus data.relation_geometry per cell

A fresh WorldLM (hidden 96, 4 layers, 4 heads) sees random scenes and one question each, "is the A REL the B?"
with REL one of the four 2D relations, both noun phrases naming drawn objects exactly, and REL either true or its
opposite (half each): only the geometry decides the answer. Every 250 steps it prints the accuracy on 512 fixed
test questions, split into true ("yes") and flipped ("no") ones; a model that ignores geometry scores 1 / 0 or
0 / 1. `--geometry-weight` adds the loop-independent auxiliary of `silmm.world.train` (`--geometry-weight` there):
each drawn object's cell predicts [is the subject, matches the object phrase, each relation holds between the
subject and it].
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F

from silmm.world.data import (
    _OPPOSITE,
    GEOMETRY_SIZE,
    IGNORE,
    canonical_codes,
    ids_of,
    relation_geometry,
    scene_ok,
    see_sequence,
)
from silmm.world.grammar import Entity
from silmm.world.layout import random_scene
from silmm.world.model import WorldLM, build_tokenizer, left_pad, world_config
from silmm.world.oracle import SceneView, holds
from silmm.world.questions import _words, answer
from silmm.world.scene import GRID
from silmm.world.train import geometry_loss

PLANAR = ("to the left of", "to the right of", "above", "below")
HIDDEN = 96


def example(rng: random.Random, vocab: dict[str, int]):
    """(ids, answer, flipped, geometry rows) or None when no 2D relation holds between the two picked objects."""
    objs = random_scene(rng)
    while len(objs) < 2 or not scene_ok(objs):
        objs = random_scene(rng)
    view = SceneView.from_objs(objs)
    a, b = rng.sample(range(len(view.objects)), 2)
    true = [r for r in PLANAR if holds(r, view, a, b)]
    if not true:
        return None
    flipped = rng.random() < 0.5
    rel = rng.choice(true)
    rel = _OPPOSITE[rel] if flipped else rel
    oa, ob = view.objects[a], view.objects[b]
    q = f"is the {_words(Entity(oa.shape, 1, oa.color, oa.texture))} {rel} the {_words(Entity(ob.shape, 1, ob.color, ob.texture))}?"
    geometry = relation_geometry(q, view) or [[IGNORE] * GEOMETRY_SIZE] * GRID**2
    return ids_of(see_sequence(canonical_codes(objs), q), vocab), answer(q, view), flipped, geometry


def batch(rng: random.Random, vocab: dict[str, int], pad: int, n: int):
    rows = []
    while len(rows) < n:
        e = example(rng, vocab)
        if e is not None:
            rows.append(e)
    ids, mask, _ = left_pad([r[0] for r in rows], pad)  # the answer is read at the last position
    yes = torch.tensor([int(r[1]) for r in rows])
    flipped = torch.tensor([r[2] for r in rows])
    geometry = torch.tensor([r[3] for r in rows])  # (n, 36, 1 + relations)
    return ids, mask, yes, flipped, geometry


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--geometry-weight", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)  # script entry point
    tok = build_tokenizer()
    vocab, pad = tok.get_vocab(), tok.pad_token_id
    yes_id, no_id, img_id = vocab["yes"], vocab["no"], vocab["<img>"]
    model = WorldLM(world_config("discrete", hidden=HIDDEN, layers=4, heads=4)).train()
    head = torch.nn.Linear(HIDDEN, GEOMETRY_SIZE)
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    rng, test_rng = random.Random(args.seed), random.Random(123)
    test = [batch(test_rng, vocab, pad, 128) for _ in range(4)]
    t0 = time.time()

    def accuracy() -> dict:
        model.eval()
        right = {True: [0, 0], False: [0, 0]}
        with torch.no_grad():
            for ids, mask, yes, flipped, _ in test:
                logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
                for p, t, f in zip((logits[:, yes_id] > logits[:, no_id]).long().tolist(), yes.tolist(), flipped.tolist()):
                    right[f][0] += p == t
                    right[f][1] += 1
        model.train()
        return {"true": round(right[False][0] / right[False][1], 3), "flipped": round(right[True][0] / right[True][1], 3)}

    for step in range(args.steps + 1):
        if step % 250 == 0:
            print(json.dumps({"step": step, "seconds": round(time.time() - t0), "geometry_weight": args.geometry_weight,
                              "seed": args.seed, **accuracy()}), flush=True)  # fmt: skip
        if step == args.steps:
            break
        ids, mask, yes, _, geometry = batch(rng, vocab, pad, 32)
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        loss = F.cross_entropy(out.logits[:, -1][:, [no_id, yes_id]], yes)
        if args.geometry_weight:
            start = (ids == img_id).long().argmax(1) + 1  # (B,) the first image cell
            loss = loss + args.geometry_weight * geometry_loss(head, out.hidden_states[-1], start, geometry)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()


if __name__ == "__main__":
    main()
