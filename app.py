"""SILMM demo and evaluation app: watch a model improve itself, inspect every judgement, compare, evaluate.

    python app.py [--model NAME] [--port P] [--runs-dir DIR]        (default model: the built-in world-discrete)

`create_demo(model)` builds the Blocks and does nothing else; it launches only under `__main__`. One function per
tab lays out its components, `wire` connects every event, and each handler is a plain typed method of `Handlers`
over `silmm.app_backend.Backend` (models, training jobs, run folders; no torch here; the HTML, tables and figures
come from `silmm.app_views`). The only folder written is the runs folder (env SILMM_RUNS_DIR, default ./runs);
training runs in a `python -m silmm run` subprocess, one at a time, others queued. Gradio's usage analytics are off.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from html import escape
from pathlib import Path

import gradio as gr
import pandas as pd

from silmm import app_eval
from silmm.app_backend import (
    LIMITS,
    MAX_CANDIDATES,
    MAX_PROMPT_CHARS,
    Backend,
    InputError,
    RunForm,
)
from silmm.app_views import (
    big,
    compare_card,
    compare_prompts_table,
    compare_questions_table,
    curves_figure,
    results_figure,
    results_table,
    truth,
    verdict,
    yes_no,
)
from silmm.config import QUESTION_MODES, SCORE_RULES
from silmm.world.grammar import ALL_CATEGORIES, CATEGORIES

T2I_CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "non_spatial", "complex")
LOG_LINES = 14
DESCRIPTION = """# SILMM: self-improving multimodal models
A model writes compositional prompts, draws N candidates per prompt, asks itself yes/no questions about each
image, and trains on its own best-vs-worst pairs (Qu et al., CVPR 2025). On the built-in world an exact oracle
shows whether the model's judgement is right."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Bad input becomes a visible gr.Error; the server keeps serving."""
    try:
        yield
    except (InputError, FileNotFoundError) as err:
        raise gr.Error(str(err), print_exception=False) from None


