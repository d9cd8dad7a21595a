"""The Gradio app on the built-in world: every handler in-process, the named API through gradio_client, bad
input as gr.Error, a real training job (subprocess) with stop / resume / queue, and 20 concurrent clients."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
from gradio_client import Client

import app
from silmm.adapters import ADAPTERS
from silmm.app_backend import Backend
from silmm.runio import read_json

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(iterations=1, categories=["color", "spatial2d"], per_category=2, n=2, beta=0.1, gamma=1.0, mode="nucleus",
            rule="prob_diff", questions="gt", min_gap=0.0, heldout=False, seed=0)  # fmt: skip
ENDPOINTS = {"/generate", "/random_prompt", "/start_run", "/resume_run", "/stop_run", "/watch_run", "/compare",
             "/evaluate", "/overlay_results", "/list_runs"}  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The shipped world-discrete model, or (before it ships) a throwaway one trained for a few steps."""
    if (Path(ADAPTERS["world-discrete"][2]) / "model.safetensors").is_file():
        return "world-discrete"
    out = tmp_path_factory.mktemp("world") / "wd"
    cmd = [sys.executable, "-m", "silmm.world.train", "--kind", "discrete", "--out", str(out), "--steps", "30",
           "--hidden", "64", "--layers", "2"]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="module")
def demo(model, tmp_path_factory):
    backend = Backend(model, runs_dir=tmp_path_factory.mktemp("runs"))
    return app.create_demo(model, backend=backend), backend


def handlers(demo: gr.Blocks) -> dict:
    return {f.api_name: f.fn for f in demo.fns.values() if f.api_name}


def form(name: str, model: str, **kw) -> list:
    t = TINY | kw
    return [name, model, t["iterations"], t["categories"], t["per_category"], t["n"], t["beta"], t["gamma"],
            t["mode"], t["rule"], t["questions"], t["min_gap"], t["heldout"], t["seed"]]  # fmt: skip


def run_job(h: dict, name: str, model: str, timeout: float = 120, **kw) -> list:
    """Start a run through the handler, then follow watch_run to the end; returns every streamed panel."""
    watched, msg = h["start_run"](*form(name, model, **kw))
    assert watched == name and "queued" in msg
    t0, panels = time.time(), []
    for panel in h["watch_run"](watched):
        panels.append(panel)
        assert time.time() - t0 < timeout
    return panels


def test_importing_app_loads_no_torch():
    code = "import sys, app; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_generate_scores_candidates_and_shows_the_oracle(demo, model):
    demo, _ = demo
    h = handlers(demo)
    prompt = "a red circle to the left of a blue square"
    gallery, cands, qs, note = h["generate"](model, prompt, 3, 7, "nucleus", "prob_diff", "gt")
    assert len(gallery) == 3 and cands["#"].tolist() == [0, 1, 2]
    assert {"model score", "role", "oracle strict", "oracle facts", "objects"} <= set(cands.columns)
    assert len(qs) == 3 * 8  # per object: exists, colour, shape (3 x 2); the relation; "exactly two objects"
    for k in range(3):  # score = mean(p_yes - p_no) over the candidate's questions (paper rule)
        rows = qs[qs["#"] == k]
        assert cands.loc[k, "model score"] == pytest.approx((rows["p(yes)"] - rows["p(no)"]).mean(), abs=1e-3)
    roles = cands["role"].tolist()
    if cands["model score"].nunique() > 1:
        assert roles.count("chosen") == roles.count("rejected") == 1
        assert cands.loc[roles.index("chosen"), "model score"] == cands["model score"].max()
    assert set(qs["oracle says"]) <= {"yes", "no"} and "3 candidates" in note
    # the same prompt and seed give the same candidates
    again = h["generate"](model, prompt, 3, 7, "nucleus", "prob_diff", "gt")[1]
    pd.testing.assert_frame_equal(cands, again)


def test_random_prompt_is_a_world_prompt(demo, model):
    demo, backend = demo
    prompt = handlers(demo)["random_prompt"](model, "color", 3)
    assert isinstance(prompt, str) and prompt
    backend.check_prompt(model, prompt)  # parses, or the model is too small to write one (throwaway weights)


