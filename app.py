"""SILMM demo and evaluation app: watch a model improve itself, inspect every judgement, compare, evaluate.

    python app.py [--model NAME] [--port P] [--runs-dir DIR]        (default model: the built-in world-discrete)

`create_demo(model)` builds the Blocks and does nothing else; it launches only under `__main__`. Layout first,
event wiring at the end; each handler is a plain typed function over `silmm.app_backend.Backend` (models,
training jobs, run folders; no torch here). The only folder written is the runs folder (env SILMM_RUNS_DIR,
default ./runs); training runs in a `python -m silmm run` subprocess, one at a time, others queued. Gradio's usage
analytics are off.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Iterator
from html import escape
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from silmm.app_backend import (
    BENCHMARKS,
    LIMITS,
    MAX_CANDIDATES,
    MAX_PROMPT_CHARS,
    Backend,
    InputError,
    RunForm,
    curves_figure,
    results_figure,
)
from silmm.config import QUESTION_MODES, SCORE_RULES
from silmm.world.grammar import ALL_CATEGORIES, CATEGORIES

T2I_CATEGORIES = ("color", "shape", "texture", "spatial", "3d_spatial", "numeracy", "non_spatial", "complex")
LOG_LINES = 14
SHOW_PX = 192  # world images are 64 px: shown enlarged without smoothing
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


def big(image: Image.Image) -> Image.Image:
    return image.resize((SHOW_PX, SHOW_PX), Image.NEAREST) if image.width < SHOW_PX else image


def data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    big(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def yes_no(p_yes: float, p_no: float) -> str:
    return "yes" if p_yes > p_no else "no"


def truth(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def verdict(oracle: dict | None) -> str:
    if oracle is None:
        return ""
    return "strict ✓" if oracle["strict"] else "facts ✓" if oracle["facts_only"] else "✗"


def compare_card(item: dict, iteration: int) -> str:
    """One prompt: the before and after images side by side, the per-question answers, the score change."""
    b, a = item["before"], item["after"]
    world = "oracle" in b
    rows = []
    for i, q in enumerate(item["questions"]):
        cells = [
            escape(q),
            f"{b['p_yes'][i]:.2f} / {b['p_no'][i]:.2f}",
            f"{a['p_yes'][i]:.2f} / {a['p_no'][i]:.2f}",
        ]
        if world:
            cells.append(f"{truth(b['oracle']['answers'][i])} → {truth(a['oracle']['answers'][i])}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    heads = ["question", "before p(yes) / p(no)", "after p(yes) / p(no)"] + (["oracle"] if world else [])
    table = "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>" + "".join(rows) + "</table>"

    def figure(side: dict, label: str) -> str:
        note = f"<br>oracle: {verdict(side['oracle'])}" if world else ""
        return f"<figure><img src='{data_uri(side['image'])}'><figcaption>{label}{note}</figcaption></figure>"

    color = "#1a7f37" if item["gain"] > 0 else "#cf222e" if item["gain"] < 0 else "#57606a"
    head = (
        f"<b>{escape(item['prompt'])}</b> · {item['category']} · seed {item['seed']} · score {b['score']:+.3f} → "
        f"{a['score']:+.3f} <span style='color:{color}'>({item['gain']:+.3f})</span>"
    )
    body = figure(b, f"before (iter {iteration - 1})") + figure(a, f"after (iter {iteration})") + table
    return f"<div class='silmm-cmp'><div>{head}</div><div class='silmm-cmp-row'>{body}</div></div>"


def compare_prompts_table(items: list[dict]) -> pd.DataFrame:
    rows = []
    for it in items:
        b, a = it["before"], it["after"]
        row = {"prompt": it["prompt"], "category": it["category"], "seed": it["seed"],
               "score before": round(b["score"], 4), "score after": round(a["score"], 4), "gain": round(it["gain"], 4)}  # fmt: skip
        if "oracle" in b:
            row |= {"oracle before": verdict(b["oracle"]), "oracle after": verdict(a["oracle"])}
        rows.append(row)
    return pd.DataFrame(rows)


def compare_questions_table(items: list[dict]) -> pd.DataFrame:
    rows = []
    for it in items:
        b, a = it["before"], it["after"]
        for i, q in enumerate(it["questions"]):
            row = {"prompt": it["prompt"], "question": q, "before p(yes)": round(b["p_yes"][i], 4),
                   "before p(no)": round(b["p_no"][i], 4), "after p(yes)": round(a["p_yes"][i], 4),
                   "after p(no)": round(a["p_no"][i], 4)}  # fmt: skip
            if "oracle" in b:
                row["oracle before -> after"] = (
                    f"{truth(b['oracle']['answers'][i])} -> {truth(a['oracle']['answers'][i])}"
                )
            rows.append(row)
    return pd.DataFrame(rows)


def create_demo(
    model: str = "world-discrete",
    *,
    runs_dir: str | None = None,
    models: list[str] | None = None,
    backend: Backend | None = None,
) -> gr.Blocks:
    be = backend or Backend(model, runs_dir=runs_dir, models=models)

    # -- handlers -------------------------------------------------------------------------------------------------
    def random_prompt(model: str, category: str, seed: float) -> str:
        with user_errors():
            return be.random_prompt(model, category, int(seed or 0))

    def generate(
        model: str, prompt: str, n: float, seed: float, mode: str, rule: str, questions: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple[list, pd.DataFrame, pd.DataFrame, str]:  # fmt: skip
        progress(0.1, desc="drawing and judging")
        with user_errors():
            res = be.generate(model, prompt, n, seed, mode=mode, rule=rule, questions=questions)
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
        return (
            gallery,
            pd.DataFrame(cands),
            pd.DataFrame(qrows),
            note + (f"  \n⚠ {res['note']}" if res["note"] else ""),
        )

    def start_run(
        name: str, model: str, iterations: float, categories: list[str], per_category: float, n: float,
        beta: float, gamma: float, mode: str, rule: str, questions: str, min_gap: float, heldout: bool, seed: float,
    ) -> tuple[str, str]:  # fmt: skip
        with user_errors():
            form = RunForm(name=(name or "").strip(), model=model, iterations=iterations, categories=tuple(categories or ()),
                           per_category=per_category, n=n, beta=beta, gamma=gamma, mode=mode, rule=rule,
                           questions=questions, min_gap=min_gap, heldout_eval=bool(heldout), seed=int(seed or 0))  # fmt: skip
            job = be.start_run(form)
        return job.run, f"queued run **{job.run}** (job {job.id})"

    def resume_run(name: str, iterations: float) -> tuple[str, str]:
        with user_errors():
            job = be.resume_run((name or "").strip(), int(iterations) if iterations else None)
        return job.run, f"queued resume of **{job.run}** (job {job.id})"

    def stop_run(name: str) -> str:
        with user_errors():
            job = be.stop_run((name or "").strip() or None)
        return f"stopped **{job.run}** (was {job.id})"

    def job_panel(run: str) -> tuple[str, str, object, str]:
        v = be.job_view(run or None)
        job, prog = v["job"], v["progress"]
        if job is None:
            return "No training job yet: fill in the form and press **Start**.", "", curves_figure([]), ""
        where = {0: "running", None: job.state}.get(
            v["position"], f"queued, position {v['position']} in line"
        )
        status = f"**{job.run}** · {where}" + (f" · exit status {job.returncode}" if job.returncode else "")
        if len(v["queue"]) > 1:
            status += "  \nqueue: " + ", ".join(
                f"{q['position']}. {q['run']} ({q['state']})" for q in v["queue"]
            )
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

    def watch_run(run: str, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008
        """Streams the job panel until the job is neither queued nor running (also after a browser reload)."""
        last = None
        while True:
            v = be.job_view(run or None)
            job = v["job"]
            state = job and job.state  # read once: the worker thread changes job.state while this loop runs
            key = (job and (job.id, state, v["position"]), len(v["summary"]), v["log"][-300:])
            if v["progress"] and state == "running":
                p = v["progress"]
                progress(p["fraction"], desc=f"iteration {p['iteration']}/{p['iterations']}: {p['stage']}")
            if key != last:
                last = key
                yield job_panel(run)
            if job is None or state not in ("queued", "running"):
                return
            time.sleep(1.0)

    def compare(run: str, iteration: str, category: str, sort: str, limit: float) -> tuple[str, pd.DataFrame, pd.DataFrame]:  # fmt: skip
        with user_errors():
            it = str(iteration or "").removeprefix("iter_")
            if not it.isdigit():
                raise InputError(f"choose an iteration of run {run!r} (iter_<k>), not {iteration!r}")
            res = be.compare(run, int(it), category=category or "all", sort=sort, limit=limit)
        cards = "".join(compare_card(item, res["iteration"]) for item in res["items"])
        head = f"<p>Run <b>{escape(res['run'])}</b>, iteration {res['iteration']}: {len(res['items'])} prompts, the same seeds before and after.</p>"  # fmt: skip
        return head + cards, compare_prompts_table(res["items"]), compare_questions_table(res["items"])

    def evaluate(
        benchmark: str, model: str, adapter: str, categories: list[str], limit: float, images_per_prompt: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> tuple[str, pd.DataFrame, object, list[str]]:  # fmt: skip
        progress(0, desc=f"{benchmark}: loading")
        with user_errors():
            out = be.evaluate(benchmark, model, "" if adapter in (None, "", "(none)") else adapter,
                              categories=categories, limit=limit, images_per_prompt=images_per_prompt)  # fmt: skip
        res = out["results"] | {"label": out["label"]}
        table = results_table([res])
        files = [p for p in (out["dir"] / "results.json", out["dir"] / "results.csv") if p.is_file()]
        tmp = Path(tempfile.mkdtemp(prefix="silmm-eval-"))
        files = [str(shutil.copy(p, tmp / f"{benchmark}-{out['label']}-{p.name}")) for p in files]
        summary = f"**{benchmark}** · {out['label']} · overall **{res.get('overall', float('nan')):.3f}** · {res.get('n_prompts', '?')} prompts · {res.get('seconds', '?')} s"  # fmt: skip
        return summary, table, results_figure([res]), files

    def overlay(keys: list[str]) -> tuple[pd.DataFrame, object]:
        with user_errors():
            if not keys:
                raise InputError(f"choose one or more saved results; saved: {be.saved_results()}")
            results = [be.load_results(k) for k in keys]
        return results_table(results), results_figure(results)

    def list_runs() -> pd.DataFrame:
        return pd.DataFrame(be.list_runs())

    def refresh_choices() -> tuple:
        runs = be.run_names()
        adapters = ["(none)"] + [f"{r}/iter_{k}" for r in runs for k in be.iterations_with_adapter(r)]
        return (gr.Dropdown(choices=runs), gr.Dropdown(choices=adapters), gr.Dropdown(choices=be.saved_results()),
                gr.Dropdown(choices=runs), pd.DataFrame(be.list_runs()))  # fmt: skip

    def iterations_for(run: str) -> object:
        with user_errors():
            its = be.iterations_with_adapter(run) if run else []
        return gr.Dropdown(choices=[f"iter_{k}" for k in its], value=f"iter_{its[-1]}" if its else None)

    def open_in_compare(run: str) -> tuple:
        with user_errors():
            be.run_root(run)
        return gr.Tabs(selected="compare"), gr.Dropdown(value=run)

    def open_in_evaluate(run: str) -> tuple:
        with user_errors():
            its = be.iterations_with_adapter(run)
        value = f"{run}/iter_{its[-1]}" if its else "(none)"
        return gr.Tabs(selected="evaluate"), gr.Dropdown(value=value)

    def modes_for(model: str) -> object:
        modes = be.modes_for(model)
        return gr.Dropdown(choices=list(modes), value=modes[0])

    def categories_for(benchmark: str) -> object:
        choices = {"world": ALL_CATEGORIES, "t2i-compbench": T2I_CATEGORIES}.get(benchmark, ())
        return gr.CheckboxGroup(choices=list(choices), value=list(choices)[:2])

    # -- layout ---------------------------------------------------------------------------------------------------
    models = be.models
    modes = be.modes_for(model if model in models else "")
    with gr.Blocks(title="SILMM", analytics_enabled=False) as demo:  # no usage telemetry from a research tool
        gr.Markdown(DESCRIPTION)
        with gr.Tabs() as tabs:
            with gr.Tab("Generate & inspect", id="generate"):
                with gr.Row():
                    with gr.Column(scale=2):
                        g_prompt = gr.Textbox(label="Prompt", elem_id="g-prompt", placeholder="a red circle to the left of a blue square",
                                              max_length=MAX_PROMPT_CHARS + 200, lines=2)  # fmt: skip
                        with gr.Row():
                            g_category = gr.Dropdown(list(ALL_CATEGORIES), value="color", label="Category")
                            g_random = gr.Button("Random prompt")
                    with gr.Column(scale=1):
                        g_model = gr.Dropdown(models, value=model if model in models else None, label="Model")
                        g_n = gr.Slider(1, MAX_CANDIDATES, value=4, step=1, label="N candidates")
                        g_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                with gr.Accordion("Sampling and scoring", open=False):
                    with gr.Row():
                        g_mode = gr.Dropdown(list(modes), value=modes[0], label="Diversity mode")
                        g_rule = gr.Dropdown(list(SCORE_RULES), value="prob_diff", label="Score rule")
                        g_questions = gr.Radio(list(QUESTION_MODES), value="self", label="Questions",
                                               info="self: the model asks; gt: the world's decomposition; whole: one question")  # fmt: skip
                g_go = gr.Button("Generate", variant="primary")
                g_note = gr.Markdown()
                g_gallery = gr.Gallery(
                    label="Candidates", elem_id="g-gallery", columns=4, height="auto", object_fit="contain"
                )
                g_cands = gr.Dataframe(
                    label="Candidates: the model's score beside the oracle's verdict", interactive=False
                )
                g_qs = gr.Dataframe(label="Questions per candidate", interactive=False, max_height=360)

            with gr.Tab("Self-improve", id="improve"):
                with gr.Row():
                    s_name = gr.Textbox(
                        value=time.strftime("run-%m%d-%H%M"), label="Run name", elem_id="s-name"
                    )
                    s_model = gr.Dropdown(models, value=model if model in models else None, label="Model")
                    s_iters = gr.Number(
                        1, label="Iterations", precision=0, minimum=1, maximum=LIMITS["iterations"][1]
                    )
                    s_seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                s_cats = gr.CheckboxGroup(
                    list(CATEGORIES), value=["color", "spatial2d"], label="Prompt categories"
                )
                with gr.Row():
                    s_per = gr.Number(
                        4, label="Prompts per category", precision=0, minimum=1, elem_id="s-per"
                    )
                    s_n = gr.Number(4, label="N candidates", precision=0, minimum=2, elem_id="s-n")
                    s_beta = gr.Number(0.1, label="β (DPO)", minimum=0)
                    s_gamma = gr.Number(1.0, label="γ (KC-DPO)", minimum=0)
                    s_gap = gr.Number(0.1, label="Min score gap", minimum=0, maximum=2, elem_id="s-gap")
                with gr.Row():
                    s_mode = gr.Dropdown(list(modes), value=modes[0], label="Diversity mode")
                    s_rule = gr.Dropdown(list(SCORE_RULES), value="prob_diff", label="Score rule")
                    s_questions = gr.Radio(
                        list(QUESTION_MODES), value="self", label="Questions", elem_id="s-questions"
                    )
                    s_heldout = gr.Checkbox(
                        False, label="Held-out evaluation each iteration (world; ~30 s each)"
                    )
                with gr.Row():
                    s_start = gr.Button("Start", variant="primary")
                    s_stop = gr.Button("Stop", variant="stop")
                    s_resume = gr.Button("Resume")
                s_watched = gr.State("")
                s_msg = gr.Markdown()
                s_status = gr.Markdown(elem_id="s-status")
                s_stages = gr.Markdown(elem_id="s-stages")
                s_plot = gr.Plot(label="Curves per iteration", elem_id="s-plot")
                s_log = gr.Textbox(
                    label="Log (the last lines)",
                    lines=LOG_LINES,
                    max_lines=LOG_LINES,
                    autoscroll=True,
                    interactive=False,
                )

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    c_run = gr.Dropdown(be.run_names(), label="Run", elem_id="c-run", allow_custom_value=True)
                    c_iter = gr.Dropdown([], label="Iteration", allow_custom_value=True)
                    c_cat = gr.Dropdown(
                        ["all", *ALL_CATEGORIES], value="all", label="Category", allow_custom_value=True
                    )
                    c_sort = gr.Radio([("largest gain", "gain"), ("largest drop", "drop"), ("prompt order", "prompt")],
                                      value="gain", label="Sort")  # fmt: skip
                    c_limit = gr.Slider(1, LIMITS["compare_prompts"][1], value=6, step=1, label="Prompts")
                c_go = gr.Button("Compare", variant="primary")
                c_html = gr.HTML(elem_id="c-html")
                c_prompts = gr.Dataframe(label="Per prompt", interactive=False)
                c_qs = gr.Dataframe(label="Per question", interactive=False, max_height=300)

            with gr.Tab("Evaluate", id="evaluate"):
                with gr.Row():
                    e_bench = gr.Radio(list(BENCHMARKS), value="world", label="Benchmark")
                    e_model = gr.Dropdown(models, value=model if model in models else None, label="Model")
                    e_adapter = gr.Dropdown(
                        ["(none)"],
                        value="(none)",
                        label="Adapter (run / iteration)",
                        allow_custom_value=True,
                        elem_id="e-adapter",
                    )
                e_cats = gr.CheckboxGroup(
                    list(ALL_CATEGORIES), value=["color", "spatial2d"], label="Categories"
                )
                with gr.Row():
                    e_limit = gr.Number(
                        10, label="Prompts per category (limit)", precision=0, minimum=1, elem_id="e-limit"
                    )
                    e_ipp = gr.Number(
                        2, label="Images per prompt", precision=0, minimum=1, maximum=8, elem_id="e-ipp"
                    )
                e_go = gr.Button("Evaluate", variant="primary")
                e_summary = gr.Markdown(elem_id="e-summary")
                e_table = gr.Dataframe(label="Results per category", interactive=False)
                e_plot = gr.Plot(label="Score per category", elem_id="e-plot")
                e_files = gr.File(label="Download JSON / CSV", file_count="multiple")
                with gr.Accordion("Earlier results: overlay base vs iteration k", open=True):
                    e_saved = gr.Dropdown(
                        be.saved_results(),
                        multiselect=True,
                        label="Saved results",
                        allow_custom_value=True,
                        elem_id="e-saved",
                    )
                    e_overlay = gr.Button("Overlay")

            with gr.Tab("Runs", id="runs"):
                r_refresh = gr.Button("Refresh")
                r_table = gr.Dataframe(
                    pd.DataFrame(be.list_runs()),
                    label=f"Runs in {be.runs_dir}",
                    interactive=False,
                    elem_id="r-table",
                )
                with gr.Row():
                    r_run = gr.Dropdown(be.run_names(), label="Run", elem_id="r-run", allow_custom_value=True)
                    r_compare = gr.Button("Open in Compare")
                    r_eval = gr.Button("Open in Evaluate")

        # -- events -------------------------------------------------------------------------------------------------
        gen_inputs = [g_model, g_prompt, g_n, g_seed, g_mode, g_rule, g_questions]
        g_model.change(modes_for, g_model, g_mode, api_name=False)
        s_model.change(modes_for, s_model, s_mode, api_name=False)
        g_random.click(random_prompt, [g_model, g_category, g_seed], g_prompt, api_name="random_prompt")
        g_go.click(
            generate, gen_inputs, [g_gallery, g_cands, g_qs, g_note], api_name="generate", concurrency_limit=2
        )
        g_prompt.submit(
            generate, gen_inputs, [g_gallery, g_cands, g_qs, g_note], api_name=False, concurrency_limit=2
        )

        form = [s_name, s_model, s_iters, s_cats, s_per, s_n, s_beta, s_gamma, s_mode, s_rule, s_questions, s_gap, s_heldout, s_seed]  # fmt: skip
        panel = [s_status, s_stages, s_plot, s_log]
        watch = {"fn": watch_run, "inputs": s_watched, "outputs": panel, "concurrency_limit": None}
        s_start.click(start_run, form, [s_watched, s_msg], api_name="start_run").success(
            **watch, api_name=False
        )
        s_resume.click(resume_run, [s_name, s_iters], [s_watched, s_msg], api_name="resume_run").success(**watch, api_name=False)  # fmt: skip
        s_stop.click(stop_run, s_watched, s_msg, api_name="stop_run")
        demo.load(**watch, api_name="watch_run")

        c_run.change(iterations_for, c_run, c_iter, api_name=False)
        c_go.click(compare, [c_run, c_iter, c_cat, c_sort, c_limit], [c_html, c_prompts, c_qs], api_name="compare", concurrency_id="heavy")  # fmt: skip

        e_bench.change(categories_for, e_bench, e_cats, api_name=False)
        e_go.click(evaluate, [e_bench, e_model, e_adapter, e_cats, e_limit, e_ipp], [e_summary, e_table, e_plot, e_files],
                   api_name="evaluate", concurrency_id="heavy").then(refresh_choices, None, [c_run, e_adapter, e_saved, r_run, r_table], api_name=False)  # fmt: skip
        e_overlay.click(overlay, e_saved, [e_table, e_plot], api_name="overlay_results")

        choices = {"fn": refresh_choices, "inputs": None, "outputs": [c_run, e_adapter, e_saved, r_run, r_table], "api_name": False}  # fmt: skip
        r_refresh.click(list_runs, None, r_table, api_name="list_runs").then(**choices)
        demo.load(**choices)
        tabs.change(**choices)
        r_compare.click(open_in_compare, r_run, [tabs, c_run], api_name=False)
        r_eval.click(open_in_evaluate, r_run, [tabs, e_adapter], api_name=False)
    demo.queue(max_size=64, default_concurrency_limit=1)
    return demo


def results_table(results: list[dict]) -> pd.DataFrame:
    rows = []
    for res in results:
        for cat, value in res.get("scores", {}).items():
            row = {"result": res.get("label") or res.get("model"), "category": cat, "score": value}
            if "facts_only" in res:
                row["facts only"] = res["facts_only"].get(cat)
            rows.append(row)
    return pd.DataFrame(rows)


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