class Handlers:
    """Each event's function over one `Backend`: plain typed values in, component values out; bad input becomes a
    gr.Error. The method names are the app's API names (`/generate`, `/start_run`, ...)."""

    def __init__(self, be: Backend):
        self.be = be

    def random_prompt(self, model: str, category: str, seed: float) -> str:
        with user_errors():
            return self.be.random_prompt(model, category, int(seed or 0))

    def generate(
        self, model: str, prompt: str, n: float, seed: float, mode: str, rule: str, questions: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list, pd.DataFrame, pd.DataFrame, str]:  # fmt: skip
        progress(0.1, desc="drawing and judging")
        with user_errors():
            res = self.be.generate(model, prompt, n, seed, mode=mode, rule=rule, questions=questions)
        gallery, cands, qrows = [], [], []
        for c in res["candidates"]:
            o = c.get("oracle")
            tag = f" · {c['role'].upper()}" if c["role"] else ""
            judged = f" · oracle: {verdict(o)}" if o else ""
            gallery.append((big(c["image"]), f"#{c['k']} score {c['score']:+.3f}{tag}{judged}"))
            row = {"#": c["k"], "seed": c["seed"], "model score": round(c["score"], 4), "role": c["role"]}
            if o:
                row |= {"oracle strict": o["strict"], "oracle facts": o["facts_only"], "objects": o["n_objects"],
                        "oracle share true": None if o["share_true"] is None else round(o["share_true"], 3)}  # fmt: skip
            cands.append(row)
            for i, q in enumerate(c["questions"]):
                r = {"#": c["k"], "question": q, "p(yes)": round(c["p_yes"][i], 4), "p(no)": round(c["p_no"][i], 4),
                     "model says": yes_no(c["p_yes"][i], c["p_no"][i])}  # fmt: skip
                if o:
                    r |= {"oracle says": truth(o["answers"][i])}
                qrows.append(r)
        note = f"**{len(res['candidates'])} candidates** for *{res['prompt']}*, {len(res['questions'])} questions each."
        return gallery, pd.DataFrame(cands), pd.DataFrame(qrows), note + (f"  \n⚠ {res['note']}" if res["note"] else "")

    def start_run(
        self, name: str, model: str, iterations: float, categories: list[str], per_category: float, n: float,
        beta: float, gamma: float, mode: str, rule: str, questions: str, min_gap: float, heldout: bool, seed: float,
    ) -> tuple[str, str]:  # fmt: skip
        with user_errors():
            form = RunForm(name=(name or "").strip(), model=model, iterations=iterations, categories=tuple(categories or ()),
                           per_category=per_category, n=n, beta=beta, gamma=gamma, mode=mode, rule=rule,
                           questions=questions, min_gap=min_gap, heldout_eval=bool(heldout), seed=int(seed or 0))  # fmt: skip
            job = self.be.start_run(form)
        return job.run, f"queued run **{job.run}** (job {job.id})"

    def resume_run(self, name: str, iterations: float) -> tuple[str, str]:
        with user_errors():
            job = self.be.resume_run((name or "").strip(), int(iterations) if iterations else None)
        return job.run, f"queued resume of **{job.run}** (job {job.id})"

    def stop_run(self, name: str) -> str:
        with user_errors():
            job = self.be.stop_run((name or "").strip() or None)
        return f"stopped **{job.run}** (was {job.id})"

    def job_panel(self, run: str) -> tuple[str, str, object, str]:
        v = self.be.job_view(run or None)
        job, prog = v["job"], v["progress"]
        if job is None:
            return "No training job yet: fill in the form and press **Start**.", "", curves_figure([]), ""
        where = {0: "running", None: job.state}.get(v["position"], f"queued, position {v['position']} in line")
        status = f"**{job.run}** · {where}" + (f" · exit status {job.returncode}" if job.returncode else "")
        if len(v["queue"]) > 1:
            status += "  \nqueue: " + ", ".join(f"{q['position']}. {q['run']} ({q['state']})" for q in v["queue"])
        stages = ""
        if prog:
            marks = " → ".join(("✓ " if s in prog["done"] else "▶ " if s == prog["stage"] else "") + s
                               for s in ("prompts", "sampling", "feedback", "pairs", "train", "measure"))  # fmt: skip
            stages = (f"iteration **{prog['iteration']} / {prog['iterations']}** · stage **{prog['stage']}** "
                      f"({prog['stage_fraction']:.0%}) · run {prog['fraction']:.0%}  \n{marks}")  # fmt: skip
        lines = v["log"].split("\n")
        done = [ln for ln in lines if ln.startswith("iter ") and " | " in ln]
        if done:
            stages += "  \n" + "  \n".join(f"`{ln}`" for ln in done[-5:])
        return status, stages, curves_figure(v["summary"]), "\n".join(lines[-LOG_LINES:])

    def watch_run(self, run: str, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008
        """Streams the job panel until the job is neither queued nor running (also after a browser reload)."""
        last = None
        while True:
            v = self.be.job_view(run or None)
            job = v["job"]
            state = job and job.state  # read once: the worker thread changes job.state while this loop runs
            key = (job and (job.id, state, v["position"]), len(v["summary"]), v["log"][-300:])
            if v["progress"] and state == "running":
                p = v["progress"]
                progress(p["fraction"], desc=f"iteration {p['iteration']}/{p['iterations']}: {p['stage']}")
            if key != last:
                last = key
                yield self.job_panel(run)
            if job is None or state not in ("queued", "running"):
                return
            time.sleep(1.0)

    def compare(self, run: str, iteration: str, category: str, sort: str, limit: float) -> tuple[str, pd.DataFrame, pd.DataFrame]:  # fmt: skip
        with user_errors():
            it = str(iteration or "").removeprefix("iter_")
            if not it.isdigit():
                raise InputError(f"choose an iteration of run {run!r} (iter_<k>), not {iteration!r}")
            res = self.be.compare(run, int(it), category=category or "all", sort=sort, limit=limit)
        cards = "".join(compare_card(item, res["iteration"]) for item in res["items"])
        head = f"<p>Run <b>{escape(res['run'])}</b>, iteration {res['iteration']}: {len(res['items'])} prompts, the same seeds before and after.</p>"  # fmt: skip
        return head + cards, compare_prompts_table(res["items"]), compare_questions_table(res["items"])

    def evaluate(
        self, benchmark: str, model: str, adapter: str, categories: list[str], limit: float, images_per_prompt: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple[str, pd.DataFrame, object, list[str]]:  # fmt: skip
        progress(0, desc=f"{benchmark}: loading")
        with user_errors():
            out = app_eval.evaluate(self.be, benchmark, model, "" if adapter in (None, "", "(none)") else adapter,
                                    categories=categories, limit=limit, images_per_prompt=images_per_prompt)  # fmt: skip
        res = out["results"] | {"label": out["label"]}
        files = [p for p in (out["dir"] / "results.json", out["dir"] / "results.csv") if p.is_file()]
        tmp = Path(tempfile.mkdtemp(prefix="silmm-eval-"))
        files = [str(shutil.copy(p, tmp / f"{benchmark}-{out['label']}-{p.name}")) for p in files]
        summary = f"**{benchmark}** · {out['label']} · overall **{res.get('overall', float('nan')):.3f}** · {res.get('n_prompts', '?')} prompts · {res.get('seconds', '?')} s"  # fmt: skip
        return summary, results_table([res]), results_figure([res]), files

    def overlay(self, keys: list[str]) -> tuple[pd.DataFrame, object]:
        with user_errors():
            if not keys:
                raise InputError(f"choose one or more saved results; saved: {app_eval.saved_results(self.be.runs_dir)}")
            results = [app_eval.load_results(self.be.runs_dir, k) for k in keys]
        return results_table(results), results_figure(results)

    def list_runs(self) -> pd.DataFrame:
        return pd.DataFrame(self.be.list_runs())

    def refresh_choices(self) -> tuple:
        runs = self.be.run_names()
        adapters = ["(none)"] + [f"{r}/iter_{k}" for r in runs for k in self.be.iterations_with_adapter(r)]
        saved = app_eval.saved_results(self.be.runs_dir)
        return gr.Dropdown(choices=runs), gr.Dropdown(choices=adapters), gr.Dropdown(choices=saved), gr.Dropdown(choices=runs), self.list_runs()  # fmt: skip

    def iterations_for(self, run: str) -> object:
        with user_errors():
            its = self.be.iterations_with_adapter(run) if run else []
        return gr.Dropdown(choices=[f"iter_{k}" for k in its], value=f"iter_{its[-1]}" if its else None)

    def open_in_compare(self, run: str) -> tuple:
        with user_errors():
            self.be.run_root(run)
        return gr.Tabs(selected="compare"), gr.Dropdown(value=run)

    def open_in_evaluate(self, run: str) -> tuple:
        with user_errors():
            its = self.be.iterations_with_adapter(run)
        return gr.Tabs(selected="evaluate"), gr.Dropdown(value=f"{run}/iter_{its[-1]}" if its else "(none)")

    def modes_for(self, model: str) -> object:
        modes = self.be.modes_for(model)
        return gr.Dropdown(choices=list(modes), value=modes[0])

    @staticmethod
    def categories_for(benchmark: str) -> object:
        choices = {"world": ALL_CATEGORIES, "t2i-compbench": T2I_CATEGORIES}.get(benchmark, ())
        return gr.CheckboxGroup(choices=list(choices), value=list(choices)[:2])


# -- layout: one function per tab, each returning its components by name -----------------------------------------
def generate_tab(models: list[str], model: str | None, modes: tuple[str, ...]) -> dict:
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", elem_id="g-prompt", placeholder="a red circle to the left of a blue square",
                                max_length=MAX_PROMPT_CHARS + 200, lines=2)  # fmt: skip
            with gr.Row():
                category = gr.Dropdown(list(ALL_CATEGORIES), value="color", label="Category")
                random = gr.Button("Random prompt")
        with gr.Column(scale=1):
            chosen = gr.Dropdown(models, value=model, label="Model")
            n = gr.Slider(1, MAX_CANDIDATES, value=4, step=1, label="N candidates")
            seed = gr.Number(0, label="Seed", precision=0, minimum=0)
    with gr.Accordion("Sampling and scoring", open=False):
        with gr.Row():
            mode = gr.Dropdown(list(modes), value=modes[0], label="Diversity mode")
            rule = gr.Dropdown(list(SCORE_RULES), value="prob_diff", label="Score rule")
            questions = gr.Radio(list(QUESTION_MODES), value="self", label="Questions",
                                 info="self: the model asks; gt: the world's decomposition; whole: one question")  # fmt: skip
    go = gr.Button("Generate", variant="primary")
    note = gr.Markdown()
    gallery = gr.Gallery(label="Candidates", elem_id="g-gallery", columns=4, height="auto", object_fit="contain")
    cands = gr.Dataframe(label="Candidates: the model's score beside the oracle's verdict", interactive=False)
    qs = gr.Dataframe(label="Questions per candidate", interactive=False, max_height=360)
    return {"prompt": prompt, "category": category, "random": random, "model": chosen, "n": n, "seed": seed,
            "mode": mode, "rule": rule, "questions": questions, "go": go, "note": note, "gallery": gallery,
            "cands": cands, "qs": qs}  # fmt: skip


def improve_tab(models: list[str], model: str | None, modes: tuple[str, ...]) -> dict:
    with gr.Row():
        name = gr.Textbox(value=time.strftime("run-%m%d-%H%M"), label="Run name", elem_id="s-name")
        chosen = gr.Dropdown(models, value=model, label="Model")
        iters = gr.Number(1, label="Iterations", precision=0, minimum=1, maximum=LIMITS["iterations"][1])
        seed = gr.Number(0, label="Seed", precision=0, minimum=0)
    cats = gr.CheckboxGroup(list(CATEGORIES), value=["color", "spatial2d"], label="Prompt categories")
    with gr.Row():
        per = gr.Number(4, label="Prompts per category", precision=0, minimum=1, elem_id="s-per")
        n = gr.Number(4, label="N candidates", precision=0, minimum=2, elem_id="s-n")
        beta = gr.Number(0.1, label="β (DPO)", minimum=0)
        gamma = gr.Number(1.0, label="γ (KC-DPO)", minimum=0)
        gap = gr.Number(0.1, label="Min score gap", minimum=0, maximum=2, elem_id="s-gap")
    with gr.Row():
        mode = gr.Dropdown(list(modes), value=modes[0], label="Diversity mode")
        rule = gr.Dropdown(list(SCORE_RULES), value="prob_diff", label="Score rule")
        questions = gr.Radio(list(QUESTION_MODES), value="self", label="Questions", elem_id="s-questions")
        heldout = gr.Checkbox(False, label="Held-out evaluation each iteration (world; ~30 s each)")
    with gr.Row():
        start = gr.Button("Start", variant="primary")
        stop = gr.Button("Stop", variant="stop")
        resume = gr.Button("Resume")
    form = [name, chosen, iters, cats, per, n, beta, gamma, mode, rule, questions, gap, heldout, seed]
    watched, msg = gr.State(""), gr.Markdown()
    panel = [gr.Markdown(elem_id="s-status"), gr.Markdown(elem_id="s-stages"),
             gr.Plot(label="Curves per iteration", elem_id="s-plot"),
             gr.Textbox(label="Log (the last lines)", lines=LOG_LINES, max_lines=LOG_LINES, autoscroll=True,
                        interactive=False)]  # fmt: skip
    return {"name": name, "model": chosen, "iters": iters, "mode": mode, "form": form, "panel": panel,
            "start": start, "stop": stop, "resume": resume, "watched": watched, "msg": msg}  # fmt: skip


def compare_tab(runs: list[str]) -> dict:
    with gr.Row():
        run = gr.Dropdown(runs, label="Run", elem_id="c-run", allow_custom_value=True)
        iteration = gr.Dropdown([], label="Iteration", allow_custom_value=True)
        category = gr.Dropdown(["all", *ALL_CATEGORIES], value="all", label="Category", allow_custom_value=True)
        sort = gr.Radio([("largest gain", "gain"), ("largest drop", "drop"), ("prompt order", "prompt")],
                        value="gain", label="Sort")  # fmt: skip
        limit = gr.Slider(1, LIMITS["compare_prompts"][1], value=6, step=1, label="Prompts")
    go = gr.Button("Compare", variant="primary")
    outputs = [gr.HTML(elem_id="c-html"), gr.Dataframe(label="Per prompt", interactive=False),
               gr.Dataframe(label="Per question", interactive=False, max_height=300)]  # fmt: skip
    return {"run": run, "iteration": iteration, "inputs": [run, iteration, category, sort, limit], "go": go,
            "outputs": outputs}  # fmt: skip


def evaluate_tab(models: list[str], model: str | None, saved: list[str]) -> dict:
    with gr.Row():
        bench = gr.Radio(list(app_eval.BENCHMARKS), value="world", label="Benchmark")
        chosen = gr.Dropdown(models, value=model, label="Model")
        adapter = gr.Dropdown(["(none)"], value="(none)", label="Adapter (run / iteration)", allow_custom_value=True,
                              elem_id="e-adapter")  # fmt: skip
    cats = gr.CheckboxGroup(list(ALL_CATEGORIES), value=["color", "spatial2d"], label="Categories")
    with gr.Row():
        limit = gr.Number(10, label="Prompts per category (limit)", precision=0, minimum=1, elem_id="e-limit")
        ipp = gr.Number(2, label="Images per prompt", precision=0, minimum=1, maximum=8, elem_id="e-ipp")
    go = gr.Button("Evaluate", variant="primary")
    summary = gr.Markdown(elem_id="e-summary")
    table = gr.Dataframe(label="Results per category", interactive=False)
    plot = gr.Plot(label="Score per category", elem_id="e-plot")
    files = gr.File(label="Download JSON / CSV", file_count="multiple")
    with gr.Accordion("Earlier results: overlay base vs iteration k", open=True):
        saved_box = gr.Dropdown(saved, multiselect=True, label="Saved results", allow_custom_value=True, elem_id="e-saved")
        overlay = gr.Button("Overlay")
    return {"bench": bench, "cats": cats, "adapter": adapter, "inputs": [bench, chosen, adapter, cats, limit, ipp],
            "go": go, "outputs": [summary, table, plot, files], "saved": saved_box, "overlay": overlay,
            "table": table, "plot": plot}  # fmt: skip


def runs_tab(be: Backend) -> dict:
    refresh = gr.Button("Refresh")
    table = gr.Dataframe(pd.DataFrame(be.list_runs()), label=f"Runs in {be.runs_dir}", interactive=False, elem_id="r-table")
    with gr.Row():
        run = gr.Dropdown(be.run_names(), label="Run", elem_id="r-run", allow_custom_value=True)
        to_compare = gr.Button("Open in Compare")
        to_evaluate = gr.Button("Open in Evaluate")
    return {"refresh": refresh, "table": table, "run": run, "to_compare": to_compare, "to_evaluate": to_evaluate}


def wire(demo: gr.Blocks, tabs: gr.Tabs, h: Handlers, g: dict, s: dict, c: dict, e: dict, r: dict) -> None:
    """Every event of the app; the API names are the endpoints that gradio_client and the tests call."""
    gen_inputs = [g["model"], g["prompt"], g["n"], g["seed"], g["mode"], g["rule"], g["questions"]]
    gen_outputs = [g["gallery"], g["cands"], g["qs"], g["note"]]
    g["model"].change(h.modes_for, g["model"], g["mode"], api_name=False)
    s["model"].change(h.modes_for, s["model"], s["mode"], api_name=False)
    g["random"].click(h.random_prompt, [g["model"], g["category"], g["seed"]], g["prompt"], api_name="random_prompt")
    g["go"].click(h.generate, gen_inputs, gen_outputs, api_name="generate", concurrency_limit=2)
    g["prompt"].submit(h.generate, gen_inputs, gen_outputs, api_name=False, concurrency_limit=2)

    watch = {"fn": h.watch_run, "inputs": s["watched"], "outputs": s["panel"], "concurrency_limit": None}
    started = [s["watched"], s["msg"]]
    s["start"].click(h.start_run, s["form"], started, api_name="start_run").success(**watch, api_name=False)
    s["resume"].click(h.resume_run, [s["name"], s["iters"]], started, api_name="resume_run").success(**watch, api_name=False)  # fmt: skip
    s["stop"].click(h.stop_run, s["watched"], s["msg"], api_name="stop_run")
    demo.load(**watch, api_name="watch_run")

    c["run"].change(h.iterations_for, c["run"], c["iteration"], api_name=False)
    c["go"].click(h.compare, c["inputs"], c["outputs"], api_name="compare", concurrency_id="heavy")

    choices = {"fn": h.refresh_choices, "inputs": None, "outputs": [c["run"], e["adapter"], e["saved"], r["run"], r["table"]],
               "api_name": False}  # fmt: skip
    e["bench"].change(h.categories_for, e["bench"], e["cats"], api_name=False)
    e["go"].click(h.evaluate, e["inputs"], e["outputs"], api_name="evaluate", concurrency_id="heavy").then(**choices)
    e["overlay"].click(h.overlay, e["saved"], [e["table"], e["plot"]], api_name="overlay_results")

    r["refresh"].click(h.list_runs, None, r["table"], api_name="list_runs").then(**choices)
    demo.load(**choices)
    tabs.change(**choices)
    r["to_compare"].click(h.open_in_compare, r["run"], [tabs, c["run"]], api_name=False)
    r["to_evaluate"].click(h.open_in_evaluate, r["run"], [tabs, e["adapter"]], api_name=False)


def create_demo(
    model: str = "world-discrete",
    *,
    runs_dir: str | None = None,
    models: list[str] | None = None,
    backend: Backend | None = None,
) -> gr.Blocks:
    be = backend or Backend(model, runs_dir=runs_dir, models=models)
    h = Handlers(be)
    shown = model if model in be.models else None
    modes = be.modes_for(shown or "")
    with gr.Blocks(title="SILMM", analytics_enabled=False) as demo:  # no usage telemetry from a research tool
        gr.Markdown(DESCRIPTION)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate & inspect", id="generate"):
                g = generate_tab(be.models, shown, modes)
            with gr.Tab("Self-improve", id="improve"):
                s = improve_tab(be.models, shown, modes)
            with gr.Tab("Compare", id="compare"):
                c = compare_tab(be.run_names())
            with gr.Tab("Evaluate", id="evaluate"):
                e = evaluate_tab(be.models, shown, app_eval.saved_results(be.runs_dir))
            with gr.Tab("Runs", id="runs"):
                r = runs_tab(be)
        wire(demo, tabs, h, g, s, c, e, r)
    demo.queue(max_size=64, default_concurrency_limit=1)
    return demo


CSS = """
#g-gallery .grid-wrap.fixed-height { min-height: 0; }
.silmm-cmp { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; margin: 8px 0; }
.silmm-cmp-row { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.silmm-cmp figure { margin: 0; text-align: center; font-size: 0.85em; }
.silmm-cmp img { image-rendering: pixelated; width: 160px; height: 160px; border: 1px solid var(--border-color-primary); }
.silmm-cmp table { font-size: 0.85em; border-collapse: collapse; }
.silmm-cmp td, .silmm-cmp th { padding: 2px 8px; border-bottom: 1px solid var(--border-color-primary); }
"""
LAUNCH = {"show_error": True, "ssr_mode": False, "css": CSS}  # gradio 6: css/theme are launch() arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="world-discrete", help="default model: a registered name or a world folder"
    )
    parser.add_argument("--port", type=int, default=None, help="server port (default: gradio's, 7860)")
    parser.add_argument("--host", default=None, help="server address (default 127.0.0.1; Spaces set 0.0.0.0)")
    parser.add_argument(
        "--runs-dir", default=None, help="where runs and evaluations are written (env SILMM_RUNS_DIR)"
    )
    args = parser.parse_args()
    create_demo(args.model, runs_dir=args.runs_dir).launch(
        server_name=args.host, server_port=args.port, **LAUNCH
    )


if __name__ == "__main__":
    main()
