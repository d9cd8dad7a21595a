"""Question modes, and the loop's judge-vs-oracle measurement on hand-made candidates."""

import pytest
from tiny_adapter import TinyAdapter, TinyMeasure, render

from silmm.feedback import Candidate
from silmm.loop import measure_candidates
from silmm.questions import ask


def test_modes_self_whole_gt():
    adapter = TinyAdapter("discrete")
    prompts = ["red and blue", "and a"]
    assert ask(adapter, prompts, mode="self", batch_size=1) == [["is there red ?", "is there blue ?"], []]
    assert ask(adapter, prompts[:1], mode="whole") == [['does the image show "red and blue"?']]
    assert ask(adapter, prompts[:1], mode="whole", whole_template="{prompt}?") == [["red and blue?"]]

    def gt(prompt: str) -> list[str]:
        if "and a" in prompt:
            raise ValueError(f"cannot parse {prompt!r}")
        return ["is there red ?"]

    assert ask(adapter, prompts, mode="gt", gt_questions=gt) == [
        ["is there red ?"],
        [],
    ]  # unparseable -> dropped
    with pytest.raises(ValueError, match="questions.mode='gt' needs a ground-truth decomposition"):
        ask(adapter, prompts, mode="gt")


class Unparseable(TinyMeasure):
    def oracle_score(self, prompt, image):
        if prompt == "purple":
            raise ValueError("outside the grammar")
        return super().oracle_score(prompt, image)


def test_measure_candidates_hand_worked():
    """Prompt 0 "red and blue": k0 draws red+blue (oracle 1.0), k1 draws red only (0.5).
    Self answers: k0 says yes/yes (both true), k1 says yes/yes (blue is false), prompt 1 "purple" says yes (true)
    -> agreement 4/5.
    The self-judge prefers k1 (score 0.4 > 0.2) although the oracle prefers k0 -> self-best hit rate 0/1;
    prompt 1 cannot be graded by the oracle and is counted."""
    images = [render([0, 2, 0, 2]), render([0, 0, 0, 0]), render([4, 4, 4, 4])]
    qs = ["is there red ?", "is there blue ?"]
    cands = [
        Candidate(0, 0, 0, "red and blue", 1, "a.png", qs, [0.6, 0.6], [0.4, 0.4], 0.2),
        Candidate(1, 0, 1, "red and blue", 2, "b.png", qs, [0.7, 0.7], [0.3, 0.3], 0.4),
        Candidate(2, 1, 0, "purple", 3, "c.png", ["is there purple ?"], [0.9], [0.1], 0.8),
    ]
    got = measure_candidates(Unparseable(), cands, images)
    assert got["judge_agreement"] == {"color": 4 / 5, "overall": 4 / 5}
    assert got["self_best_is_oracle_best"] == 0.0 and got["prompts_unmeasurable"] == 1
