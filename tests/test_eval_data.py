"""Prompt loaders on the shared official files, verification, caching, folder validation, result files."""

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from eval import dpg_bench as dpg
from eval import t2i_compbench as t2i
from eval.common import (
    EvalInputError,
    RemoteFile,
    ScoreCache,
    fetch_verified,
    git_blob_sha1,
    validate_image_folder,
    write_results,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
T2I_DIR, DPG_DIR = SHARED / "t2i_compbench", SHARED / "dpg_bench" / "prompts"
pytestmark = pytest.mark.skipif(
    not T2I_DIR.is_dir(), reason="needs ../shared/benchmarks (official prompt copies)"
)


def test_t2i_val_splits_load_verified_without_crlf():
    cfg = t2i.T2IConfig(prompts_dir=T2I_DIR)
    for category in t2i.CATEGORIES:
        prompts = t2i.load_prompts(category, cfg)
        assert len(prompts) == 300, category
        assert not any("\r" in p or p != p.strip() for p in prompts)
    assert t2i.load_prompts("color", cfg)[0] == "a green bench and a blue bowl"  # the file is CRLF
    legacy = t2i.load_prompts("color", t2i.T2IConfig(prompts_dir=T2I_DIR, color_val="legacy"))
    assert len(legacy) == 300 and len(set(legacy)) == 295  # duplicates kept: images are indexed by line


def test_t2i_image_names_use_a_global_index():
    assert t2i.image_names(["a cat", "a dog"], 2) == [
        "a cat_000000.png",
        "a cat_000001.png",
        "a dog_000002.png",
        "a dog_000003.png",
    ]


def test_dpg_prompts_load_verified(tmp_path):
    prompts = dpg.load_prompts(dpg.DpgConfig(prompts_dir=DPG_DIR))
    assert len(prompts) == 1065 and "159" not in prompts
    assert not prompts["countbench4"].endswith("\n") and len(prompts["partiprompts97"].split()) > 30


def test_tampered_file_fails_verification(tmp_path):
    shutil.copy(T2I_DIR / "spatial_val.txt", tmp_path / "spatial_val.txt")
    with (tmp_path / "spatial_val.txt").open("a") as f:
        f.write("a cat on the left of a dog\n")
    with pytest.raises(EvalInputError, match="not the official spatial_val.txt: git blob"):
        t2i.load_prompts("spatial", t2i.T2IConfig(prompts_dir=tmp_path))
    with pytest.raises(EvalInputError, match="shape_val.txt does not exist"):
        t2i.load_prompts("shape", t2i.T2IConfig(prompts_dir=tmp_path))


def test_cached_file_is_used_without_network(tmp_path):
    data = b"hello\r\nworld"
    remote = RemoteFile("x/a.txt", "https://invalid.invalid/a.txt", git_blob_sha1(data))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_bytes(data)
    assert fetch_verified(remote, local_dir=None, cache_dir=tmp_path).read_bytes() == data
    assert git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_unknown_category_names_the_valid_ones():
    with pytest.raises(
        EvalInputError, match="unknown T2I-CompBench categories \\['colour'\\]; valid: \\['color'"
    ):
        t2i.T2IConfig(categories=("colour", "shape"))


def test_folder_validation_lists_every_problem(tmp_path):
    for name in ("a cat_000000.png", "a cat_000001.png", "a dog_000003.png", "a cat_0.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "a dog_000003.png").write_bytes(b"not a png")
    expected = t2i.image_names(["a cat", "a dog"], 2)
    with pytest.raises(EvalInputError) as err:
        validate_image_folder(tmp_path, expected, rule="'{prompt}_{index:06d}.png'")
    msg = str(err.value)
    assert "missing (1): 'a dog_000002.png'" in msg and "unexpected (1): 'a cat_0.png'" in msg
    assert "unreadable (1): 'a dog_000003.png (UnidentifiedImageError)" in msg and "naming rule" in msg


def test_score_cache_resumes_and_ignores_other_settings(tmp_path):
    cache = ScoreCache(tmp_path / "s.jsonl", {"judge": "a"})
    cache.append([{"key": "x.png", "score": 0.5}])
    with (tmp_path / "s.jsonl").open("a") as f:
        f.write('{"key": "y.png", "sco')  # a line cut by an interrupted run
    assert list(cache.load()) == ["x.png"]
    assert ScoreCache(tmp_path / "s.jsonl", {"judge": "b"}).load() == {}


def test_write_results_files(tmp_path):
    summary = {"benchmark": "t2i-compbench", "model": "m", "scores": {"color": 0.5, "shape": 0.25}, "overall": 0.375,
               "complete": False}  # fmt: skip
    out = write_results(tmp_path, summary, [{"key": "a.png", "score": 0.5}])
    assert set(out["files"]) >= {
        "results.json",
        "per_image.jsonl",
        "results.csv",
        "results.html",
        "results.png",
    }
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is False
    assert "shape,0.25" in (tmp_path / "results.csv").read_text()
    assert Image.open(tmp_path / "results.png").size == (900, 500)
