"""Prompt parsing for T2I-CompBench: noun phrases, relation objects, numeracy targets, adjective removal.

The official scorers use spaCy `en_core_web_sm`. When spaCy and that model are installed we use them exactly as the
official code does; otherwise a documented rule-based fallback (`FALLBACK_NAME`) runs, and `parser_name()` says
which one was used so results record it. The fallback splits at conjunctions, prepositions, common verbs and
punctuation; it matches spaCy on the template prompts ("a green bench and a blue bowl", "a dog behind a chair")
and approximates it on free sentences. Numeracy parsing never needs spaCy (plain word tokens, as the official
parser effectively sees them on these prompts).
"""

from __future__ import annotations

import functools
import re

FALLBACK_NAME = "fallback-rules-v1 (spaCy en_core_web_sm not installed)"
EXCLUDED_PHRASES = {"top", "the side", "the left", "the right"}  # official BLIP_vqa.py filter
PERSON_WORDS = {"girl": "person", "boy": "person", "man": "person", "woman": "person"}
NUMERACY_RENAMES = {
    **PERSON_WORDS,
    "ship": "boat",
    "telivision": "tv",
    "goldfish": "fish",
    "painting": "picture",
}
NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
}
COMPLEX_RELATIONS = (
    "on top of",
    "on bottom of",
    "on the left",
    "on the right",
    "next to",
    "on side of",
    "near",
)

