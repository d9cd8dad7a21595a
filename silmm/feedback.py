"""Paper step 4: VQA self-feedback, the model answering its own questions about its own images.

    s(x, y) = (1/N_q) sum_i [ p("yes" | y, q_i) - p("no" | y, q_i) ]  in [-1, 1]   (rule "prob_diff")

Ablations: "yes_ratio" = fraction of questions with p_yes > p_no; "random" = uniform in [-1, 1], seeded by the
candidate's seed. `renormalize` replaces p by its renormalisation over {yes, no}. The judge is the adapter itself
or any object with the same `answer_yes_no(images, questions)` (an external judge, `feedback.judge`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import torch
from PIL import Image
from tqdm.auto import tqdm

from silmm.config import SCORE_RULES
from silmm.runio import ONE_PROCESS, Processes


class YesNoJudge(Protocol):
    def answer_yes_no(
        self, images: list[Image.Image], questions: list[str]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class Candidate:
    """One scored candidate, a row of candidates.jsonl."""

    index: int
    prompt_index: int
    k: int
    prompt: str
    seed: int
    image: str
    questions: list[str]
    p_yes: list[float]
    p_no: list[float]
    score: float


def score(
    p_yes: list[float], p_no: list[float], *, rule: str, renormalize: bool = False, seed: int = 0
) -> float:
    """The self-feedback score of one candidate from its per-question probabilities."""
    if rule == "random":
        return float(torch.rand((), generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    yes, no = torch.tensor(p_yes, dtype=torch.float64), torch.tensor(p_no, dtype=torch.float64)
    if renormalize:
        total = (yes + no).clamp_min(1e-12)
        yes, no = yes / total, no / total
    if rule == "prob_diff":
        return float((yes - no).mean())
    if rule == "yes_ratio":
        return float((yes > no).double().mean())
    raise ValueError(f"feedback rule {rule!r} is not one of {list(SCORE_RULES)}")


def answer_all(
    judge: YesNoJudge,
    images: list[Image.Image],
    questions: list[list[str]],
    *,
    batch_size: int,
    desc: str = "feedback",
    progress: bool = False,
    procs: Processes = ONE_PROCESS,
) -> tuple[list[list[float]], list[list[float]]]:
    """p_yes, p_no per (image, question): every question of `questions[i]` is asked about `images[i]`.

    A question about pixels already asked with the same question is answered once: a continuous model's DropDiv
    candidates often decode to the same image (world-continuous: 2.4 distinct images per 16 candidates).
    With several processes each answers every `world`-th batch of distinct pairs; all get every answer.
    """
    keys = [(im.size, im.mode, hashlib.blake2b(im.tobytes(), digest_size=16).digest()) for im in images]
    slot_of: dict[tuple, int] = {}  # (image content, question) -> its index in `distinct`
    distinct: list[tuple[int, str]] = []  # (first image with that content, question)
    slots: list[int] = []  # per (image, question) pair in order
    for i, qs in enumerate(questions):
        for q in qs:
            slot = slot_of.setdefault((keys[i], q), len(distinct))
            if slot == len(distinct):
                distinct.append((i, q))
            slots.append(slot)
    answered = []  # per batch of mine: (p_yes, p_no)
    for start in tqdm(
        procs.mine(list(range(0, len(distinct), batch_size))), desc=desc, disable=not progress, leave=False
    ):
        batch = distinct[start : start + batch_size]
        with torch.no_grad():
            p_yes, p_no = judge.answer_yes_no([images[i] for i, _ in batch], [q for _, q in batch])
        answered.append((p_yes.float().cpu().tolist(), p_no.float().cpu().tolist()))
    distinct_yes: list[float] = []
    distinct_no: list[float] = []
    for batch_yes, batch_no in procs.gather(answered):
        distinct_yes += batch_yes
        distinct_no += batch_no
    yes_flat, no_flat = [distinct_yes[s] for s in slots], [distinct_no[s] for s in slots]
    yes, no, pos = [], [], 0
    for qs in questions:
        yes.append(yes_flat[pos : pos + len(qs)])
        no.append(no_flat[pos : pos + len(qs)])
        pos += len(qs)
    return yes, no
