"""Two CPU processes (`accelerate launch`, gloo) write the same run as one process and train the same LoRA.

The launched run shares prompt writing, questions, sampling and feedback out by batch and trains data
parallel; its files must equal a single-process run's byte for byte, its trained LoRA up to float rounding
(the gradients are summed across processes, a different order of additions). Also resumed with 2 processes
from a single-process run's prompts, the run ends the same.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_loop import overrides, without_seconds
from tiny_adapter import load_tiny

from silmm.__main__ import main
from silmm.loop import _numeric
from silmm.runio import read_json

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
# small batches, so that every stage has batches on both processes; a train batch of 3 splits 2 + 1
SMALL_BATCHES = (
    "run.iterations=1", "questions.batch_size=5", "feedback.batch_size=7", "train.batch_size=3",
    "train.grad_accum=2",
)  # fmt: skip
LAUNCHED = """import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from accelerate import PartialState
from tiny_adapter import load_tiny
from silmm.__main__ import main
code = main(sys.argv[1:], load=load_tiny)
print(f"process {{PartialState().process_index}} of {{PartialState().num_processes}}", flush=True)
sys.exit(code)
"""


def launch_two(tmp_path: Path, argv: list[str]) -> str:
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (ACCELERATE_USE_CPU: gloo); returns stdout."""
    script = tmp_path / "launched.py"
    script.write_text(LAUNCHED.format(tests=str(TESTS)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port),
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [*launch, str(script), *argv, "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0 of 2" in proc.stdout and "process 1 of 2" in proc.stdout, proc.stdout
    return proc.stdout


def assert_same_run(one: Path, two: Path) -> None:
    """Files equal byte for byte (images, tensors by value), the LoRA and training metrics up to rounding."""
    a, b = one / "iter_1", two / "iter_1"
    for name in ("prompts.jsonl", "samples.jsonl", "candidates.jsonl", "pairs.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    images = sorted(p.name for p in (a / "images").iterdir())
    assert images and images == sorted(p.name for p in (b / "images").iterdir())
    assert all((a / "images" / n).read_bytes() == (b / "images" / n).read_bytes() for n in images)
    for name in ("samples.safetensors", "pairs.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    x, y = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (a, b))
    assert x.keys() == y.keys() and len(x) == 8  # A, B x (q_proj, v_proj) x 2 layers
    for key in x:
        torch.testing.assert_close(y[key], x[key], rtol=1e-4, atol=1e-6)
    for summary_a, summary_b in zip(
        read_json(one / "summary.json"), read_json(two / "summary.json"), strict=True
    ):
        train_a, train_b = summary_a.pop("train", {}), summary_b.pop("train", {})
        assert without_seconds(summary_a) == without_seconds(summary_b)
        assert _numeric("", train_b) == pytest.approx(_numeric("", train_a), rel=1e-4, abs=1e-6)
    assert read_json(one / "iter_1" / "metrics.json")["pairs"] >= 4


@pytest.mark.slow
def test_two_processes_write_the_same_run_as_one(tmp_path):
    config = str(ROOT / "configs" / "world-discrete.yaml")
    one = ["run", config, *overrides("discrete", tmp_path, "one", SMALL_BATCHES)]
    assert main([*one, "--no-progress"], load=load_tiny) == 0
    stdout = launch_two(tmp_path, ["run", config, *overrides("discrete", tmp_path, "two", SMALL_BATCHES)])
    assert sum(line.startswith("iter 1 |") for line in stdout.splitlines()) == 1  # only the main process logs
    assert_same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_two_processes_resume_a_single_process_run(tmp_path):
    config = str(ROOT / "configs" / "world-continuous.yaml")
    argv = ["run", config, *overrides("continuous", tmp_path, "two", SMALL_BATCHES)]
    assert main([*argv, "--no-progress"], load=load_tiny) == 0
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(two, one)  # the reference; "two" goes back to what a run killed while sampling leaves
    for name in ("samples.jsonl", "samples.safetensors", "candidates.jsonl", "pairs.jsonl", "pairs.safetensors", "metrics.json"):  # fmt: skip
        (two / "iter_1" / name).unlink()
    shutil.rmtree(two / "iter_1" / "images")
    shutil.rmtree(two / "iter_1" / "adapter")
    (two / "summary.json").unlink()
    launch_two(tmp_path, [*argv, "--resume"])
    assert_same_run(one, two)