@pytest.mark.parametrize(
    "args, message",
    [
        (("", 2, 0), "prompt is empty"),
        (("   ", 2, 0), "prompt is empty"),
        (("a red circle " * 40, 2, 0), "at most 300"),
        (("a red blorp next to a circle", 2, 0), "blorp"),
        (("a red circle", 0, 0), "[1, 16]"),
        (("a red circle", 17, 0), "[1, 16]"),
        (("a red circle", 2, -1), "seed"),
    ],
)
def test_generate_bad_input_is_a_clear_error(demo, model, args, message):
    demo, _ = demo
    prompt, n, seed = args
    with pytest.raises(gr.Error, match=message.replace("[", r"\[").replace("]", r"\]")):
        handlers(demo)["generate"](model, prompt, n, seed, "nucleus", "prob_diff", "self")


def test_generate_refuses_mode_and_model_that_do_not_apply(demo, model):
    h = handlers(demo[0])
    with pytest.raises(gr.Error, match="dropdiv.*valid: \\['nucleus', 'none'\\]"):
        h["generate"](model, "a red circle", 2, 0, "dropdiv", "prob_diff", "self")
    with pytest.raises(gr.Error, match="not available"):
        h["generate"]("janus-pro", "a red circle", 2, 0, "nucleus", "prob_diff", "self")


@pytest.mark.parametrize(
    "name, kw, message",
    [
        ("../escape", {}, "run name"),
        ("ok", {"iterations": 0}, "iterations=0 is out of range"),
        ("ok", {"n": 1}, "n=1 is out of range"),
        ("ok", {"beta": 0}, "beta=0"),
        ("ok", {"categories": []}, "at least one"),
        ("ok", {"mode": "dropdiv"}, "does not apply"),
    ],
)
def test_start_run_bad_form_is_refused(demo, model, name, kw, message):
    with pytest.raises(gr.Error, match=message):
        handlers(demo[0])["start_run"](*form(name, model, **kw))


@pytest.mark.parametrize("run, message", [("../..", "outside the runs folder"), ("/etc", "outside the runs folder"),
                                          ("no-such-run", "does not exist"), ("_jobs", "not a run folder")])  # fmt: skip
def test_paths_outside_or_not_runs_are_refused(demo, run, message):
    h = handlers(demo[0])
    with pytest.raises(gr.Error, match=message):
        h["compare"](run, "iter_1", "all", "gain", 2)
    with pytest.raises(gr.Error, match=message):
        h["resume_run"](run, 1)


