"""Training examples for the world models' four skills, generated on the fly from a seeded RNG.

Drawing examples use only training prompts (never a held-out combination with another object). VQA examples come
from a broad range of imperfect scenes: prompt layouts with swapped bindings, changed attributes, moved, missing
or extra objects, and random scenes with occlusion, so the judge has seen the kinds of mistakes a drawing model
makes. The model never sees its own drawings labelled by the oracle: that would be outside supervision of exactly
the mistakes the self-improvement loop has to catch by itself.
"""

from __future__ import annotations

import random
from dataclasses import replace

from silmm.world.grammar import (
    ALL_CATEGORIES,
    CATEGORIES,
    NUMBER_WORDS,
    RELATIONS,
    Entity,
    Spec,
    normalize,
    parse_prompt,
)
from silmm.world.layout import MIN_BACK_VISIBLE, _visible_share, canonical_layout, random_layout, random_scene
from silmm.world.oracle import SceneView, count, holds
from silmm.world.questions import _article, _count_q, _relation_q, _words, answer, decompose
from silmm.world.scene import COLORS, GRID, SHAPES, SIZES, TEXTURES, Obj, draw_order, overlaps
from silmm.world.tokenizer import objs_to_codes
from silmm.world.writer import is_heldout, sample_prompt

IGNORE = -100
DRAW_WEIGHTS = {**{c: 1.0 for c in CATEGORIES}, "single": 1.5, "complex": 1.5}


def ids_of(tokens: list[str], vocab: dict[str, int]) -> list[int]:
    return [vocab[t] for t in tokens]


def question_tokens(question: str) -> list[str]:
    return [*normalize(question.rstrip("?").strip()), "?"]


def see_sequence(codes: list[int] | tuple[int, ...], question: str) -> list[str]:
    """VQA input: the question first, then the image, so that every image cell can already compare itself with
    the question's words; p(yes) is read at the final `<ans>`."""
    return ["<bos>", "<see>", *question_tokens(question), "<img>", *[f"<s{c}>" for c in codes], "</see>", "<ans>"]


def cell_relevance(question: str, view: SceneView) -> list[int]:
    """Auxiliary VQA target: for each lattice cell, 1 if its object is what the question is about. A dense
    signal that teaches image cells to compare themselves with the question (used in training only)."""
    from silmm.world.questions import read

    _, form = read(question)
    if form[0] == "total":
        wanted = lambda o: True  # noqa: E731
    elif form[0] in ("exists", "count"):
        wanted = form[1].matches
    else:
        wanted = lambda o: form[1].matches(o) or form[3].matches(o)  # noqa: E731
    flags = [0] * (GRID * GRID)
    for o in view.objects:
        flags[o.row * GRID + o.col] = int(wanted(o))
    return flags


GEOMETRY_SIZE = 2 + len(RELATIONS)  # values per cell of `relation_geometry`


def relation_geometry(question: str, view: SceneView) -> list[list[int]] | None:
    """Auxiliary target for a relation question whose subject phrase names exactly one drawn object `a`: for each
    lattice cell with an object `k`, [k is `a`, k matches the object phrase, then for every relation r in RELATIONS:
    r holds between `a` and `k`]; IGNORE rows for empty cells. It asks every drawn object how it lies relative to the
    subject, a dense signal for the geometry that the yes/no answer alone did not teach (docs/RESULTS.md). None
    otherwise (training only)."""
    from silmm.world.questions import read

    _, form = read(question)
    if form[0] != "relation":
        return None
    subject = [i for i, o in enumerate(view.objects) if form[1].matches(o)]
    if len(subject) != 1:
        return None
    (a,) = subject
    rows = [[IGNORE] * GEOMETRY_SIZE for _ in range(GRID * GRID)]
    for k, o in enumerate(view.objects):
        ends = [int(k == a), int(form[3].matches(o))]
        rows[o.row * GRID + o.col] = [*ends, *(int(k != a and holds(r, view, a, k)) for r in RELATIONS)]
    return rows


