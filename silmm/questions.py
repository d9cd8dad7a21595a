"""Paper step 3: decompositional self-questioning, and the two ablations of the question source.

- "self": the model splits the prompt into semantic units and writes one yes/no question each (the paper);
  the model should also ask about what the prompt did not request (exact counts, "anything else?"), or the
  loop learns to draw extra objects (see ../shared/docs/SILMM.md).
- "whole": one question per prompt from a visible template (`WHOLE_QUESTION_TEMPLATE`).
- "gt": the world's ground-truth decomposition, a function passed in by the caller (world models only);
  a prompt it cannot parse (ValueError) gets no questions.
A prompt with an empty question list cannot be scored; the loop drops and counts it.
"""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

from silmm.adapters.base import Adapter
from silmm.config import QUESTION_MODES, WHOLE_QUESTION_TEMPLATE
from silmm.runio import ONE_PROCESS, Processes


def ask(
    adapter: Adapter,
    prompts: list[str],
    *,
    mode: str = "self",
    whole_template: str = WHOLE_QUESTION_TEMPLATE,
    gt_questions: Callable[[str], list[str]] | None = None,
    batch_size: int = 64,
    progress: bool = False,
    procs: Processes = ONE_PROCESS,
) -> list[list[str]]:
    """One list of yes/no questions per prompt (possibly empty); "self" splits its batches over `procs`."""
    if mode == "self":
        written = [
            adapter.write_questions(prompts[s : s + batch_size])
            for s in tqdm(
                procs.mine(list(range(0, len(prompts), batch_size))),
                desc="questions", disable=not progress, leave=False,
            )
        ]  # fmt: skip
        questions = [qs for batch in procs.gather(written) for qs in batch]
        if len(questions) != len(prompts):
            raise ValueError(
                f"adapter {adapter.name!r} returned {len(questions)} question lists for {len(prompts)} prompts"
            )
        return [[q.strip() for q in qs if q.strip()] for qs in questions]
    if mode == "whole":
        return [[whole_template.format(prompt=p)] for p in prompts]
    if mode == "gt":
        if gt_questions is None:
            raise ValueError(
                f"questions.mode='gt' needs a ground-truth decomposition, which only world models have; "
                f"model {adapter.name!r} has none (use 'self' or 'whole')"
            )
        return [_gt_or_empty(gt_questions, p) for p in prompts]
    raise ValueError(f"question mode {mode!r} is not one of {list(QUESTION_MODES)}")


def _gt_or_empty(gt_questions: Callable[[str], list[str]], prompt: str) -> list[str]:
    """A prompt outside the world's grammar has no ground-truth decomposition: no questions, so it is dropped."""
    try:
        return list(gt_questions(prompt))
    except ValueError:
        return []