@pytest.mark.slow
def test_training_run_then_curves_runs_compare_evaluate_overlay(demo, model):
    """One tiny 1-iteration job end to end through the handlers (~25 s: the job is a subprocess)."""
    demo, backend = demo
    h = handlers(demo)
    panels = run_job(h, "tiny", model)
    status, stages, fig, log = panels[-1]
    assert "tiny" in status and "done" in status and "iteration **1 / 1**" in stages and "finished" in stages
    assert "iter 1 | prompts" in log
    margins = [t for t in fig.data if t.name == "reward margin"]
    assert margins and list(margins[0].x) == [1]  # one point per trained iteration
    root = backend.runs_dir / "tiny"
    summary = read_json(root / "summary.json")
    assert [m["iteration"] for m in summary] == [0, 1] and "stopped" not in summary[1]
    assert list(margins[0].y) == [pytest.approx(summary[1]["train"]["reward_margin"])]

    runs = h["list_runs"]()
    row = runs[runs["run"] == "tiny"].iloc[0]
    assert row["iterations"] == "1/1" and row["state"] == "complete" and row["model"] == model

    html, per_prompt, per_q = h["compare"]("tiny", "iter_1", "all", "gain", 3)
    assert html.count("data:image/png;base64,") == 2 * len(per_prompt) and 1 <= len(per_prompt) <= 3
    assert per_prompt["gain"].tolist() == sorted(per_prompt["gain"], reverse=True)
    gains = per_prompt["score after"] - per_prompt["score before"]
    assert per_prompt["gain"].tolist() == pytest.approx(gains.tolist(), abs=2e-4)
    assert {"before p(yes)", "after p(yes)"} <= set(per_q.columns)
    cat = json.loads((root / "iter_1" / "prompts.jsonl").read_text().splitlines()[0])["category"]
    _, filtered, _ = h["compare"]("tiny", "iter_1", cat, "prompt", 32)
    assert set(filtered["category"]) == {cat}
    with pytest.raises(gr.Error, match="no trained adapter"):
        h["compare"]("tiny", "iter_5", "all", "gain", 2)

    summary_md, table, chart, files = h["evaluate"]("world", model, "tiny/iter_1", ["color", "single"], 2, 1)
    assert set(table["category"]) == {"color", "single"} and table["score"].between(0, 1).all()
    assert "tiny-iter_1" in summary_md and len(chart.data) == 1
    names = sorted(Path(f).name for f in files)
    assert names[0].endswith("results.csv") and names[1].endswith("results.json")
    saved = next(f for f in files if f.endswith(".json"))
    assert json.loads(Path(saved).read_text())["scores"] == dict(zip(table["category"], table["score"]))
    h["evaluate"]("world", model, "(none)", ["color", "single"], 2, 1)
    table, chart = h["overlay_results"](["world/tiny-iter_1", f"world/{Path(model).name}"])
    assert len(chart.data) == 2 and set(table["result"]) == {"world/tiny-iter_1", f"world/{Path(model).name}"}
    with pytest.raises(gr.Error, match="choose one or more"):
        h["overlay_results"]([])
    with pytest.raises(gr.Error, match="limit=0 is out of range"):
        h["evaluate"]("world", model, "(none)", ["color"], 0, 1)
    with pytest.raises(gr.Error, match="not world categories"):
        h["evaluate"]("world", model, "(none)", ["3d_spatial"], 2, 1)
    with pytest.raises(gr.Error, match="world model"):  # real benchmarks refuse a world model before any work
        h["evaluate"]("t2i-compbench", model, "(none)", ["color"], 2, 1)


@pytest.mark.slow
def test_queue_stop_and_resume(demo, model):
    """A second job waits with a visible position; stopping a queued job drops it; a stopped run resumes."""
    demo, backend = demo
    h = handlers(demo)
    h["start_run"](*form("first", model, per_category=3))
    h["start_run"](*form("second", model))
    view = backend.job_view("second")
    assert view["job"].state == "queued" and view["position"] == 1
    stream = h["watch_run"]("second")
    assert "queued, position 1 in line" in next(stream)[0]
    stream.close()
    assert "stopped **second**" in h["stop_run"]("second")
    assert backend.jobs.latest("second").state == "stopped"
    first = backend.jobs.latest("first")
    deadline = time.time() + 60
    while backend.jobs.get(first.id).state == "queued" and time.time() < deadline:
        time.sleep(0.2)
    while not (backend.runs_dir / "first" / "config.yaml").is_file() and time.time() < deadline:
        time.sleep(0.1)  # the loop has created its run folder: stop it mid-run
    h["stop_run"]("first")
    stopped = backend.jobs.wait(first.id, 30)
    assert stopped.state == "stopped"
    watched, msg = h["resume_run"]("first", 1)
    assert watched == "first" and "resume" in msg
    for _ in h["watch_run"]("first"):
        pass
    assert backend.jobs.latest("first").state == "done"
    summary = read_json(backend.runs_dir / "first" / "summary.json")
    assert [m["iteration"] for m in summary] == [0, 1]


# the tests check that every call completes, not how fast: httpx's default 5 s timeout failed a config request
# once when 20 clients connected while other jobs kept both CPU cores busy
HTTP = {"timeout": 120}


def launch(demo: gr.Blocks) -> tuple[str, Client]:
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, **app.LAUNCH)  # fmt: skip
    return url, Client(url, verbose=False, httpx_kwargs=HTTP)


