"""Yes/no questions in the world: ground-truth decomposition (DSG style) and their exact answers.

Decomposition of a prompt, per noun phrase: an existence question ("is there a circle?"), the parent of one
question per attribute ("is there a red circle?"), a shape question ("is the red object a circle?") and, for
counted groups, an exact count ("are there exactly two green triangles?"); one question per relation ("is the red
circle to the left of the blue square?"); and one question that catches what the prompt did not ask for: the
exact number of objects ("are there exactly two objects?"). Without it, a self-judged loop learns to draw extra
objects (reward hacking). `answer` reads any question of these forms, so it also grades self-written questions.
"""

from __future__ import annotations

from dataclasses import dataclass

from silmm.world.grammar import (
    NUMBER_WORDS,
    NUMBERS,
    RELATIONS,
    Entity,
    ParseError,
    Spec,
    _article,
    _parse_np,
    normalize,
    parse_prompt,
)
from silmm.world.oracle import SceneView, count, holds
from silmm.world.scene import PLURALS

QUESTION_TYPES = ("existence", "color", "shape", "texture", "size", "relation", "count")
_NUMS = {**NUMBERS, **{w: n for n, w in NUMBER_WORDS.items()}}


@dataclass(frozen=True)
class Question:
    text: str
    type: str
    parents: tuple[int, ...] = ()


def _words(e: Entity, plural: bool = False) -> str:
    noun = PLURALS[e.shape] if plural else e.shape
    return " ".join([v for _, v in e.attrs()] + [noun])


def _there_is(words: str) -> str:
    return f"is there {_article(words)} {words}?"


def _relation_q(a: Entity, relation: str, b: Entity) -> str:
    return f"is the {_words(a)} {relation} the {_words(b)}?"


def _count_q(words_singular: str, words_plural: str, n: int) -> str:
    return (
        f"is there exactly one {words_singular}?"
        if n == 1
        else f"are there exactly {NUMBER_WORDS[n]} {words_plural}?"
    )


def decompose(prompt: str | Spec) -> list[Question]:
    spec = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    out: list[Question] = []
    index: dict[str, int] = {}

    def add(text: str, qtype: str, parents: tuple[int, ...] = ()) -> int:
        if text not in index:
            index[text] = len(out)
            out.append(Question(text, qtype, parents))
        return index[text]

    roots = []
    for e in spec.entities:
        root = add(_there_is(e.shape), "existence")
        roots.append(root)
        for kind, value in e.attrs():
            add(_there_is(f"{value} {e.shape}"), kind, (root,))
        if e.attrs():
            add(f"is the {e.attrs()[0][1]} object {_article(e.shape)} {e.shape}?", "shape", (root,))
        if e.numeral or e.count > 1:
            add(_count_q(_words(e), _words(e, plural=True), e.count), "count", (root,))
    for r in spec.relations:
        a, b = spec.entities[r.subject], spec.entities[r.object]
        add(_relation_q(a, r.relation, b), "relation", (roots[r.subject], roots[r.object]))
    add(_count_q("object", "objects", spec.n_objects), "count")
    return out


def _np(words: list[str], det: str, question: str) -> Entity:
    ent, end = _parse_np([det, *words], 0, question)
    if end != len(words) + 1:
        raise ParseError(
            f"cannot read question {question!r}: unexpected words {' '.join(words[end - 1 :])!r}"
        )
    return ent


def read(question: str) -> tuple[str, tuple]:
    """Question text -> (type, semantic form). Raises ParseError naming the question."""
    w = normalize(question.rstrip("?").strip())
    if len(w) >= 4 and w[:3] in (["is", "there", "exactly"], ["are", "there", "exactly"]) and w[3] in _NUMS:
        n, rest = _NUMS[w[3]], w[4:]
        if rest in (["object"], ["objects"]):
            return "count", ("total", n)
        ent = _np(rest, "a" if n == 1 else "two", question)
        return "count", ("count", Entity(ent.shape, 1, ent.color, ent.texture, ent.size), n)
    if w[:2] == ["is", "there"] and len(w) > 2:
        ent = _np(w[3:], w[2], question)
        kinds = [k for k, _ in ent.attrs()]
        return (kinds[-1] if kinds else "existence"), ("exists", ent)
    if w[:2] == ["is", "the"] and "object" in w:
        k = w.index("object")
        attr = _np([*w[2:k], "circle"], "a", question)
        shape = _np(w[k + 2 :], w[k + 1], question)
        return "shape", ("exists", Entity(shape.shape, 1, attr.color, attr.texture, attr.size))
    if w[:2] == ["is", "the"]:
        for rel in RELATIONS:
            marker = f" {rel} the "
            text = " ".join(w[2:])
            if marker in f" {text} ":
                left, right = f" {text} ".split(marker, 1)
                a = _np(left.split(), "the", question)
                b = _np(right.split(), "the", question)
                return "relation", ("relation", a, rel, b)
    raise ParseError(f"cannot read question {question!r}: not one of the world's question forms")


def answer(question: str, view: SceneView) -> bool:
    """The exact yes/no answer of a question about a scene."""
    _, form = read(question)
    if form[0] == "total":
        return len(view.objects) + (view.residual > 0) == form[1]
    if form[0] == "count":
        return count(view, form[1]) == form[2]
    if form[0] == "exists":
        return count(view, form[1]) > 0
    _, a, rel, b = form
    ia = [i for i, o in enumerate(view.objects) if a.matches(o)]
    ib = [j for j, o in enumerate(view.objects) if b.matches(o)]
    return any(i != j and holds(rel, view, i, j) for i in ia for j in ib)


def question_type(question: str) -> str:
    return read(question)[0]