_DETERMINERS = {
    "a",
    "an",
    "the",
    "its",
    "their",
    "his",
    "her",
    "this",
    "that",
    "these",
    "those",
    "some",
    "each",
}
_PREPOSITIONS = {
    "and", "or", "with", "on", "in", "of", "at", "near", "beside", "under", "over", "above", "below", "behind",
    "by", "to", "from", "into", "onto", "for", "while", "against", "across", "through", "next", "inside",
    "outside", "around", "between", "front", "top", "bottom", "left", "right", "side", "as", "like", "atop",
}  # fmt: skip
_VERBS = {
    "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "sat", "sits", "sit", "stood",
    "stands", "stand", "lay", "lies", "lie", "held", "holds", "hold", "hung", "hangs", "made", "makes", "looked",
    "looks", "seemed", "seems", "rested", "rests", "added", "adds", "gave", "gives", "filled", "fills", "placed",
    "sang", "completed", "cluttered", "entertained", "hidden", "rode", "rides", "ran", "runs", "flew", "flies",
}  # fmt: skip
_ADJECTIVES = {
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "grey",
    "silver", "gold", "golden", "beige", "round", "square", "rectangular", "triangular", "circular", "oval",
    "oblong", "spherical", "cylindrical", "conical", "cubic", "pyramidal", "hexagonal", "octagonal", "teardrop",
    "big", "small", "large", "tiny", "tall", "short", "long", "wooden", "metallic", "fluffy", "furry", "soft",
    "hard", "smooth", "rough", "shiny", "old", "new", "cute", "little", "tasty", "delicious", "leather",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*|[^\sA-Za-z0-9]")


@functools.cache
def _spacy_nlp():
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        return None


def parser_name() -> str:
    nlp = _spacy_nlp()
    if nlp is None:
        return FALLBACK_NAME
    import spacy

    return f"spacy {spacy.__version__} en_core_web_sm {nlp.meta.get('version', '?')}"


def tokens(text: str) -> list[str]:
    """Words and single punctuation marks, roughly as spaCy splits these prompts."""
    return _WORD.findall(text)


def _is_noun_like(word: str) -> bool:
    w = word.lower()
    return bool(re.match(r"[a-z]", w)) and not ({w} & (_DETERMINERS | _PREPOSITIONS | _VERBS | _ADJECTIVES))


def noun_phrases(prompt: str) -> list[str]:
    """Noun chunks of the prompt (official attribute-binding questions are `f"{phrase}?"`)."""
    nlp = _spacy_nlp()
    if nlp is not None:
        return [c.text for c in nlp(prompt).noun_chunks if c.text not in EXCLUDED_PHRASES]
    phrases, current = [], []
    for tok in tokens(prompt) + ["."]:
        low = tok.lower()
        if low in _PREPOSITIONS or low in _VERBS or not re.match(r"[A-Za-z0-9]", tok):
            if any(_is_noun_like(w) for w in current):
                phrases.append(" ".join(current))
            current = []
        else:
            current.append(tok)
    return [p for p in phrases if p not in EXCLUDED_PHRASES]


def spatial_objects(prompt: str, relation: str) -> tuple[str, str] | None:
    """First and last noun of a template prompt (official: first and last spaCy NOUN), person-mapped."""
    nlp = _spacy_nlp()
    if nlp is not None:
        nouns = [t.text for t in nlp(prompt) if t.pos_ == "NOUN"]
        pair = (nouns[0], nouns[-1]) if nouns else None
    else:
        low = prompt.lower()
        left, _, right = low.partition(relation) if relation in low else (low, "", "")
        left_nouns = [w for w in tokens(left) if _is_noun_like(w)]
        right_nouns = [w for w in tokens(right) if _is_noun_like(w)]
        pair = (left_nouns[-1], right_nouns[-1]) if left_nouns and right_nouns else None
    if pair is None:
        return None
    return PERSON_WORDS.get(pair[0], pair[0]), PERSON_WORDS.get(pair[1], pair[1])


def complex_spatial_objects(prompt: str) -> tuple[str, str] | None:
    """Nearest noun before and after a complex relation phrase (official `--complex` parsing); None if not 2."""
    low = prompt.lower()
    phrase = next((p for p in COMPLEX_RELATIONS if p in low), None)
    if phrase is None:
        return None
    nlp = _spacy_nlp()
    if nlp is not None:
        doc = nlp(prompt)
        start = low.index(phrase)
        before = [t.text for t in doc if t.idx < start and t.pos_ in ("NOUN", "PROPN")]
        after = [t.text for t in doc if t.idx >= start + len(phrase) and t.pos_ == "NOUN"]
    else:
        left, _, right = low.partition(phrase)
        before = [w for w in tokens(left) if _is_noun_like(w)]
        after = [w for w in tokens(right) if _is_noun_like(w)]
    if not before or not after:
        return None
    obj1, obj2 = before[-1].lower(), after[0].lower()
    return PERSON_WORDS.get(obj1, obj1), PERSON_WORDS.get(obj2, obj2)


def remove_adjectives(prompt: str) -> str:
    """Official complex CLIP text: `' '.join(t.text for t in nlp(prompt) if t.pos_ != 'ADJ')`."""
    nlp = _spacy_nlp()
    if nlp is not None:
        return " ".join(t.text for t in nlp(prompt) if t.pos_ != "ADJ")
    return " ".join(t for t in tokens(prompt) if t.lower() not in _ADJECTIVES)


def parse_object_list(lines: list[str]) -> list[tuple[str, str]]:
    """`new_objects.txt` lines "singular - plural" -> [(singular, plural)], lower-cased."""
    pairs = []
    for line in lines:
        singular, sep, plural = line.lower().partition(" - ")
        if not sep:
            raise ValueError(f"object list line {line!r} is not 'singular - plural'")
        pairs.append((singular.strip(), plural.strip()))
    return pairs


def numeracy_targets(prompt: str, objects: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """[(object, count)] for every "number word + object" in the prompt; object renamed as the official parser.

    A count of one needs the singular form, a count above one the plural (words like "sheep" are both).
    Two-word object names are tried before one-word names.
    """
    singular_of = {s: s for s, _ in objects}
    plural_of = {p: s for s, p in objects}
    words = [t.lower() for t in tokens(prompt)]
    targets = []
    for i, word in enumerate(words):
        if word not in NUMBER_WORDS:
            continue
        count = NUMBER_WORDS[word]
        for span in (2, 1):
            cand = " ".join(words[i + 1 : i + 1 + span])
            forms = singular_of if count == 1 else plural_of
            if len(words[i + 1 : i + 1 + span]) == span and cand in forms:
                name = forms[cand]
                targets.append((NUMERACY_RENAMES.get(name, name), count))
                break
    return targets
