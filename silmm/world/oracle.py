"""The exact oracle: an image (or a known scene) -> objects -> a verdict on every fact of a prompt.

Geometry rules (centres in pixels, y grows downwards):
    A to the left of B  <=>  x_A < x_B and |dx| > |dy|      (right, above, below alike)
    A in front of B     <=>  A hides part of B (their glyphs overlap and A is drawn on top)
    A larger than B     <=>  A is large and B is small
A verdict is *strict* when the objects can be assigned one-to-one to the prompt's noun phrases so that every
attribute, count and relation holds and nothing else is drawn; *facts_only* drops "nothing else is drawn"
(extra objects allowed, but counted groups must still have their exact count).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from silmm.world.grammar import Entity, Spec, parse_prompt
from silmm.world.scene import Obj, overlaps
from silmm.world.tokenizer import parse


@dataclass(frozen=True)
class SceneView:
    objects: tuple[Obj, ...]
    front_of: frozenset[tuple[int, int]]  # (i, j): object i hides part of object j
    residual: int = 0

    @classmethod
    def from_image(cls, image: Image.Image) -> SceneView:
        p = parse(image)
        pairs = frozenset((a, b) for b, hs in p.occluders.items() for a in hs)
        return cls(tuple(p.objects), pairs, p.residual)

    @classmethod
    def from_objs(cls, objs: list[Obj]) -> SceneView:
        """Ground truth for a scene we rendered ourselves (draw order decides who hides whom)."""
        from silmm.world.scene import draw_order

        objs = draw_order(objs)
        pairs = {
            (j, i) for i in range(len(objs)) for j in range(i + 1, len(objs)) if overlaps(objs[i], objs[j])
        }
        return cls(tuple(objs), frozenset(pairs))


def holds(relation: str, view: SceneView, a: int, b: int) -> bool:
    oa, ob = view.objects[a], view.objects[b]
    (xa, ya), (xb, yb) = oa.center, ob.center
    dx, dy = xb - xa, yb - ya
    if relation == "to the left of":
        return dx > 0 and abs(dx) > abs(dy)
    if relation == "to the right of":
        return dx < 0 and abs(dx) > abs(dy)
    if relation == "above":
        return dy > 0 and abs(dy) > abs(dx)
    if relation == "below":
        return dy < 0 and abs(dy) > abs(dx)
    if relation == "in front of":
        return (a, b) in view.front_of
    if relation == "behind":
        return (b, a) in view.front_of
    if relation == "larger than":
        return oa.size == "large" and ob.size == "small"
    if relation == "smaller than":
        return oa.size == "small" and ob.size == "large"
    raise ValueError(f"unknown relation {relation!r}")


def count(view: SceneView, entity: Entity) -> int:
    return sum(entity.matches(o) for o in view.objects)


def _assign(spec: Spec, view: SceneView) -> bool:
    """Is there an injective assignment of objects to the prompt's object slots satisfying attributes and relations?"""
    slots = [i for i, e in enumerate(spec.entities) for _ in range(e.count)]
    first_slot = {}
    for s, ent in enumerate(slots):
        first_slot.setdefault(ent, s)
    chosen: list[int] = []

    def ok_relations() -> bool:
        for r in spec.relations:
            sa, sb = first_slot[r.subject], first_slot[r.object]
            if sa < len(chosen) and sb < len(chosen) and not holds(r.relation, view, chosen[sa], chosen[sb]):
                return False
        return True

    def search(s: int) -> bool:
        if s == len(slots):
            return True
        ent = spec.entities[slots[s]]
        for i, obj in enumerate(view.objects):
            if i in chosen or not ent.matches(obj):
                continue
            chosen.append(i)
            if ok_relations() and search(s + 1):
                return True
            chosen.pop()
        return False

    return search(0)


@dataclass(frozen=True)
class Verdict:
    strict: bool
    facts_only: bool
    n_objects: int


def verdict(spec: Spec, view: SceneView) -> Verdict:
    counted = all(count(view, e) == e.count for e in spec.entities if e.numeral or e.count > 1)
    facts = counted and _assign(spec, view)
    strict = facts and view.residual == 0 and len(view.objects) == spec.n_objects
    return Verdict(strict, facts, len(view.objects))


def judge_prompt(prompt: str, image: Image.Image) -> Verdict:
    """The oracle's verdict on an image for a prompt (raises ParseError for prompts outside the world)."""
    return verdict(parse_prompt(prompt), SceneView.from_image(image))
