"""Scenes for prompts: random layouts (the discrete model's training data), canonical layouts (the continuous
model's, one scene per prompt, so that feature regression has one target and decodes crisply), and random
"imperfect" scenes for VQA training (swapped bindings, extra or missing objects, near-miss positions).
Every layout is checked against the oracle's own rules before it is returned.
"""

from __future__ import annotations

import random

import numpy as np

from silmm.world.grammar import RELATIONS, Spec
from silmm.world.oracle import SceneView, verdict
from silmm.world.scene import COLORS, GRID, SHAPES, SIZES, TEXTURES, Obj, footprint, overlaps

MIN_BACK_VISIBLE = 0.45
DEFAULTS = {"color": "blue", "texture": "plain", "size": "large"}


def _instances(spec: Spec, rng: random.Random | None) -> list[dict]:
    """Attribute dicts per object slot; unspecified attributes are sampled (rng) or defaulted (canonical)."""
    forced: dict[int, str] = {}
    for r in spec.relations:
        if r.relation in ("larger than", "smaller than"):
            big, small = (r.subject, r.object) if r.relation == "larger than" else (r.object, r.subject)
            forced[big], forced[small] = "large", "small"
        if RELATIONS[r.relation] == "spatial3d" and rng is None:
            forced.setdefault(r.subject, "large")
            forced.setdefault(r.object, "large")
    out = []
    for i, e in enumerate(spec.entities):
        for _ in range(e.count):
            if rng is None:
                color, texture, size = DEFAULTS["color"], DEFAULTS["texture"], DEFAULTS["size"]
            else:
                color = rng.choice(COLORS)
                texture = "plain" if rng.random() < 0.6 else rng.choice(TEXTURES)
                size = rng.choice(SIZES)
            size = e.size or forced.get(i, size)
            out.append(
                dict(entity=i, shape=e.shape, color=e.color or color, texture=e.texture or texture, size=size)
            )
    return out


def _visible_share(back: Obj, front: Obj) -> float:
    yb, xb, _, col, _ = footprint(back)
    yf, xf, sf, _, hf = footprint(front)
    mb = np.zeros((64, 64), bool)
    mf = np.zeros((64, 64), bool)
    mb[yb, xb] = col
    mf[yf, xf] = sf | hf
    return float((mb & ~mf).sum() / mb.sum())


def _valid(objs: list[Obj], spec: Spec, slot_entity: list[int]) -> bool:
    first = {}
    for s, ent in enumerate(slot_entity):
        first.setdefault(ent, s)
    pairs3d = set()
    for r in spec.relations:
        if RELATIONS[r.relation] == "spatial3d":
            a, b = first[r.subject], first[r.object]
            front, back = (a, b) if r.relation == "in front of" else (b, a)
            if objs[front].layer != 1 or objs[back].layer != 0 or not overlaps(objs[front], objs[back]):
                return False
            if _visible_share(objs[back], objs[front]) < MIN_BACK_VISIBLE:
                return False
            pairs3d.add(frozenset((a, b)))
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            if (objs[i].row, objs[i].col) == (objs[j].row, objs[j].col):
                return False
            if frozenset((i, j)) not in pairs3d and overlaps(objs[i], objs[j]):
                return False
    view = SceneView.from_objs(objs)
    return verdict(spec, view).strict


def random_layout(spec: Spec, rng: random.Random, tries: int = 400) -> list[Obj]:
    """A random scene that satisfies every fact of the prompt strictly."""
    insts = _instances(spec, rng)
    first = {}
    for s, inst in enumerate(insts):
        first.setdefault(inst["entity"], s)
    front_of = {}
    for r in spec.relations:
        if RELATIONS[r.relation] == "spatial3d":
            a, b = first[r.subject], first[r.object]
            front, back = (a, b) if r.relation == "in front of" else (b, a)
            front_of[front] = back
    for _ in range(tries):
        cells = [(rng.randrange(GRID), rng.randrange(GRID)) for _ in insts]
        for front, back in front_of.items():
            r, c = cells[back]
            cells[front] = (
                min(GRID - 1, max(0, r + rng.choice((-1, 1)))),
                min(GRID - 1, max(0, c + rng.choice((-1, 0, 1)))),
            )
        objs = [
            Obj(rc[0], rc[1], it["shape"], it["color"], it["texture"], it["size"], int(s in front_of))
            for s, (rc, it) in enumerate(zip(cells, insts))
        ]
        if _valid(objs, spec, [it["entity"] for it in insts]):
            return objs
    raise RuntimeError(f"no layout found for prompt {spec.prompt!r} in {tries} tries")