def in_prompt_order(objs: list[Obj], spec: Spec) -> bool:
    """True if the objects of `random_layout` (one per entity instance, in the prompt's entity order) come in
    raster order entity by entity: the first cell drawn holds the first entity the prompt names, and so on."""
    entity = [i for i, e in enumerate(spec.entities) for _ in range(e.count)]
    by_cell = sorted(range(len(objs)), key=lambda s: objs[s].row * GRID + objs[s].col)
    return all(entity[a] <= entity[b] for a, b in zip(by_cell, by_cell[1:]))


def canonical_codes(objs: list[Obj]) -> list[int]:
    """Codes as the pixel parser reports them: the front layer holds exactly the objects that hide another."""
    view = SceneView.from_objs(objs)
    front = {a for a, _ in view.front_of}
    return objs_to_codes([replace(o, layer=int(i in front)) for i, o in enumerate(view.objects)])


def scene_ok(objs: list[Obj]) -> bool:
    """No two objects on one cell, no same-layer overlap, every hidden object visible enough to be parsed."""
    objs = draw_order(objs)
    for i, a in enumerate(objs):
        for b in objs[i + 1 :]:
            if (a.row, a.col) == (b.row, b.col):
                return False
            if overlaps(a, b) and (a.layer == b.layer or _visible_share(a, b) < MIN_BACK_VISIBLE):
                return False
    return True


def perturb(objs: list[Obj], rng: random.Random) -> list[Obj]:
    """One random mistake of the kind a drawing model makes."""
    objs = list(objs)
    i = rng.randrange(len(objs))
    kind = rng.randrange(7)
    if kind == 0:
        objs[i] = replace(objs[i], color=rng.choice(COLORS))
    elif kind == 1:
        objs[i] = replace(
            objs[i],
            **rng.choice(
                [
                    {"shape": rng.choice(SHAPES)},
                    {"texture": rng.choice(TEXTURES)},
                    {"size": rng.choice(SIZES)},
                ]
            ),
        )
    elif kind == 2 and len(objs) > 1:
        j = rng.choice([j for j in range(len(objs)) if j != i])
        objs[i], objs[j] = replace(objs[i], color=objs[j].color), replace(objs[j], color=objs[i].color)
    elif kind == 3:
        objs[i] = replace(objs[i], row=rng.randrange(GRID), col=rng.randrange(GRID))
    elif kind == 4 and len(objs) > 1:
        objs.pop(i)
    elif kind == 5:
        objs.append(random_scene(rng, 1)[0])
    elif kind == 6 and len(objs) > 1:
        j = rng.choice([j for j in range(len(objs)) if j != i])
        objs[i], objs[j] = (
            replace(objs[i], row=objs[j].row, col=objs[j].col),
            replace(objs[j], row=objs[i].row, col=objs[i].col),
        )
    return objs


_OPPOSITE = {"to the left of": "to the right of", "above": "below", "in front of": "behind", "larger than": "smaller than"}
_OPPOSITE |= {v: k for k, v in _OPPOSITE.items()}


def counterfactual(spec: Spec, rng: random.Random) -> Spec:
    """The prompt with one fact changed (attribute swapped or changed, shape, relation flipped, count off by one):
    its questions are the near misses a judge must answer "no" to."""
    ents, rels = list(spec.entities), list(spec.relations)
    i = rng.randrange(len(ents))
    op = rng.randrange(5)
    if op == 0 and len(ents) > 1:
        j = rng.choice([j for j in range(len(ents)) if j != i])
        k = rng.choice(("color", "texture", "size"))
        ents[i], ents[j] = replace(ents[i], **{k: getattr(ents[j], k)}), replace(ents[j], **{k: getattr(ents[i], k)})
    elif op == 1:
        k, values = rng.choice((("color", COLORS), ("texture", TEXTURES), ("size", SIZES)))
        ents[i] = replace(ents[i], **{k: rng.choice(values)})
    elif op == 2:
        ents[i] = replace(ents[i], shape=rng.choice(SHAPES))
    elif op == 3 and rels:
        r = rng.randrange(len(rels))
        rels[r] = replace(rels[r], relation=_OPPOSITE[rels[r].relation] if rng.random() < 0.7 else rng.choice(list(RELATIONS)))
    else:
        n = max(1, min(4, ents[i].count + rng.choice((-1, 1))))
        ents[i] = replace(ents[i], count=n, numeral=ents[i].numeral or n > 1)
    return Spec(spec.prompt, tuple(ents), tuple(rels))


