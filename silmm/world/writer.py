"""Random prompts per category, and the held-out combinations that the drawing skill never sees in training.

Held-out: some (attribute, shape) bindings and some (relation, subject shape, object shape) triples never appear
in a multi-object drawing prompt during training (they do appear alone, so the model can draw each object).
Prompts that contain one are the held-out split on which self-improvement is measured.
"""

from __future__ import annotations

import random

from silmm.world.grammar import CATEGORIES, NUMBERS, RELATIONS, Entity, Spec, classify, join, parse_prompt
from silmm.world.scene import COLORS, SHAPES, SIZES, TEXTURES

HELDOUT_BINDINGS = {
    ("red", "square"),
    ("green", "triangle"),
    ("blue", "diamond"),
    ("yellow", "circle"),
    ("purple", "square"),
    ("striped", "triangle"),
    ("dotted", "circle"),
    ("small", "diamond"),
    ("large", "triangle"),
}
HELDOUT_RELATIONS = {
    ("to the left of", "triangle", "circle"),
    ("to the right of", "square", "diamond"),
    ("above", "circle", "square"),
    ("below", "diamond", "triangle"),
    ("above", "triangle", "diamond"),
    ("in front of", "circle", "triangle"),
    ("behind", "square", "circle"),
    ("in front of", "diamond", "square"),
    ("larger than", "triangle", "square"),
    ("smaller than", "circle", "diamond"),
}
_REL_BY_CAT = {
    c: [r for r, g in RELATIONS.items() if g == c] for c in ("spatial2d", "spatial3d", "non_spatial")
}


def is_heldout(spec: Spec) -> bool:
    if len(spec.entities) < 2:
        return False
    for e in spec.entities:
        if any((v, e.shape) in HELDOUT_BINDINGS for _, v in e.attrs()):
            return True
    return any(
        (r.relation, spec.entities[r.subject].shape, spec.entities[r.object].shape) in HELDOUT_RELATIONS
        for r in spec.relations
    )


def _entity(
    rng: random.Random, shape: str, *, color=0.0, texture=0.0, size=0.0, count=1, numeral=False
) -> Entity:
    return Entity(
        shape,
        count,
        rng.choice(COLORS) if rng.random() < color else None,
        rng.choice(TEXTURES) if rng.random() < texture else None,
        rng.choice(SIZES) if rng.random() < size else None,
        numeral,
    )


def _binding(rng: random.Random, kind: str) -> str:
    shapes = rng.sample(SHAPES, 2)
    values = {"color": COLORS, "texture": TEXTURES, "size": SIZES}[kind]
    vals = rng.sample(values, 2)
    ents = [Entity(s, **{kind: v}) for s, v in zip(shapes, vals)]
    return join(ents, [None])


def _relation(rng: random.Random, cat: str, color_p: float = 0.5) -> tuple[list[Entity], list[str]]:
    rel = rng.choice(_REL_BY_CAT[cat])
    shapes = rng.sample(SHAPES, 2)
    return [_entity(rng, s, color=color_p) for s in shapes], [rel]


def _numeracy(rng: random.Random) -> list[Entity]:
    n_ent = rng.choice((1, 2, 2))
    shapes = rng.sample(SHAPES, n_ent)
    counts = [rng.randint(1, 4) for _ in shapes]
    while sum(counts) > 5 or max(counts) < 2 and n_ent == 1:
        counts = [rng.randint(1, 4) for _ in shapes]
    with_color = rng.random() < 0.7
    return [_entity(rng, s, color=float(with_color), count=c, numeral=True) for s, c in zip(shapes, counts)]


def _complex(rng: random.Random) -> str:
    form = rng.randrange(4)
    if form == 0:  # a relation whose objects also carry texture or size
        ents, links = _relation(rng, rng.choice(list(_REL_BY_CAT)), color_p=0.7)
        kind = rng.choice(
            ("texture", "size") if links[0] not in ("larger than", "smaller than") else ("texture",)
        )
        i = rng.randrange(2)
        ents[i] = Entity(
            ents[i].shape, color=ents[i].color, **{kind: rng.choice(TEXTURES if kind == "texture" else SIZES)}
        )
        return join(ents, links)
    if form == 1:  # counted group and a relation
        shapes = rng.sample(SHAPES, 3)
        group = Entity(shapes[0], rng.randint(2, 3), rng.choice(COLORS), numeral=True)
        ents, links = [_entity(rng, s, color=0.7) for s in shapes[1:]], [rng.choice(_REL_BY_CAT["spatial2d"])]
        return join([group, *ents], [None, *links])
    if form == 2:  # two relations
        shapes = rng.sample(SHAPES, 4)
        cats = rng.sample(list(_REL_BY_CAT), 2)
        rels = [rng.choice(_REL_BY_CAT[c]) for c in cats]
        ents = [_entity(rng, s, color=0.6) for s in shapes]
        return join(ents, [rels[0], None, rels[1]])
    shapes = rng.sample(SHAPES, 2)  # mixed binding
    kinds = rng.sample(("color", "texture", "size"), 2)
    ents = [
        _entity(
            rng,
            s,
            color=float("color" in kinds),
            texture=float("texture" in kinds),
            size=float("size" in kinds),
        )
        for s in shapes
    ]
    return join(ents, [None])


def write_prompt(category: str, rng: random.Random) -> str:
    """One random prompt of the category (no held-out filtering)."""
    if category in ("color", "texture"):
        return _binding(rng, category)
    if category == "shape":
        return _binding(rng, "size")
    if category in _REL_BY_CAT:
        ents, links = _relation(rng, category)
        return join(ents, links)
    if category == "numeracy":
        ents = _numeracy(rng)
        return join(ents, [None] * (len(ents) - 1))
    if category == "complex":
        return _complex(rng)
    if category == "single":
        return _entity(rng, rng.choice(SHAPES), color=1.0, texture=0.4, size=0.4).phrase()
    raise ValueError(f"category {category!r} is not one of {list(CATEGORIES) + ['single']}")


def sample_prompt(category: str, rng: random.Random, split: str = "any") -> str:
    """A prompt of the category that classifies as it and belongs to `split` ('train', 'heldout' or 'any')."""
    if split not in ("train", "heldout", "any"):
        raise ValueError(f"split {split!r} is not one of ['train', 'heldout', 'any']")
    for _ in range(1000):
        prompt = write_prompt(category, rng)
        spec = parse_prompt(prompt)
        if classify(spec) != category:
            continue
        if split == "any" or (split == "heldout") == is_heldout(spec):
            return prompt
    raise RuntimeError(f"could not write a {split} prompt for category {category!r}")


__all__ = ["HELDOUT_BINDINGS", "HELDOUT_RELATIONS", "NUMBERS", "is_heldout", "sample_prompt", "write_prompt"]
