"""`accelerate launch` of `python -m eval` on 2 CPU processes (gloo): each scores its own batches into its own cache
file, the main process gathers them and writes the same result files as a single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval_cli import T2I_DIR, _noise, dpg_inputs

from eval import t2i_compbench as t2i
from eval.__main__ import main
from eval.bench import build_tiny_judges

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not T2I_DIR.is_dir(), reason="needs ../shared/benchmarks (official prompt copies)"),
    pytest.mark.slow,
]


def _launch(args: list[str]) -> subprocess.CompletedProcess:
    with socket.socket() as s:  # a free port, so parallel runs do not meet on accelerate's default 29500
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), "-m", "eval", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _same_outputs(one: Path, two: Path) -> None:
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert a.pop("seconds") >= 0 and b.pop("seconds") >= 0
    assert a == b
    for name in ("per_image.jsonl", "results.csv", "results.png"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def test_two_processes_write_what_one_process_writes(tmp_path):
    judges = build_tiny_judges(tmp_path / "judges")
    # T2I: 2 prompts x 2 images per category, batch 1 -> 4 batches, 2 per process
    images, categories = tmp_path / "images", ("color", "spatial", "non_spatial")
    for c in categories:
        (images / c).mkdir(parents=True)
        prompts = t2i.load_prompts(c, t2i.T2IConfig(prompts_dir=T2I_DIR))[:2]
        for k, name in enumerate(t2i.image_names(prompts, 2)):
            _noise(k).save(images / c / name)
    t2i_args = ["t2i-compbench", "--images", str(images), "--categories", ",".join(categories), "--limit", "2",
                "--images-per-prompt", "2", "--batch-size", "1", "--prompts-dir", str(T2I_DIR), "--judge",
                str(judges["blip"]), "--clip", str(judges["clip"]), "--detector", str(judges["owlv2"]),
                "--blip-size", "64", "--det-threshold", "0.0", "--device", "cpu"]  # fmt: skip
    assert main([*t2i_args, "--out", str(tmp_path / "t2i1")]) == 0
    run = _launch([*t2i_args, "--out", str(tmp_path / "t2i2")])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count('"benchmark": "t2i-compbench"') == 1  # only the main process reports
    _same_outputs(tmp_path / "t2i1", tmp_path / "t2i2")
    for c in categories:  # each process scored half of the images, into its own cache file
        rank0, rank1 = (_keys(tmp_path / "t2i2" / c / f"scores.rank{r}.jsonl") for r in (0, 1))
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)
        assert not (tmp_path / "t2i2" / c / "scores.jsonl").exists()

    # DPG: 4 grids, batch 1 -> 2 grids per process
    dpg_args = [*dpg_inputs(tmp_path, 4), "--judge", str(judges["blip"]), "--batch-size", "1"]
    assert main([*dpg_args, "--out", str(tmp_path / "dpg1")]) == 0
    run = _launch([*dpg_args, "--out", str(tmp_path / "dpg2")])
    assert run.returncode == 0, run.stderr[-3000:]
    _same_outputs(tmp_path / "dpg1", tmp_path / "dpg2")
    rank0, rank1 = (_keys(tmp_path / "dpg2" / f"answers.rank{r}.jsonl") for r in (0, 1))
    assert len(rank0) == len(rank1) == 2 and sorted(rank0 + rank1) == sorted(
        _keys(tmp_path / "dpg1" / "answers.jsonl")
    )
