"""Preference pairs: best vs worst, k x k, the score-gap filter, and deterministic tie-breaking."""

from silmm.feedback import Candidate
from silmm.pairs import make_pairs


def cands(prompt_index: int, scores: list[float]) -> list[Candidate]:
    return [
        Candidate(
            prompt_index * 10 + k,
            prompt_index,
            k,
            f"p{prompt_index}",
            100 + k,
            f"{k}.png",
            ["q"],
            [0.5],
            [0.5],
            s,
        )
        for k, s in enumerate(scores)
    ]


def test_best_vs_worst_per_prompt():
    pairs = make_pairs(cands(0, [0.1, 0.9, -0.5, 0.3]) + cands(1, [0.2, 0.25]), per_prompt=1, min_gap=0.1)
    assert [(p.prompt_index, p.chosen, p.rejected) for p in pairs] == [(0, 1, 2)]  # prompt 1: gap 0.05 < 0.1
    assert (pairs[0].chosen_score, pairs[0].rejected_score, pairs[0].chosen_seed, pairs[0].rejected_seed) == (
        0.9,
        -0.5,
        101,
        102,
    )


def test_k_by_k_pairs_skip_small_gaps_and_self_pairs():
    pairs = make_pairs(cands(0, [0.0, 0.9, -0.5, 0.3]), per_prompt=2, min_gap=0.5)
    # top-2: k1 (0.9), k3 (0.3); bottom-2: k2 (-0.5), k0 (0.0); gaps 1.4, 0.9, 0.8, 0.3 -> the last is dropped
    assert [(p.chosen, p.rejected) for p in pairs] == [(1, 2), (1, 0), (3, 2)]
    assert (
        len(make_pairs(cands(0, [0.0, 0.9]), per_prompt=2, min_gap=0.0)) == 1
    )  # never a candidate with itself


def test_ties_are_broken_by_candidate_order():
    pairs = make_pairs(cands(0, [0.5, 0.5, -0.5, -0.5]), per_prompt=1, min_gap=0.1)
    assert [(p.chosen, p.rejected) for p in pairs] == [(0, 3)]