def balanced_questions(spec: Spec, view: SceneView, rng: random.Random, n: int) -> list[str]:
    """Up to n questions from the prompt's decomposition and a counterfactual's, about half of them true."""
    pool = {q.text for q in decompose(spec)} | {q.text for q in decompose(counterfactual(spec, rng))}
    pool = sorted(pool)
    rng.shuffle(pool)
    yes = [q for q in pool if answer(q, view)]
    no = [q for q in pool if not answer(q, view)]
    half = max(1, n // 2)
    picked = yes[:half] + no[:half]
    picked += [q for q in pool if q not in picked][: n - len(picked)]
    rng.shuffle(picked)
    return picked


def probe_questions(view: SceneView, rng: random.Random, n: int) -> list[str]:
    """Random questions about a scene, about half of them true."""
    objs = view.objects
    out = []
    for _ in range(n):
        o = rng.choice(objs) if objs and rng.random() < 0.6 else random_scene(rng, 1)[0]
        attrs = {k: getattr(o, k) for k in ("size", "texture", "color") if rng.random() < 0.4}
        ent = Entity(o.shape, 1, attrs.get("color"), attrs.get("texture"), attrs.get("size"))
        form = rng.randrange(5)
        if form == 0:
            words = _words(ent)
            out.append(f"is there {_article(words)} {words}?")
        elif form == 1:
            k = rng.choice(("color", "texture", "size"))
            out.append(f"is the {getattr(o, k)} object {_article(o.shape)} {rng.choice((o.shape, *SHAPES))}?")
        elif form == 2:
            c = sum(ent.matches(x) for x in objs)
            c = max(1, min(4, c + rng.choice((0, 0, -1, 1))))
            out.append(_count_q(_words(ent), _words(Entity(**{**ent.__dict__, "count": 2}), True), c))
        elif form == 3:
            c = max(1, min(8, len(objs) + rng.choice((0, 0, -1, 1))))
            out.append(_count_q("object", "objects", c))
        elif len(objs) >= 2:
            a, b = rng.sample(range(len(objs)), 2)
            rels = [r for r in RELATIONS if holds(r, view, a, b)] if rng.random() < 0.5 else list(RELATIONS)
            rel = rng.choice(rels or list(RELATIONS))
            ea, eb = (Entity(objs[x].shape, 1, objs[x].color if rng.random() < 0.7 else None) for x in (a, b))
            out.append(_relation_q(ea, rel, eb))
    return out


def relation_question(view: SceneView, rng: random.Random) -> str | None:
    """A relation question about two drawn objects: the relation true or not, and in ~45 % of cases one noun phrase
    a near miss (colour swapped with the other object, another colour, shape or texture), so the judge learns that
    a relation between objects that are not there is false, the commonest mistake on a drawing that missed a
    binding. None for scenes with fewer than two objects."""
    objs = view.objects
    if len(objs) < 2:
        return None
    a, b = rng.sample(range(len(objs)), 2)
    true_rels = [r for r in RELATIONS if holds(r, view, a, b)]
    rel = rng.choice(true_rels) if true_rels and rng.random() < 0.6 else rng.choice(list(RELATIONS))

    def phrase(o: Obj) -> Entity:
        keep = {k: getattr(o, k) for k, share in (("color", 0.85), ("texture", 0.25), ("size", 0.15)) if rng.random() < share}
        return Entity(o.shape, 1, keep.get("color"), keep.get("texture"), keep.get("size"))

    ea, eb = phrase(objs[a]), phrase(objs[b])
    if rng.random() < 0.45:
        op = rng.randrange(4)
        if op == 0 and ea.color and eb.color and ea.color != eb.color:
            ea, eb = replace(ea, color=eb.color), replace(eb, color=ea.color)
        elif op == 1:
            ea = replace(ea, color=rng.choice([c for c in COLORS if c != ea.color]))
        elif op == 2:
            eb = replace(eb, shape=rng.choice([s for s in SHAPES if s != eb.shape]))
        else:
            ea = replace(ea, texture=rng.choice([t for t in TEXTURES if t != objs[a].texture]))
    return _relation_q(ea, rel, eb)


def count_question(spec: Spec, view: SceneView, rng: random.Random) -> str:
    """A count question about a scene laid out for `spec`: one of its entities as the prompt names it or, one time
    in three, all objects; the number asked is the true one half of the time and one off otherwise. Groups of two
    to four alike objects, which prompts ask about, are rare in random scenes, so without these a judge says no to
    every "are there exactly two ...?"."""
    if rng.random() < 1 / 3:
        n, one, many, top = len(view.objects) + (view.residual > 0), "object", "objects", 8
    else:
        e = rng.choice(spec.entities)
        n, one, many, top = count(view, e), _words(e), _words(e, True), 4
    asked = n if rng.random() < 0.5 else n + rng.choice((-1, 1))
    return _count_q(one, many, max(1, min(top, asked)))


RELATION_SHARE = 0.5  # share of VQA examples that ask a `relation_question` (the shipped recipes' setting)


class ExampleMaker:
    """Token-id examples for one model kind: dicts with `ids`, `labels` and (continuous draw) `feat_codes`."""

    def __init__(self, kind: str, vocab: dict[str, int], seed: int, relation_share: float = RELATION_SHARE,
                 ordered: bool = False, count_share: float = 0.0, canonical_share: float = 0.0):
        self.kind, self.vocab, self.rng, self.relation_share = kind, vocab, random.Random(seed), relation_share
        self.count_share = count_share  # share of VQA examples that ask a `count_question` about a numeracy layout
        self.canonical_share = canonical_share  # share of VQA prompt scenes laid out by `canonical_layout`
        self.ordered = ordered  # discrete draws: the prompt's entities in raster order where a layout allows it

    def t(self, tokens: list[str]) -> list[int]:
        return ids_of(tokens, self.vocab)

    def write(self) -> dict:
        cat = self.rng.choice(ALL_CATEGORIES)
        words = normalize(sample_prompt(cat, self.rng))
        ids = self.t(["<bos>", "<write>", f"<c:{cat}>", *words, "<eos>"])
        return {"ids": ids, "labels": [IGNORE] * 3 + ids[3:]}

    def ask(self) -> dict:
        prompt = sample_prompt(self.rng.choice(ALL_CATEGORIES), self.rng)
        qs = [t for q in decompose(prompt) for t in [*question_tokens(q.text), ";"]][:-1]
        head = self.t(["<bos>", "<ask>", *normalize(prompt), "<sep>"])
        tail = self.t([*qs, "<eos>"])
        return {"ids": head + tail, "labels": [IGNORE] * len(head) + tail}

    def draw(self) -> dict:
        cats, weights = zip(*DRAW_WEIGHTS.items())
        while True:  # a few crowded prompts have no layout: draw another prompt
            prompt = sample_prompt(self.rng.choices(cats, weights)[0], self.rng, split="train")
            spec = parse_prompt(prompt)
            try:
                objs = canonical_layout(spec) if self.kind == "continuous" else random_layout(spec, self.rng)
                for _ in range(20 if self.ordered and self.kind == "discrete" else 0):
                    if in_prompt_order(objs, spec):
                        break
                    objs = random_layout(spec, self.rng)
                break
            except RuntimeError:
                continue
        codes = canonical_codes(objs)
        head = self.t(["<bos>", "<draw>", *normalize(prompt), "<img>"])
        if self.kind == "continuous":
            ids = head + self.t([f"<q{i}>" for i in range(len(codes))])
            return {"ids": ids, "labels": [IGNORE] * len(ids), "feat_codes": codes, "query_start": len(head)}
        tail = self.t([f"<d{c}>" for c in codes])
        return {"ids": head + tail, "labels": [IGNORE] * len(head) + tail}

    def _counted(self) -> tuple[list[Obj], SceneView, str]:
        """A numeracy prompt's layout, perturbed up to twice, and a `count_question` about it."""
        rng = self.rng
        while True:
            spec = parse_prompt(sample_prompt("numeracy", rng))
            try:
                objs = random_layout(spec, rng)
                break
            except RuntimeError:
                continue
        objs = self._perturbed(objs)
        view = SceneView.from_objs(objs)
        return objs, view, count_question(spec, view, rng)

    def _perturbed(self, objs: list[Obj]) -> list[Obj]:
        """The layout with up to two `perturb` mistakes (each kept only if the scene stays drawable)."""
        for _ in range(self.rng.choice((0, 1, 1, 2))):
            cand = perturb(objs, self.rng)
            if scene_ok(cand):
                objs = cand
        return objs

    def _prompt_scene(self, spec: Spec) -> list[Obj]:
        """A scene that satisfies `spec`: for `canonical_share` of the training prompts the one world-continuous
        learns to draw (`canonical_layout`), else a `random_layout` (RuntimeError when none is found)."""
        if self.canonical_share and self.rng.random() < self.canonical_share and not is_heldout(spec):
            return canonical_layout(spec)
        return random_layout(spec, self.rng)

    def see(self, n_questions: int = 4) -> dict:
        rng = self.rng
        if self.count_share and rng.random() < self.count_share:
            objs, view, q = self._counted()
            return self._seen(objs, view, q)
        prompt = None
        if rng.random() < 0.5:
            prompt = sample_prompt(rng.choice(ALL_CATEGORIES), rng)
            try:
                objs = self._prompt_scene(parse_prompt(prompt))
            except RuntimeError:
                prompt = None
        if prompt is not None:
            objs = self._perturbed(objs)
            view = SceneView.from_objs(objs)
            qs = balanced_questions(parse_prompt(prompt), view, rng, n_questions - 1) + probe_questions(view, rng, 1)
        else:
            objs = random_scene(rng)
            while not scene_ok(objs):
                objs = random_scene(rng)
            view = SceneView.from_objs(objs)
            qs = probe_questions(view, rng, n_questions)
        q = rng.choice(qs or [_count_q("object", "objects", max(1, min(8, len(objs))))])
        if rng.random() < self.relation_share:
            q = relation_question(view, rng) or q
        return self._seen(objs, view, q)

    def _seen(self, objs: list[Obj], view: SceneView, q: str) -> dict:
        """The VQA example: question, image cells, answer, and the auxiliary per-cell targets."""
        head = self.t(see_sequence(canonical_codes(objs), q))
        ans = self.vocab["yes" if answer(q, view) else "no"]
        cells = [IGNORE] * len(head) + [IGNORE]
        start = head.index(self.vocab["<img>"]) + 1
        for cell, flag in enumerate(cell_relevance(q, view)):
            cells[start + cell] = flag
        example = {"ids": head + [ans], "labels": [IGNORE] * len(head) + [ans], "cell_labels": cells}
        geometry = relation_geometry(q, view)
        if geometry is not None:
            example["geometry"], example["geometry_start"] = geometry, start
        return example


__all__ = [
    "ExampleMaker",
    "IGNORE",
    "NUMBER_WORDS",
    "canonical_codes",
    "count_question",
    "in_prompt_order",
    "perturb",
    "probe_questions",
    "relation_question",
    "scene_ok",
]
