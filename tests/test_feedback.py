"""Self-feedback scores, worked by hand for each rule, and the batched question answering."""

import pytest
import torch
from tiny_adapter import TinyAdapter, render

from silmm.feedback import answer_all, score

P_YES, P_NO = [0.6, 0.2, 0.5], [0.2, 0.6, 0.1]


def test_prob_diff_hand_worked():
    """mean([0.6-0.2, 0.2-0.6, 0.5-0.1]) = mean([0.4, -0.4, 0.4]) = 0.1333"""
    assert score(P_YES, P_NO, rule="prob_diff") == pytest.approx(0.4 / 3)


def test_prob_diff_renormalised_hand_worked():
    """over {yes, no}: [0.75-0.25, 0.25-0.75, 0.8333-0.1667] = [0.5, -0.5, 0.6667] -> mean 0.2222"""
    assert score(P_YES, P_NO, rule="prob_diff", renormalize=True) == pytest.approx((0.5 - 0.5 + 2 / 3) / 3)


def test_yes_ratio_hand_worked():
    """p_yes > p_no for questions 1 and 3 -> 2/3"""
    assert score(P_YES, P_NO, rule="yes_ratio") == pytest.approx(2 / 3)


def test_random_rule_is_seeded_and_in_range():
    values = [score(P_YES, P_NO, rule="random", seed=s) for s in range(20)]
    assert all(-1 <= v <= 1 for v in values) and len(set(values)) == 20
    assert score(P_YES, P_NO, rule="random", seed=3) == values[3]
    with pytest.raises(ValueError, match=r"'vote' is not one of \['prob_diff', 'yes_ratio', 'random'\]"):
        score(P_YES, P_NO, rule="vote")


def test_answer_all_batches_match_one_by_one():
    adapter = TinyAdapter("discrete")
    images = [render([0, 1, 2, 3]), render([4, 4, 5, 5])]
    questions = [["is there red ?", "is there blue ?"], [], ["is there white ?"]]
    images.append(render([6, 7, 6, 7]))
    yes, no = answer_all(adapter, images, questions, batch_size=2)
    assert [len(y) for y in yes] == [2, 0, 1]
    p_yes, p_no = adapter.answer_yes_no([images[2]], ["is there white ?"])
    torch.testing.assert_close(torch.tensor(yes[2]), p_yes)
    assert all(0 < y + n <= 1 for ys, ns in zip(yes, no) for y, n in zip(ys, ns))


def test_answer_all_asks_each_question_about_the_same_pixels_once():
    adapter = TinyAdapter("discrete")
    asked = []

    class Counting:
        def answer_yes_no(self, images, questions):
            asked.extend(zip((im.tobytes() for im in images), questions, strict=True))
            return adapter.answer_yes_no(images, questions)

    a, b = render([0, 1, 2, 3]), render([4, 4, 5, 5])
    images = [a, b, render([0, 1, 2, 3]), a]  # the third is a new image object with a's pixels
    questions = [
        ["is there red ?", "is there blue ?"],
        ["is there red ?"],
        ["is there blue ?", "is there red ?"],
        [],
    ]
    yes, no = answer_all(Counting(), images, questions, batch_size=2)
    assert len(asked) == len(set(asked)) == 3  # (a, red), (a, blue), (b, red)
    assert (yes[2], no[2]) == ([yes[0][1], yes[0][0]], [no[0][1], no[0][0]]) and yes[3] == []
    p_yes, _ = adapter.answer_yes_no([b], ["is there red ?"])
    torch.testing.assert_close(torch.tensor(yes[1]), p_yes)
