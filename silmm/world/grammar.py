"""The world's prompt language: parser (prompt -> facts), category classifier and per-category prompt writer.

Grammar (lower case, an optional final period):
    prompt   := np (link np)*            link := "and" | relation
    np       := det attr* shape          det  := a | an | one | two | three | four | the
    attr     := size | texture | color   relation := to the left of | to the right of | above | below |
                                                     in front of | behind | larger than | smaller than
A relation joins the noun phrases on either side of it; both must be singular. The categories mirror
T2I-CompBench++: color / shape (size x shape) / texture binding, 2D spatial, 3D spatial (drawn as occlusion),
numeracy, non-spatial (size comparison), complex (two or more of these), plus "single" (one object).
A prompt the parser cannot read raises `ParseError` naming the prompt and the first unknown word or construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from silmm.world.scene import COLORS, PLURALS, SHAPES, SIZES, TEXTURES

CATEGORIES = ("color", "shape", "texture", "spatial2d", "spatial3d", "numeracy", "non_spatial", "complex")
ALL_CATEGORIES = (*CATEGORIES, "single")
RELATIONS = {
    "to the left of": "spatial2d",
    "to the right of": "spatial2d",
    "above": "spatial2d",
    "below": "spatial2d",
    "in front of": "spatial3d",
    "behind": "spatial3d",
    "larger than": "non_spatial",
    "smaller than": "non_spatial",
}
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
NUMBER_WORDS = {v: k for k, v in NUMBERS.items()} | {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
MAX_OBJECTS = 6
_SINGULAR = {v: k for k, v in PLURALS.items()}
_ATTR_KIND = {
    **{c: "color" for c in COLORS},
    **{t: "texture" for t in TEXTURES},
    **{s: "size" for s in SIZES},
}


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class Entity:
    shape: str
    count: int = 1
    color: str | None = None
    texture: str | None = None
    size: str | None = None
    numeral: bool = False  # the count was written as a number word

    def attrs(self) -> list[tuple[str, str]]:
        return [(k, v) for k in ("size", "texture", "color") if (v := getattr(self, k)) is not None]

    def phrase(self, det: str | None = None) -> str:
        """'a large striped red circle', 'two green triangles', 'the blue square'."""
        noun = PLURALS[self.shape] if self.count > 1 else self.shape
        words = [v for _, v in self.attrs()] + [noun]
        if det is None:
            det = NUMBER_WORDS[self.count] if (self.numeral or self.count > 1) else _article(words[0])
        return " ".join([det, *words])

    def matches(self, obj) -> bool:
        return obj.shape == self.shape and all(getattr(obj, k) == v for k, v in self.attrs())


@dataclass(frozen=True)
class Relation:
    subject: int  # entity index
    relation: str
    object: int


@dataclass(frozen=True)
class Spec:
    prompt: str
    entities: tuple[Entity, ...]
    relations: tuple[Relation, ...]

    @property
    def n_objects(self) -> int:
        return sum(e.count for e in self.entities)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def normalize(prompt: str) -> list[str]:
    text = prompt.strip().lower().rstrip(".").replace(",", " ")
    return text.split()


def _parse_np(words: list[str], i: int, prompt: str) -> tuple[Entity, int]:
    if i >= len(words):
        raise ParseError(f"cannot parse prompt {prompt!r}: it ends where a noun phrase should start")
    det = words[i]
    if det in ("a", "an", "the"):
        count, numeral = 1, False
    elif det in NUMBERS:
        count, numeral = NUMBERS[det], True
    else:
        raise ParseError(
            f"cannot parse prompt {prompt!r}: unknown word {det!r} where a determiner should be "
            f"(one of a, an, the, {', '.join(NUMBERS)})"
        )
    i += 1
    attrs: dict[str, str] = {}
    while i < len(words) and words[i] in _ATTR_KIND:
        kind = _ATTR_KIND[words[i]]
        if kind in attrs:
            raise ParseError(
                f"cannot parse prompt {prompt!r}: two {kind} words ({attrs[kind]!r}, {words[i]!r})"
            )
        attrs[kind] = words[i]
        i += 1
    if i >= len(words):
        raise ParseError(f"cannot parse prompt {prompt!r}: noun phrase without a shape at the end")
    noun = words[i]
    if noun in SHAPES:
        shape, plural = noun, False
    elif noun in _SINGULAR:
        shape, plural = _SINGULAR[noun], True
    else:
        raise ParseError(
            f"cannot parse prompt {prompt!r}: unknown word {noun!r} (expected a shape {list(SHAPES)}, "
            f"or a color/texture/size word)"
        )
    if plural != (count > 1):
        raise ParseError(f"cannot parse prompt {prompt!r}: {det!r} does not agree with {noun!r}")
    return Entity(shape, count, attrs.get("color"), attrs.get("texture"), attrs.get("size"), numeral), i + 1


def _match_relation(words: list[str], i: int) -> str | None:
    for rel in RELATIONS:
        n = len(rel.split())
        if " ".join(words[i : i + n]) == rel:
            return rel
    return None


def parse_prompt(prompt: str) -> Spec:
    """Prompt -> scene facts (entities with counts and attributes, relations). Raises ParseError."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ParseError(f"cannot parse prompt {prompt!r}: it is empty")
    words = normalize(prompt)
    entities, relations = [], []
    ent, i = _parse_np(words, 0, prompt)
    entities.append(ent)
    while i < len(words):
        rel = _match_relation(words, i)
        if words[i] == "and":
            i += 1
        elif rel is not None:
            i += len(rel.split())
        else:
            raise ParseError(
                f"cannot parse prompt {prompt!r}: unknown word {words[i]!r} after a noun phrase "
                f"(expected 'and' or a relation: {', '.join(RELATIONS)})"
            )
        ent, i = _parse_np(words, i, prompt)
        entities.append(ent)
        if rel is not None:
            if entities[-2].count > 1 or ent.count > 1:
                raise ParseError(
                    f"cannot parse prompt {prompt!r}: relation {rel!r} between groups is not supported"
                )
            relations.append(Relation(len(entities) - 2, rel, len(entities) - 1))
    spec = Spec(" ".join(words), tuple(entities), tuple(relations))
    if spec.n_objects > MAX_OBJECTS:
        raise ParseError(f"cannot parse prompt {prompt!r}: {spec.n_objects} objects, at most {MAX_OBJECTS}")
    return spec


def classify(spec: Spec) -> str:
    """The T2I-CompBench++-style category of a parsed prompt (or 'single')."""
    groups = {RELATIONS[r.relation] for r in spec.relations}
    numeric = any(e.numeral or e.count > 1 for e in spec.entities)
    kinds = {k for e in spec.entities for k, _ in e.attrs()}
    if not groups and not numeric:
        if len(spec.entities) == 1:
            return "single"
        binding = kinds or {"size"}
        if len(binding) == 1:
            return {"color": "color", "texture": "texture", "size": "shape"}[binding.pop()]
        return "complex"
    features = groups | ({"numeracy"} if numeric else set())
    if len(features) == 1 and len(spec.relations) <= 1 and not (kinds - {"color"}):
        return features.pop()
    return "complex"


def join(entities: list[Entity], links: list[str | None]) -> str:
    """Write a prompt: links[i] joins entity i and i+1 ('and' when None); relation objects get 'the' for non-spatial."""
    out = entities[0].phrase()
    for ent, link in zip(entities[1:], links):
        det = "the" if link in ("larger than", "smaller than") else None
        out += f" {link or 'and'} {ent.phrase(det)}"
    return out