_ROWS = (1, 4, 2, 3, 0, 5)


def _pair_candidates(relation: str):
    """Fixed-order (subject cell, object cell) placements for one relation."""
    for r in _ROWS:
        for c in (1, 0, 2, 3):
            if relation in ("to the left of", "larger than", "smaller than"):
                yield (r, c), (r, c + 2)
            elif relation == "to the right of":
                yield (r, c + 2), (r, c)
            elif relation == "above" and r + 2 < GRID:
                yield (r, c), (r + 2, c)
            elif relation == "below" and r + 2 < GRID:
                yield (r + 2, c), (r, c)
            elif relation in ("in front of", "behind") and r + 1 < GRID:
                for dr, dc in ((1, 1), (1, 0), (0, 1)):
                    front, back = (r + dr, c + dc), (r, c)
                    yield (front, back) if relation == "in front of" else (back, front)


_FILL_ORDER = [(r, c) for r in (1, 4, 0, 3, 2, 5) for c in (0, 2, 4, 1, 3, 5)]


def canonical_layout(spec: Spec) -> list[Obj]:
    """The one deterministic scene for a prompt: relation pairs first, each in the first free placement of a
    fixed list, then everything else in a fixed fill order; unspecified attributes take DEFAULTS."""
    insts = _instances(spec, None)
    first = {}
    for s, inst in enumerate(insts):
        first.setdefault(inst["entity"], s)

    def make(s: int, rc: tuple[int, int], layer: int = 0) -> Obj:
        it = insts[s]
        return Obj(rc[0], rc[1], it["shape"], it["color"], it["texture"], it["size"], layer)

    def free(cand: Obj, placed: dict) -> bool:
        return all(not overlaps(cand, o) and (o.row, o.col) != (cand.row, cand.col) for o in placed.values())

    objs: dict[int, Obj] = {}
    for r in spec.relations:
        a, b = first[r.subject], first[r.object]
        front = a if r.relation == "in front of" else b if r.relation == "behind" else None
        for sub, obj in _pair_candidates(r.relation):
            oa, ob = make(a, sub, int(front == a)), make(b, obj, int(front == b))
            if free(oa, objs) and free(ob, objs) and (front is not None) == overlaps(oa, ob):
                if (
                    front is None
                    or _visible_share(ob if front == a else oa, oa if front == a else ob) >= MIN_BACK_VISIBLE
                ):
                    objs[a], objs[b] = oa, ob
                    break
    for s in range(len(insts)):
        if s in objs:
            continue
        for rc in _FILL_ORDER:
            if free(cand := make(s, rc), objs):
                objs[s] = cand
                break
        else:
            raise RuntimeError(f"no canonical cell left for prompt {spec.prompt!r}")
    out = [objs[s] for s in range(len(insts))]
    if not _valid(out, spec, [it["entity"] for it in insts]):
        raise RuntimeError(f"canonical layout of {spec.prompt!r} does not satisfy the prompt")
    return out


def random_scene(rng: random.Random, max_objects: int = 6) -> list[Obj]:
    """Any scene: 0..max_objects objects, possibly overlapping (occlusion), any attributes."""
    objs: list[Obj] = []
    for _ in range(rng.randint(1, max_objects)):
        for _ in range(30):
            cand = Obj(
                rng.randrange(GRID),
                rng.randrange(GRID),
                rng.choice(SHAPES),
                rng.choice(COLORS),
                "plain" if rng.random() < 0.5 else rng.choice(TEXTURES),
                rng.choice(SIZES),
                int(rng.random() < 0.2),
            )
            clash = [o for o in objs if (o.row, o.col) == (cand.row, cand.col) or overlaps(o, cand)]
            if not clash or (len(clash) == 1 and cand.layer != clash[0].layer and rng.random() < 0.5):
                objs.append(cand)
                break
    return objs
