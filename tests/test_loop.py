"""The whole loop on the tiny real adapter: artifacts, measurement, stopping, refusing, and kill-and-resume."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_adapter import TinyAdapter, TinyMeasure, load_tiny

from silmm import loop
from silmm.__main__ import main
from silmm.config import load_config
from silmm.runio import read_json, read_jsonl

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def overrides(kind: str, out: Path, name: str = "run", extra: tuple[str, ...] = ()) -> list[str]:
    mode = "nucleus" if kind == "discrete" else "dropdiv"
    # The tiny continuous model decodes through a projection, not a codebook: no decoded targets to train towards
    # (configs/world-continuous.yaml asks for them).
    target = ["sampling.feature_target=sampled"] if kind == "continuous" else []
    return [
        f"run.name={name}", f"run.out_dir={out}", "run.iterations=2", f"model.name=tiny-{kind}",
        "prompts.categories=[color, pair]", "prompts.per_category=6", "sampling.n=4", f"sampling.mode={mode}",
        "sampling.batch_size=5", "sampling.dropout=0.3", "pairs.min_gap=0.0", "train.lr=1e-2", "train.batch_size=4",
        "lora.target_modules=[q_proj, v_proj]", *target, *extra,
    ]  # fmt: skip


def without_seconds(obj):
    if isinstance(obj, dict):
        return {k: without_seconds(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_seconds(v) for v in obj]
    return obj


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_two_iterations_write_every_artifact_and_measurement(kind, tmp_path):
    cfg = load_config(None, overrides(kind, tmp_path))
    lines = []
    summary = loop.run(cfg, TinyAdapter(kind), measure=TinyMeasure(), log=lines.append)
    root = tmp_path / "run"
    assert [e["iteration"] for e in summary] == [0, 1, 2] and read_json(root / "summary.json") == summary
    assert load_config(root / "config.yaml") == cfg
    assert set(summary[0]["eval"]) >= {"scores", "overall", "facts_only", "mean_objects"}
    for it in (1, 2):
        d = root / f"iter_{it}"
        prompts = read_jsonl(d / "prompts.jsonl")
        assert len({p["prompt"] for p in prompts}) == len(prompts)  # deduplicated
        kept = [p for p in prompts if p["kept"]]
        assert all(p["questions"] for p in kept) and all(not p["questions"] for p in prompts if not p["kept"])
        candidates = read_jsonl(d / "candidates.jsonl")
        assert len(candidates) == 4 * len(kept)
        for c in candidates:
            assert (d / c["image"]).is_file() and c["image"].endswith(".png")
            assert len(c["p_yes"]) == len(c["p_no"]) == len(c["questions"]) > 0
            assert c["score"] == pytest.approx(
                sum(y - n for y, n in zip(c["p_yes"], c["p_no"])) / len(c["p_yes"])
            )
        assert len({c["seed"] for c in candidates}) == len(candidates)  # every candidate its own seed
        pairs = read_jsonl(d / "pairs.jsonl")
        assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
        assert (d / "adapter" / "adapter_model.safetensors").is_file()
        m = read_json(d / "metrics.json")
        assert (
            m["prompts"] == len(kept)
            and m["prompts_dropped"] == len(prompts) - len(kept)
            and m["pairs"] == len(pairs)
        )
        assert 0 <= m["judge_agreement"]["overall"] <= 1 and "color" in m["judge_agreement"]
        assert 0 <= m["self_best_is_oracle_best"] <= 1
        assert {"loss", "reward_margin", "reward_accuracy"} <= set(m["train"])
        assert {"prompts", "sampling", "feedback", "pairs", "train", "measure", "eval"} <= set(m["seconds"])
    assert len(lines) == 3 and lines[1].startswith("iter 1 | prompts")


def test_iteration_without_pairs_stops_cleanly(tmp_path):
    cfg = load_config(None, overrides("discrete", tmp_path, extra=("pairs.min_gap=2.0",)))
    lines = []
    summary = loop.run(cfg, TinyAdapter("discrete"), log=lines.append)
    assert [e["iteration"] for e in summary] == [0, 1]
    assert summary[1]["pairs"] == 0 and summary[1]["stopped"].startswith("no pairs")
    assert "STOPPED: no pairs" in lines[-1]
    assert (
        not (tmp_path / "run" / "iter_1" / "adapter").exists() and not (tmp_path / "run" / "iter_2").exists()
    )


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_replay_trains_on_earlier_pairs_with_their_own_candidates(kind, tmp_path):
    cfg = load_config(None, overrides(kind, tmp_path, extra=("pairs.replay=1",)))
    summary = loop.run(cfg, TinyAdapter(kind), log=lambda s: None)
    root = tmp_path / "run"
    first, second = (read_jsonl(root / f"iter_{it}" / "pairs.jsonl") for it in (1, 2))
    assert summary[1]["pairs_replayed"] == 0 and summary[1]["train"]["pairs"] == len(first)
    assert summary[2]["pairs_replayed"] == len(first)
    assert summary[2]["train"]["pairs"] == len(second) + len(first)
    replayed, tensors = loop.replayed_pairs(loop.runio.RunLayout(root), 2, 1, first_index=1000)
    assert [(p.prompt, p.chosen_seed, p.rejected_seed) for p in replayed] == [
        (p["prompt"], p["chosen_seed"], p["rejected_seed"]) for p in first
    ]
    source = loop.runio.load_tensors(root / "iter_1" / "samples.safetensors")
    key = "ids" if kind == "discrete" else "feats"
    for pair, row in zip(replayed, first, strict=True):  # each renumbered candidate carries its own tensor
        assert tensors[f"{pair.chosen}.{key}"].equal(source[f"{row['chosen']}.{key}"])
        assert tensors[f"{pair.rejected}.{key}"].equal(source[f"{row['rejected']}.{key}"])
    refs = loop.runio.load_tensors(root / "iter_2" / "pairs.safetensors")
    assert len(next(iter(refs.values()))) == len(second) + len(first)


def test_question_modes_whole_and_gt(tmp_path):
    cfg = load_config(
        None, overrides("discrete", tmp_path, extra=("questions.mode=whole", "run.iterations=1"))
    )
    loop.run(cfg, TinyAdapter("discrete"), log=lambda s: None)
    rows = read_jsonl(tmp_path / "run" / "iter_1" / "prompts.jsonl")
    assert all(r["questions"] == [f'does the image show "{r["prompt"]}"?'] for r in rows)
    cfg = load_config(None, overrides("discrete", tmp_path, "gt", ("questions.mode=gt",)))
    with pytest.raises(ValueError, match="questions.mode='gt' needs the world's ground truth"):
        loop.run(cfg, TinyAdapter("discrete"))


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_decoded_feature_target_needs_a_continuous_model_that_decodes(tmp_path, kind):
    cfg = load_config(None, overrides(kind, tmp_path, extra=("sampling.feature_target=decoded",)))
    with pytest.raises(ValueError, match=f"feature_target='decoded' needs .* the {kind} model 'tiny-{kind}' lacks"):
        loop.run(cfg, TinyAdapter(kind), log=lambda s: None)
    assert not (tmp_path / "run" / "iter_1").exists()  # refused before any work


def test_user_prompt_file_replaces_self_written_prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("red and blue\nRed  and blue\na green\nand a\n")
    extra = (
        f"prompts.file={path}",
        "prompts.file_mode=replace",
        "run.iterations=1",
        "run.heldout_eval=false",
    )
    cfg = load_config(None, overrides("discrete", tmp_path, extra=extra))
    summary = loop.run(cfg, TinyAdapter("discrete"), measure=TinyMeasure(), log=lambda s: None)
    assert "eval" not in summary[0] and "eval" not in summary[1] and "judge_agreement" in summary[1]
    rows = read_jsonl(tmp_path / "run" / "iter_1" / "prompts.jsonl")
    assert [(r["prompt"], r["category"], r["kept"]) for r in rows] == [
        ("red and blue", "user", True), ("a green", "user", True), ("and a", "user", False),
    ]  # fmt: skip


def test_refuses_existing_folder_and_changed_config_on_resume(tmp_path, capsys):
    argv = [
        "run",
        str(ROOT / "configs" / "world-discrete.yaml"),
        *overrides("discrete", tmp_path, extra=("run.iterations=1",)),
    ]
    assert main(argv, load=load_tiny) == 0
    assert main(argv, load=load_tiny) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert main([*argv, "dpo.beta=0.3", "--resume"], load=load_tiny) == 2
    assert "differs from" in capsys.readouterr().err
    assert main([*argv, "run.iterations=2", "--resume"], load=load_tiny) == 0  # extending a run is allowed
    assert [e["iteration"] for e in read_json(tmp_path / "run" / "summary.json")] == [0, 1, 2]


def test_cli_rejects_bad_input_before_loading_the_model(tmp_path, capsys):
    def must_not_load(cfg):
        raise AssertionError("the model was loaded before the input was checked")

    config = str(ROOT / "configs" / "world-discrete.yaml")
    assert main(["run", config, "sampling.n=1"], load=must_not_load) == 2
    assert "sampling.n=1" in capsys.readouterr().err
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"a red\n\xff\xfe bad\n")
    assert main(["run", config, f"prompts.file={bad}"], load=must_not_load) == 2
    assert f"prompt file {bad}, line 2: not valid UTF-8" in capsys.readouterr().err
    assert main(["run", config, "feedback.judge=oracle", "model.name=janus-pro"], load=must_not_load) == 2
    assert "feedback.judge='oracle' needs a world model" in capsys.readouterr().err


def _compare_runs(a: Path, b: Path) -> None:
    for it in (1, 2):
        for name in ("prompts.jsonl", "candidates.jsonl", "pairs.jsonl", "adapter/adapter_model.safetensors"):
            assert (a / f"iter_{it}" / name).read_bytes() == (b / f"iter_{it}" / name).read_bytes(), (
                it,
                name,
            )
        assert without_seconds(read_json(a / f"iter_{it}/metrics.json")) == without_seconds(read_json(b / f"iter_{it}/metrics.json"))  # fmt: skip
    assert without_seconds(read_json(a / "summary.json")) == without_seconds(read_json(b / "summary.json"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind,kill_when", [("discrete", "iter_2/samples.jsonl"), ("continuous", "iter_1/candidates.jsonl")]
)
def test_sigkill_then_resume_gives_the_same_artifacts(kind, kill_when, tmp_path):
    argv = ["run", str(ROOT / "configs" / f"world-{kind}.yaml"), *overrides(kind, tmp_path, "killed")]
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import torch; torch.set_num_threads(1); "
        "from tiny_adapter import load_tiny; from silmm.__main__ import main; sys.exit(main(sys.argv[1:], load=load_tiny))"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code, *argv, "--no-progress"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    marker = tmp_path / "killed" / kill_when
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, (
        f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "iter_2" / "metrics.json").exists()

    assert main([*argv, "--resume", "--no-progress"], load=load_tiny) == 0
    reference = load_config(argv[1], overrides(kind, tmp_path, "uninterrupted"))
    loop.run(reference, TinyAdapter(kind), measure=TinyMeasure(), log=lambda s: None)
    _compare_runs(tmp_path / "killed", tmp_path / "uninterrupted")
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())[-1]["iteration"] == 2


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed here"
)
def test_cli_names_a_missing_tracker_package(capsys):
    config = str(ROOT / "configs" / "world-discrete.yaml")
    assert main(["run", config, "run.log_with=tensorboard"], load=load_tiny) == 2
    assert (
        "run.log_with='tensorboard' but the package 'tensorboard' is not installed" in capsys.readouterr().err
    )
