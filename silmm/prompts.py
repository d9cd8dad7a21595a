"""Paper step 1: compositional prompts, written by the model itself per category, or read from a user file.

Self-written prompts are deduplicated (case and spacing ignored, first occurrence kept). A user file holds one
prompt per line and either replaces or extends the self-written ones; a blank or non-UTF-8 line is an error
naming the file and line, so a typo never silently shrinks the prompt set. Dropping prompts that the question
step cannot handle happens in the loop (`loop.py`), which owns both steps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from silmm.adapters.base import Adapter
from silmm.runio import ONE_PROCESS, Processes

USER_CATEGORY = "user"


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    category: str


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed from any tuple of ints/strings (stable across processes and platforms)."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def _key(prompt: str) -> str:
    return " ".join(prompt.lower().split())


def dedupe(records: list[PromptRecord]) -> list[PromptRecord]:
    seen: set[str] = set()
    out = []
    for rec in records:
        key = _key(rec.prompt)
        if key and key not in seen:
            seen.add(key)
            out.append(PromptRecord(" ".join(rec.prompt.split()), rec.category))
    return out


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per line; raises ValueError naming the file and line of a blank or non-UTF-8 line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"prompt file {path} does not exist")
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    prompts = []
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:
            raise ValueError(f"prompt file {path}, line {number}: not valid UTF-8 ({err.reason})") from None
        if not text:
            raise ValueError(
                f"prompt file {path}, line {number}: blank line (one prompt per line, no blanks)"
            )
        prompts.append(text)
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts")
    return prompts


def write_prompts(
    adapter: Adapter,
    *,
    categories: tuple[str, ...],
    per_category: int,
    seed: int,
    user_prompts: list[str] | None = None,
    replace: bool = False,
    progress: bool = False,
    procs: Processes = ONE_PROCESS,
) -> list[PromptRecord]:
    """Self-written prompts per category (seeded by `seed` and the category), plus or instead of user prompts.

    With several processes each writes every `world`-th category; all get every prompt, in category order.
    """
    records: list[PromptRecord] = []
    if not replace:
        written = [
            adapter.write_prompts(category, per_category, seed=derive_seed(seed, category))
            for category in tqdm(
                procs.mine(list(categories)), desc="prompts", disable=not progress, leave=False
            )
        ]
        for category, texts in zip(categories, procs.gather(written), strict=True):
            records += [PromptRecord(t, category) for t in texts]
    records += [PromptRecord(t, USER_CATEGORY) for t in user_prompts or []]
    return dedupe(records)
