"""Prompt step: deduplication, user prompt files and their errors, seeds."""

import pytest
from tiny_adapter import TinyAdapter

from silmm.prompts import PromptRecord, dedupe, derive_seed, read_prompt_file, write_prompts


def test_dedupe_ignores_case_and_spacing_and_keeps_the_first():
    recs = [
        PromptRecord("a Red  circle", "color"),
        PromptRecord("a red circle", "shape"),
        PromptRecord("  ", "x"),
    ]
    assert dedupe(recs) == [PromptRecord("a Red circle", "color")]


def test_prompt_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a red circle\n\na blue square\n")
    with pytest.raises(ValueError, match=f"prompt file {path}, line 2: blank line"):
        read_prompt_file(path)
    path.write_bytes(b"a red circle\na blue square\ncaf\xe9\n")
    with pytest.raises(ValueError, match=f"prompt file {path}, line 3: not valid UTF-8"):
        read_prompt_file(path)
    path.write_text("")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_file(path)
    with pytest.raises(ValueError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")
    path.write_text("a red circle\n  a blue square  \n")
    assert read_prompt_file(path) == ["a red circle", "a blue square"]


def test_self_written_prompts_are_seeded_and_extended_by_the_user_file():
    adapter = TinyAdapter("discrete")
    first = write_prompts(
        adapter, categories=("color", "pair"), per_category=5, seed=1, user_prompts=["red and blue"]
    )
    again = write_prompts(
        adapter, categories=("color", "pair"), per_category=5, seed=1, user_prompts=["red and blue"]
    )
    assert first == again and len(first) <= 11
    assert any(r.prompt == "red and blue" for r in first)  # the user prompt, unless the model wrote it first
    assert {"color", "pair"} <= {r.category for r in first} <= {"color", "pair", "user"}
    only_user = write_prompts(
        adapter, categories=("color",), per_category=5, seed=1, user_prompts=["a red"], replace=True
    )
    assert only_user == [PromptRecord("a red", "user")]


def test_derive_seed_is_stable_and_spreads():
    assert derive_seed(0, 1, 2, 3) == derive_seed(0, 1, 2, 3)
    assert len({derive_seed(0, 1, p, k) for p in range(50) for k in range(8)}) == 400
    assert 0 <= derive_seed("x") < 2**31 - 1
