"""`python -m eval` on tiny image folders with tiny judges loaded from local folders; resume; bad input; world."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tiny_real_models as T
from PIL import Image

from eval import dpg_bench as dpg
from eval import t2i_compbench as t2i
from eval.__main__ import main
from eval.bench import build_tiny_judges

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
T2I_DIR, DPG_DIR = SHARED / "t2i_compbench", SHARED / "dpg_bench" / "prompts"
pytestmark = pytest.mark.skipif(
    not T2I_DIR.is_dir(), reason="needs ../shared/benchmarks (official prompt copies)"
)


@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    return build_tiny_judges(tmp_path_factory.mktemp("judges"))


@pytest.fixture()
def no_download(monkeypatch):
    """Any download of an official file fails the test (the folder must be checked first)."""

    def refuse(remote, **_):
        raise AssertionError(f"{remote.relpath} was fetched before the folder was checked")

    for module in (t2i, dpg):
        monkeypatch.setattr(module, "fetch_verified", refuse)


def _noise(seed, side=64):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (side, side, 3), dtype=np.uint8))


@pytest.fixture()
def t2i_folder(tmp_path):
    """First prompt of every category, 2 images each, named as the official scorers expect."""
    root = tmp_path / "images"
    cfg = t2i.T2IConfig(prompts_dir=T2I_DIR)
    for c in t2i.CATEGORIES:
        (root / c / "samples").mkdir(parents=True)
        for k, name in enumerate(t2i.image_names(t2i.load_prompts(c, cfg)[:1], 2)):
            _noise(k).save(root / c / "samples" / name)
    return root


def _t2i_args(folder, out, judges, *extra):
    return ["t2i-compbench", "--images", str(folder), "--out", str(out), "--limit", "1", "--images-per-prompt", "2",
            "--prompts-dir", str(T2I_DIR), "--judge", str(judges["blip"]), "--clip", str(judges["clip"]),
            "--detector", str(judges["owlv2"]), "--depth", str(judges["dpt"]), "--blip-size", "64",
            "--depth-size", "64", "--det-threshold", "0.0", "--device", "cpu", *extra]  # fmt: skip


def test_t2i_cli_scores_all_categories_and_resumes(t2i_folder, tmp_path, judges, capsys):
    out = tmp_path / "out"
    assert main(_t2i_args(t2i_folder, out, judges)) == 0
    res = json.loads((out / "results.json").read_text())
    keys = {"benchmark", "model", "scores", "overall", "n_prompts", "images_per_prompt", "seconds", "judge",
            "detector", "protocol_deviations", "complete"}  # fmt: skip
    assert keys <= set(res) and set(res["scores"]) == set(t2i.CATEGORIES)
    assert res["complete"] is False and res["n_images"] == 16 and res["judge"] == str(judges["blip"])
    assert any("--limit 1" in d for d in res["protocol_deviations"]) and res["noun_phrases"]
    assert all(-1 <= v <= 1 for v in res["scores"].values())
    lines = (out / "per_image.jsonl").read_text().splitlines()
    assert len(lines) == 16 and (out / "results.csv").is_file() and (out / "results.png").is_file()
    cached = {c: (out / c / "scores.jsonl").read_text() for c in t2i.CATEGORIES}
    assert main(_t2i_args(t2i_folder, out, judges)) == 0  # resume: nothing is re-scored
    assert {c: (out / c / "scores.jsonl").read_text() for c in t2i.CATEGORIES} == cached
    assert json.loads((out / "results.json").read_text())["scores"] == res["scores"]
    assert '"complete": false' in capsys.readouterr().out


def test_t2i_cli_with_grounding_dino(t2i_folder, tmp_path, judges):
    out, categories = tmp_path / "out", "spatial,3d_spatial,numeracy"
    args = _t2i_args(t2i_folder, out, judges, "--categories", categories, "--text-threshold", "0.0")
    args[args.index("--detector") + 1] = str(judges["grounding_dino"])
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["detector"] == str(judges["grounding_dino"]) and ",".join(res["scores"]) == categories
    settings = {"family": "grounding-dino", "box_threshold": 0.0, "text_threshold": 0.0}
    assert res["detector_settings"] == settings
    assert any(d.startswith("detector: Grounding DINO") for d in res["protocol_deviations"])
    records = [json.loads(line) for line in (out / "per_image.jsonl").read_text().splitlines()]
    for r in records:  # every box is labelled with one of the names its image was queried for
        asked = r["details"].get("objects") or [name for name, _ in r["details"]["targets"]]
        assert {label for label, _, _ in r["details"]["detections"]} <= set(asked)
        assert 0 <= r["score"] <= 1
    assert sum(len(r["details"]["detections"]) for r in records) > 0


def test_t2i_cli_rejects_bad_folder_before_scoring(t2i_folder, tmp_path, judges, capsys):
    victim = next((t2i_folder / "spatial" / "samples").iterdir())
    victim.rename(victim.with_name("wrong name.png"))
    assert main(_t2i_args(t2i_folder, tmp_path / "out", judges)) == 2
    err = capsys.readouterr().err
    assert f"missing (1): {victim.name!r}" in err and "unexpected (1): 'wrong name.png'" in err
    assert not (tmp_path / "out" / "color" / "scores.jsonl").exists()  # nothing was scored


def test_t2i_cli_names_a_missing_category_folder_before_any_download(t2i_folder, tmp_path, judges, no_download, capsys):
    (t2i_folder / "numeracy" / "samples").rename(tmp_path / "elsewhere")
    (t2i_folder / "numeracy").rmdir()
    args = _t2i_args(t2i_folder, tmp_path / "out", judges)
    at = args.index("--prompts-dir")
    del args[at : at + 2]
    assert main(args) == 2
    assert f"image folder {t2i_folder} has no folder for ['numeracy']" in capsys.readouterr().err


def test_t2i_cli_unknown_category_and_missing_judge(t2i_folder, tmp_path, judges, capsys):
    assert main(_t2i_args(t2i_folder, tmp_path / "o", judges, "--categories", "color,colour")) == 2
    assert "unknown T2I-CompBench categories ['colour']" in capsys.readouterr().err
    args = _t2i_args(t2i_folder, tmp_path / "o", judges, "--categories", "color")
    args[args.index("--judge") + 1] = str(tmp_path / "missing-blip")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "missing-blip" in err and "--judge /path/to/folder" in err and "HF_HUB_OFFLINE=1" in err


CSV_HEAD = "item_id,text,keywords,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language\n"


def dpg_inputs(root: Path, n: int) -> list[str]:
    """`grids/` with 2x2 noise grids for the first n prompts and `q.csv` with 2 questions each (q2 depends on q1).

    Returns the command-line arguments for them (judge and output folder not included)."""
    stems = sorted(dpg.manifest())[:n]
    rows = "".join(f"{s},t,k,1,0,entity,whole,entity - whole (dog),Is there a dog?\n"
                   f"{s},t,k,2,1,attribute,color,attribute - color (dog; red),Is the dog red?\n" for s in stems)  # fmt: skip
    (root / "q.csv").write_text(CSV_HEAD + rows)
    (root / "grids").mkdir()
    for i, s in enumerate(stems):
        dpg.make_grid([_noise(4 * i + k, 32) for k in range(4)]).save(root / "grids" / f"{s}.png")
    return ["dpg-bench", "--images", str(root / "grids"), "--csv", str(root / "q.csv"), "--limit", str(n),
            "--prompts-dir", str(DPG_DIR), "--no-verify-csv", "--device", "cpu"]  # fmt: skip


def test_dpg_cli_with_hand_made_csv(tmp_path, judges):
    args = [*dpg_inputs(tmp_path, 2), "--judge", str(judges["blip"]), "--out", str(tmp_path / "out")]
    assert (
        main([a for a in args if a != "--no-verify-csv"]) == 2
    )  # the hand-made CSV is not the official blob
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["n_prompts"] == 2 and res["images_per_prompt"] == 4 and res["complete"] is False
    assert 0 <= res["overall"] <= 100 and res["alternative"]["official_quirks"] is True
    assert (
        res["alternative"]["n_skipped"] == 1
    )  # quirk: first row dropped -> its child raises -> image skipped
    assert any("NOT verified" in d for d in res["protocol_deviations"])


def test_dpg_cli_checks_a_given_folder_before_any_download(tmp_path, judges, no_download, capsys):
    args = [*dpg_inputs(tmp_path, 2), "--judge", str(judges["blip"]), "--out", str(tmp_path / "out")]
    for option in ("--prompts-dir", "--csv"):  # prompts and questions would have to be downloaded
        at = args.index(option)
        del args[at : at + 2]
    victim = sorted((tmp_path / "grids").iterdir())[1]
    victim.unlink()
    assert main(args) == 2
    assert f"missing (1): {victim.name!r}" in capsys.readouterr().err


def test_dpg_cli_with_a_qwen_judge(tmp_path):
    judge = T.save_qwen_vl(str(tmp_path / "qwen"))
    args = [*dpg_inputs(tmp_path, 2), "--judge", judge, "--out", str(tmp_path / "out")]
    assert main(args) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["judge"] == judge and res["n_prompts"] == 2 and 0 <= res["overall"] <= 100
    assert any("Please answer yes or no" in d for d in res["protocol_deviations"])
    answers = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").read_text().splitlines()]
    assert [len(a["answers"]) for a in answers] == [4, 4] and all(
        len(t) == 2 for a in answers for t in a["answers"]
    )


def test_world_is_dispatched_to_eval_world(monkeypatch, capsys):
    world = types.ModuleType("eval.world")
    world.add_arguments = lambda p: p.add_argument("--steps", type=int, default=1)
    world.run = lambda args: {"benchmark": "world", "model": "toy", "scores": {"x": args.steps}, "overall": 1.0,
                              "n_prompts": 3, "complete": True, "seconds": 0.1}  # fmt: skip
    monkeypatch.setitem(sys.modules, "eval.world", world)
    monkeypatch.setattr(sys.modules["eval"], "world", world, raising=False)
    assert main(["world", "--steps", "7"]) == 0
    assert '"x": 7' in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("eval.world") is not None, reason="eval/world.py exists")
def test_world_missing_gives_a_clear_error(capsys):
    assert main(["world"]) == 2
    assert "world benchmark is not available" in capsys.readouterr().err


def test_model_path_samples_through_the_adapter(monkeypatch):
    from tiny_adapter import TinyAdapter

    import silmm.adapters
    from eval.__main__ import make_generate_fn

    calls = []

    def fake_load(name, *, adapter_dir=None, device=None):  # the real loader needs trained weights on disk
        calls.append((name, adapter_dir, device))
        return TinyAdapter("discrete")

    monkeypatch.setattr(silmm.adapters, "load_adapter", fake_load)
    generate_fn = make_generate_fn("tiny-discrete", None, "cpu")
    images = generate_fn(["red and blue", "red and blue"], [42, 43])
    assert (
        calls == [("tiny-discrete", None, "cpu")]
        and len(images) == 2
        and all(isinstance(i, Image.Image) for i in images)
    )


def test_t2i_run_generates_officially_named_images(tmp_path, judges):
    cfg = t2i.T2IConfig(
        categories=("color",), limit=1, images_per_prompt=2, prompts_dir=T2I_DIR, blip_image_size=64
    )
    seen = []

    def generate_fn(prompts, seeds):
        seen.extend(seeds)
        return [_noise(s) for s in seeds]

    def load():
        return t2i.load_judges(
            ("color",), blip=str(judges["blip"]), clip="-", detector="-", depth="-", cfg=cfg
        )

    res = t2i.run(cfg, load, out_dir=tmp_path, model="noise", generate_fn=generate_fn)
    names = sorted(p.name for p in (tmp_path / "color" / "samples").iterdir())
    assert names == ["a green bench and a blue bowl_000000.png", "a green bench and a blue bowl_000001.png"]
    assert seen == [42, 43] and res["complete"] is False and res["judge"] == str(judges["blip"])
    t2i.run(cfg, load, out_dir=tmp_path, model="noise", generate_fn=generate_fn)
    assert seen == [42, 43]  # resume: existing images are not generated again
