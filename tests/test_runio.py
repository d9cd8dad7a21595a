"""Atomic writes: a failed write leaves the old file (or none) and no temporary files behind."""

import pytest

from silmm import runio


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.json"
    runio.write_json(path, {"x": 1})
    with pytest.raises(RuntimeError), runio.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert runio.read_json(path) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "adapter"
    with runio.atomic_dir(target) as tmp:
        (tmp / "w.txt").write_text("1")
    with pytest.raises(RuntimeError), runio.atomic_dir(target) as tmp:
        (tmp / "w.txt").write_text("2")
        raise RuntimeError("killed")
    assert (target / "w.txt").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    with runio.atomic_dir(target) as tmp:
        (tmp / "v.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["v.txt"]


def test_jsonl_and_tensors_round_trip(tmp_path):
    import torch

    runio.write_jsonl(tmp_path / "r.jsonl", [{"a": 1}, {"b": [1, 2]}])
    assert runio.read_jsonl(tmp_path / "r.jsonl") == [{"a": 1}, {"b": [1, 2]}]
    runio.save_tensors(tmp_path / "t.safetensors", {"0.ids": torch.arange(3)})
    assert torch.equal(runio.load_tensors(tmp_path / "t.safetensors")["0.ids"], torch.arange(3))