def test_named_api_endpoints_through_gradio_client(demo, model):
    demo, _ = demo
    url, client = launch(demo)
    try:
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert ENDPOINTS <= set(api)
        assert client.config["analytics_enabled"] is False  # the served app sends no usage telemetry
        gallery, cands, qs, note = client.predict(model, "a red circle", 2, 1, "nucleus", "prob_diff", "gt", api_name="/generate")  # fmt: skip
        assert len(gallery) == 2 and Path(gallery[0]["image"]).is_file() and "score" in gallery[0]["caption"]
        assert len(cands["data"]) == 2 and "oracle says" in qs["headers"]
        with pytest.raises(Exception, match="blorp"):
            client.predict(model, "a blorp", 2, 1, "nucleus", "prob_diff", "gt", api_name="/generate")
        with pytest.raises(Exception, match="outside the runs folder"):
            client.predict("../..", "iter_1", "all", "gain", 2, api_name="/compare")
        runs = client.predict(api_name="/list_runs")
        assert "headers" in runs
        # the server kept serving after the errors
        assert len(client.predict(model, "a blue square", 1, 2, "nucleus", "prob_diff", "gt", api_name="/generate")[0]) == 1  # fmt: skip
    finally:
        demo.close()


@pytest.mark.slow
def test_twenty_concurrent_clients_while_a_job_trains(demo, model):
    """20 clients call /generate at once while a tiny training job runs: all answer, the job finishes intact.

    One /generate call first loads the model into the app (20 s on a busy machine, longer than the whole job), and
    the job runs 3 iterations, so that it is still training while the 20 requests are answered."""
    demo, backend = demo
    url, client = launch(demo)
    try:
        client.predict(model, "a red circle", 2, 0, "nucleus", "prob_diff", "gt", api_name="/generate")
        client.predict(*form("load", model, iterations=3), api_name="/start_run")
        results, errors, job_states = [], [], []

        def one(i: int) -> None:
            try:
                c = Client(url, verbose=False, httpx_kwargs=HTTP)
                out = c.predict(model, "a green triangle above a red circle", 2, i, "nucleus", "prob_diff", "gt", api_name="/generate")  # fmt: skip
                results.append(len(out[0]))
                job_states.append(backend.jobs.latest("load").state)
            except Exception as err:  # noqa: BLE001  (collected and reported below)
                errors.append(repr(err))

        t0 = time.time()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and results == [2] * 20, errors
        assert time.time() - t0 < 120
        assert "running" in job_states  # requests were answered while the job trained
        job = backend.jobs.wait(backend.jobs.latest("load").id, 300)
        assert job.state == "done" and job.returncode == 0
        summary = read_json(backend.runs_dir / "load" / "summary.json")
        assert [m["iteration"] for m in summary] == [0, 1, 2, 3] and not any("stopped" in m for m in summary)
        reference = (
            backend.runs_dir / "tiny" / "iter_1" / "candidates.jsonl"
        )  # same config, trained without load
        if (
            reference.is_file()
        ):  # (when the end-to-end test ran in this module): the same prompts, seeds, images
            keys = ("prompt", "seed", "image", "questions")
            rows = [
                json.loads(line)
                for line in (backend.runs_dir / "load" / "iter_1" / "candidates.jsonl").open()
            ]
            ref = [json.loads(line) for line in reference.open()]
            assert [{k: r[k] for k in keys} for r in rows] == [{k: r[k] for k in keys} for r in ref]
            for r in rows:
                assert (backend.runs_dir / "load" / "iter_1" / r["image"]).read_bytes() == (
                    reference.parent / r["image"]
                ).read_bytes()
    finally:
        demo.close()


def test_generate_samples_with_the_shipped_config_settings():
    """The Generate tab draws with the model's shipped DropDiv / top-p settings, not the protocol defaults."""
    from silmm.app_backend import Backend
    from silmm.config import load_config

    sc = load_config(ROOT / "configs" / "world-continuous.yaml").sampling
    div = Backend._diversity("world-continuous", "dropdiv")
    assert (div.mode, div.dropout, div.layers) == ("dropdiv", sc.dropout, sc.layers)
    assert Backend._diversity("no-such-model", "nucleus").dropout == 0.1
