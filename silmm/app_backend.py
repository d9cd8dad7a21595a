"""The plain functions behind the Gradio app (app.py): inspect, self-improve, compare, list runs (evaluate: app_eval).

`Backend` owns the runs folder (the only place the app writes), a small cache of loaded models (a run's model
at iteration k = the base with the LoRAs of iterations 1..k loaded and merged in order, as the loop does) and
the job manager (silmm/app_jobs.py). Every method takes and returns plain values (PIL images, dicts; the app's
views of them are in silmm/app_views.py); bad user input raises `InputError` with a message that names the value
and the valid options, which the app shows as a `gr.Error`. No Gradio import here; torch enters only through the
adapters.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from silmm import app_jobs, runio
from silmm.adapters import ADAPTERS, load_adapter
from silmm.adapters import is_world as _is_world
from silmm.config import DIVERSITY_MODES, QUESTION_MODES, SCORE_RULES, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR_ENV = "SILMM_RUNS_DIR"
MAX_PROMPT_CHARS = 300
MAX_CANDIDATES = 16
MAX_SEED = 2**31 - 1
LIMITS = {  # form field -> (min, max), inclusive
    "iterations": (1, 10), "per_category": (1, 256), "n": (2, 32), "beta": (1e-4, 10.0), "gamma": (1e-4, 100.0),
    "min_gap": (0.0, 2.0), "compare_prompts": (1, 32), "limit": (1, 500), "images_per_prompt": (1, 8),
}  # fmt: skip
MODE_FOR_KIND = {"discrete": ("nucleus", "none"), "continuous": ("dropdiv", "noise", "none")}
KIND_OF_REAL = {"janus-pro": "discrete", "qwen-image": "continuous"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InputError(ValueError):
    """Bad input from the user; the message says what was wrong and what is accepted."""


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, ROOT / "runs")).expanduser().resolve()


def check_range(name: str, value: float | None, *, integer: bool = True) -> float:
    lo, hi = LIMITS[name]
    if value is None or (integer and float(value) != int(value)) or not lo <= value <= hi:
        raise InputError(f"{name}={value!r} is out of range: use {'an integer' if integer else 'a number'} in [{lo}, {hi}]")  # fmt: skip
    return int(value) if integer else float(value)


def model_kind(name: str) -> str | None:
    """discrete | continuous for world models (from their config.json) and the registered real models."""
    if name in KIND_OF_REAL:
        return KIND_OF_REAL[name]
    path = Path(ADAPTERS[name][2]) if name in ADAPTERS else Path(name)
    try:
        return json.loads((path / "config.json").read_text())["world_kind"]
    except (OSError, KeyError, ValueError):
        return None


def is_world(name: str) -> bool:
    try:
        return _is_world(name)
    except ValueError:
        return False


def available_models(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """World models whose weights are present, plus any model named by the operator (`--model`)."""
    found = [
        n for n in ("world-discrete", "world-continuous") if (Path(ADAPTERS[n][2]) / "config.json").is_file()
    ]
    return list(dict.fromkeys([*extra, *found]))


@dataclass(frozen=True)
class RunForm:
    """The Self-improve form: the run config fields the app exposes (everything else from configs/<model>.yaml)."""

    name: str
    model: str
    iterations: int = 1
    categories: tuple[str, ...] = ("color", "spatial2d")
    per_category: int = 4
    n: int = 4
    beta: float = 0.1
    gamma: float = 1.0
    mode: str = "nucleus"
    rule: str = "prob_diff"
    questions: str = "self"
    min_gap: float = 0.1
    heldout_eval: bool = False
    seed: int = 0


class Backend:
    def __init__(self, model: str = "world-discrete", *, runs_dir: str | Path | None = None,
                 models: list[str] | None = None, device: str | None = None, max_cached: int = 4):  # fmt: skip
        self.runs_dir = Path(runs_dir).expanduser().resolve() if runs_dir else default_runs_dir()
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.models = available_models([model, *(models or [])])
        self.default_model = model
        self.device = device
        self.jobs = app_jobs.JobManager(self.runs_dir)
        self._cache: OrderedDict[tuple, tuple[Any, threading.Lock]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.max_cached = max_cached

    # -- models -----------------------------------------------------------------------------------------------
    def modes_for(self, name: str) -> tuple[str, ...]:
        """The diversity modes that apply to a model (its kind decides); all of them when unknown."""
        return MODE_FOR_KIND.get(model_kind(name) if name else None, DIVERSITY_MODES)

    def check_model(self, name: str) -> str:
        if name not in self.models:
            raise InputError(f"model {name!r} is not available; choose one of {self.models}")
        return name

    def adapter(self, name: str, weights: str = "", run: Path | None = None, upto: int = 0) -> tuple[Any, threading.Lock]:  # fmt: skip
        """The model `name`, with run `run`'s LoRAs of iterations 1..upto merged in; cached, with its lock."""
        key = (name, weights, str(run), upto)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        with self._load_lock:  # one load at a time, so concurrent first requests do not load a model twice
            with self._cache_lock:
                if key in self._cache:
                    return self._cache[key]
            adapter_dir = str(runio.RunLayout(run).adapter(upto)) if upto else None
            adapter = load_adapter(name, weights=weights or None, adapter_dir=adapter_dir, device=self.device)
            if upto:
                adapter.merge_adapter()  # iterations 1..upto folded in, as the loop leaves the model
        with self._cache_lock:
            self._cache[key] = (adapter, threading.Lock())
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
            return self._cache[key]

    # -- paths ------------------------------------------------------------------------------------------------
    def run_root(self, name: str) -> Path:
        """The folder of run `name`, refusing anything outside the runs folder or that is not a run."""
        name = (name or "").strip()
        if not name:
            raise InputError(f"no run selected; runs in {self.runs_dir}: {self.run_names()}")
        path = (self.runs_dir / name).resolve()
        if not path.is_relative_to(self.runs_dir) or path == self.runs_dir:
            raise InputError(f"{name!r} is outside the runs folder {self.runs_dir}: give a run name from {self.run_names()}")  # fmt: skip
        if not path.is_dir():
            raise InputError(f"run {name!r} does not exist in {self.runs_dir}; runs: {self.run_names()}")
        if not (path / "config.yaml").is_file():
            raise InputError(f"{name!r} is not a run folder (no config.yaml); runs: {self.run_names()}")
        return path

    def run_names(self) -> list[str]:
        return sorted(p.parent.name for p in self.runs_dir.glob("*/config.yaml") if not p.parent.name.startswith(("_", ".")))  # fmt: skip

    def iterations_with_adapter(self, run: str) -> list[int]:
        layout = runio.RunLayout(self.run_root(run))
        return sorted(int(p.parent.name.split("_")[1]) for p in layout.root.glob("iter_*/adapter"))

    # -- 1. generate & inspect --------------------------------------------------------------------------------
    def random_prompt(self, model: str, category: str, seed: int) -> str:
        """A prompt the model writes itself; for world models the first of a few that the world can parse."""
        from silmm.world.grammar import ALL_CATEGORIES, ParseError, parse_prompt

        if category not in ALL_CATEGORIES:
            raise InputError(f"category {category!r} is not one of {list(ALL_CATEGORIES)}")
        adapter, lock = self.adapter(self.check_model(model))
        with lock:
            written = adapter.write_prompts(category, 8, seed=int(seed) % MAX_SEED)
        for prompt in written if is_world(model) else []:
            try:
                parse_prompt(prompt)
                return prompt
            except ParseError:
                continue
        return written[0]

    @staticmethod
    def _diversity(model: str, mode: str):
        """The sampling settings of the model's shipped config (DropDiv rate and layers, top-p), with this mode."""
        from silmm.config import SamplingConfig
        from silmm.sampling import diversity_from

        base = ROOT / "configs" / f"{model}.yaml"
        sampling = load_config(base).sampling if base.is_file() else SamplingConfig()
        return diversity_from(replace(sampling, mode=mode))

    def generate(self, model: str, prompt: str, n: int, seed: int, *, mode: str = "", rule: str = "prob_diff",
                 questions: str = "self") -> dict:  # fmt: skip
        """N candidates for a prompt, each judged by the model itself (and by the oracle for world models)."""
        from silmm.feedback import score
        from silmm.sampling import candidate_seed

        self.check_model(model)
        prompt = self.check_prompt(model, prompt)
        n = int(n) if n is not None and float(n) == int(n) and 1 <= n <= MAX_CANDIDATES else None
        if n is None:
            raise InputError(f"number of candidates must be an integer in [1, {MAX_CANDIDATES}]")
        if seed is None or not 0 <= seed <= MAX_SEED:
            raise InputError(f"seed={seed!r} must lie in [0, {MAX_SEED}]")
        kind = model_kind(model)
        modes = MODE_FOR_KIND.get(kind, DIVERSITY_MODES)
        mode = mode or modes[0]
        if mode not in modes:
            raise InputError(f"diversity mode {mode!r} does not apply to the {kind} model {model!r}; valid: {list(modes)}")  # fmt: skip
        if rule not in SCORE_RULES:
            raise InputError(f"score rule {rule!r} is not one of {list(SCORE_RULES)}")
        valid_q = QUESTION_MODES if is_world(model) else tuple(q for q in QUESTION_MODES if q != "gt")
        if questions not in valid_q:
            raise InputError(f"question mode {questions!r} is not one of {list(valid_q)} for {model!r}")
        adapter, lock = self.adapter(model)
        seeds = [candidate_seed(int(seed), 0, 0, k) for k in range(n)]
        note = ""
        with lock:
            qs = self._questions(adapter, model, prompt, questions)
            if not qs:
                note = "the model wrote no usable question for this prompt; asked the whole-prompt question instead"
                qs = self._questions(adapter, model, prompt, "whole")
            samples = adapter.sample([prompt] * n, seeds, self._diversity(model, mode))
            images = [s.image for s in samples]
            p_yes, p_no = adapter.answer_yes_no([im for im in images for _ in qs], qs * n)
        p_yes, p_no = p_yes.reshape(n, len(qs)).tolist(), p_no.reshape(n, len(qs)).tolist()
        cands = [
            {"k": k, "seed": s, "image": im, "questions": qs, "p_yes": y, "p_no": no,
             "score": score(y, no, rule=rule, seed=s), "role": ""}
            for k, (s, im, y, no) in enumerate(zip(seeds, images, p_yes, p_no))
        ]  # fmt: skip
        ranked = sorted(cands, key=lambda c: (-c["score"], c["k"]))
        if n > 1 and ranked[0]["score"] > ranked[-1]["score"]:
            ranked[0]["role"], ranked[-1]["role"] = "chosen", "rejected"
        if is_world(model):
            for c in cands:
                c["oracle"] = oracle_view(prompt, c["image"], qs)
        return {"prompt": prompt, "model": model, "questions": qs, "candidates": cands, "note": note}

    def check_prompt(self, model: str, prompt: str | None) -> str:
        from silmm.world.grammar import ParseError, parse_prompt

        prompt = " ".join((prompt or "").split())
        if not prompt:
            raise InputError("the prompt is empty: type one, or press 'Random prompt'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise InputError(
                f"the prompt has {len(prompt)} characters; at most {MAX_PROMPT_CHARS} are allowed"
            )
        if is_world(model):
            try:
                parse_prompt(prompt)
            except ParseError as err:
                raise InputError(f"the world cannot draw this prompt: {err}") from err
        return prompt

    @staticmethod
    def _questions(adapter: Any, model: str, prompt: str, mode: str) -> list[str]:
        from silmm.config import WHOLE_QUESTION_TEMPLATE
        from silmm.world.questions import decompose

        if mode == "self":
            return [q.strip() for q in adapter.write_questions([prompt])[0] if q.strip()]
        if mode == "gt":
            return [q.text for q in decompose(prompt)]
        return [WHOLE_QUESTION_TEMPLATE.format(prompt=prompt)]

    # -- 2. self-improve --------------------------------------------------------------------------------------
    def start_run(self, form: RunForm) -> app_jobs.Job:
        """Validate the form into a config (written to _jobs/<run>.yaml) and queue `python -m silmm run` on it."""
        if not _NAME.match(form.name or ""):
            raise InputError(f"run name {form.name!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")  # fmt: skip
        if (self.runs_dir / form.name).exists():
            raise InputError(f"run {form.name!r} already exists in {self.runs_dir}: resume it, or choose another name")  # fmt: skip
        self.check_model(form.model)
        for field_name in ("iterations", "per_category", "n"):
            check_range(field_name, getattr(form, field_name))
        for field_name in ("beta", "gamma", "min_gap"):
            check_range(field_name, getattr(form, field_name), integer=False)
        kind = model_kind(form.model)
        if kind and form.mode not in MODE_FOR_KIND[kind]:
            raise InputError(f"diversity mode {form.mode!r} does not apply to the {kind} model {form.model!r}; valid: {list(MODE_FOR_KIND[kind])}")  # fmt: skip
        if form.questions == "gt" and not is_world(form.model):
            raise InputError(f"question mode 'gt' needs the world's ground truth; {form.model!r} has none (use 'self' or 'whole')")  # fmt: skip
        if not form.categories:
            raise InputError("choose at least one prompt category")
        base = ROOT / "configs" / f"{form.model}.yaml"
        if not base.is_file() and kind and is_world(form.model):
            base = ROOT / "configs" / f"world-{kind}.yaml"
        overrides = [
            f"run.name={form.name}", f"run.out_dir={self.runs_dir}", f"run.iterations={int(form.iterations)}",
            f"run.seed={int(form.seed)}", f"run.heldout_eval={str(bool(form.heldout_eval)).lower()}",
            f"model.name={form.model}", f"prompts.categories=[{', '.join(form.categories)}]",
            f"prompts.per_category={int(form.per_category)}", f"sampling.n={int(form.n)}", f"sampling.mode={form.mode}",
            f"dpo.beta={float(form.beta)}", f"dpo.gamma={float(form.gamma)}", f"feedback.rule={form.rule}",
            f"questions.mode={form.questions}", f"pairs.min_gap={float(form.min_gap)}",
        ]  # fmt: skip
        try:
            cfg = load_config(base if base.is_file() else None, overrides)
        except ValueError as err:
            raise InputError(str(err)) from err
        path = self.jobs.dir / f"{form.name}.yaml"
        runio.write_yaml(path, config_to_dict(cfg))
        return self._submit(form.name, app_jobs.command(path, resume=False), resume=False)

    def resume_run(self, run: str, iterations: int | None = None) -> app_jobs.Job:
        """Queue `python -m silmm run runs/<run>/config.yaml --resume` (optionally with more iterations).
        A job stopped before the loop created its folder is started again from the form's config."""
        extra = [f"run.iterations={check_range('iterations', iterations)}"] if iterations else []
        pending = self.jobs.dir / f"{(run or '').strip()}.yaml"
        if (
            _NAME.match((run or "").strip())
            and not (self.runs_dir / run.strip()).exists()
            and pending.is_file()
        ):
            return self._submit(
                run.strip(), app_jobs.command(pending, resume=False, overrides=extra), resume=False
            )
        root = self.run_root(run)
        return self._submit(root.name, app_jobs.command(root / "config.yaml", resume=True, overrides=extra), resume=True)  # fmt: skip

    def _submit(self, run: str, argv: list[str], resume: bool) -> app_jobs.Job:
        try:
            return self.jobs.submit(run, argv, resume=resume)
        except ValueError as err:
            raise InputError(str(err)) from err

    def stop_run(self, run: str | None = None) -> app_jobs.Job:
        job = self.jobs.latest(run or None)
        if job is None or job.state not in app_jobs.ACTIVE:
            raise InputError(f"no queued or running job{f' for run {run!r}' if run else ''} to stop")
        return self.jobs.stop(job.id)

    def job_view(self, run: str | None = None) -> dict:
        """Everything the Self-improve tab shows about the current job (the running one, else the newest)."""
        job = self.jobs.latest(run or None)
        queue = [{"run": j.run, "state": j.state, "position": i} for i, j in enumerate(self.jobs.queue())]
        if job is None:
            return {"job": None, "queue": queue, "log": "", "progress": None, "summary": []}
        log = app_jobs.read_log(self.jobs.log_path(job))
        root = self.runs_dir / job.run
        summary = runio.read_json(root / "summary.json") if (root / "summary.json").is_file() else []
        progress = None
        if (root / "config.yaml").is_file():
            iterations = load_config(root / "config.yaml").run.iterations
            if job.resume and "run.iterations=" in " ".join(job.argv):
                iterations = int(" ".join(job.argv).split("run.iterations=")[1].split()[0])
            progress = app_jobs.run_progress(root, iterations, log) | {"iterations": iterations}
        return {"job": job, "position": self.jobs.position(job), "queue": queue, "log": log,
                "progress": progress, "summary": summary}  # fmt: skip

    # -- 3. compare -------------------------------------------------------------------------------------------
    def compare(self, run: str, iteration: int, *, category: str = "all", sort: str = "gain", limit: int = 8) -> dict:  # fmt: skip
        """The iteration's prompts with the same seeds, drawn by the model before (k-1) and after (k) iteration k."""
        from silmm.feedback import score
        from silmm.sampling import candidate_seed, diversity_from

        root = self.run_root(run)
        done = self.iterations_with_adapter(run)
        if iteration not in done:
            raise InputError(f"iteration {iteration!r} of run {run!r} has no trained adapter; iterations with one: {done}")  # fmt: skip
        if sort not in ("gain", "drop", "prompt"):
            raise InputError(f"sort {sort!r} is not one of ['gain', 'drop', 'prompt']")
        limit = check_range("compare_prompts", limit)
        cfg = load_config(root / "config.yaml")
        layout = runio.RunLayout(root)
        rows = [dict(r, prompt_index=i) for i, r in enumerate(r for r in runio.read_jsonl(layout.prompts(iteration)) if r["kept"])]  # fmt: skip
        cats = sorted({r["category"] for r in rows})
        if category not in ("all", *cats):
            raise InputError(f"category {category!r} is not in this iteration; choose 'all' or one of {cats}")
        rows = [r for r in rows if category in ("all", r["category"])][:limit]
        seeds = [candidate_seed(cfg.run.seed, iteration, r["prompt_index"], 0) for r in rows]
        prompts = [r["prompt"] for r in rows]
        qs = [r["questions"] for r in rows]
        sides = {}
        for side, upto in (("before", iteration - 1), ("after", iteration)):
            adapter, lock = self.adapter(cfg.model.name, cfg.model.weights, root, upto)
            with lock:
                images = [s.image for s in adapter.sample(prompts, seeds, diversity_from(cfg.sampling))]
                flat_i = [im for im, q in zip(images, qs) for _ in q]
                yes, no = adapter.answer_yes_no(flat_i, [x for q in qs for x in q])
            yes, no, pos, per = yes.tolist(), no.tolist(), 0, []
            for im, q, s in zip(images, qs, seeds):
                y, n_ = yes[pos : pos + len(q)], no[pos : pos + len(q)]
                pos += len(q)
                per.append({"image": im, "p_yes": y, "p_no": n_, "score": score(y, n_, rule=cfg.feedback.rule, seed=s)})  # fmt: skip
            sides[side] = per
        world = is_world(cfg.model.name)
        items = []
        for r, s, b, a in zip(rows, seeds, sides["before"], sides["after"]):
            item = {"prompt": r["prompt"], "category": r["category"], "seed": s, "questions": r["questions"],
                    "before": b, "after": a, "gain": a["score"] - b["score"]}  # fmt: skip
            if world:
                b["oracle"] = oracle_view(r["prompt"], b["image"], r["questions"])
                a["oracle"] = oracle_view(r["prompt"], a["image"], r["questions"])
            items.append(item)
        if sort != "prompt":
            items.sort(key=lambda x: -x["gain"] if sort == "gain" else x["gain"])
        return {"run": run, "iteration": iteration, "categories": cats, "items": items}

    # -- 5. runs ----------------------------------------------------------------------------------------------
    def list_runs(self) -> list[dict]:
        active = self.jobs.active_runs()
        rows = []
        for name in self.run_names():
            root = self.runs_dir / name
            cfg = load_config(root / "config.yaml")
            summary = runio.read_json(root / "summary.json") if (root / "summary.json").is_file() else []
            last = summary[-1] if summary else {}
            done = max((m["iteration"] for m in summary if "stopped" not in m), default=0)
            state = active.get(name) or ("stopped early" if "stopped" in last else "complete" if done >= cfg.run.iterations else "incomplete")  # fmt: skip
            held = [m["eval"]["overall"] for m in summary if m.get("eval")]
            rows.append({
                "run": name, "model": cfg.model.name, "iterations": f"{done}/{cfg.run.iterations}", "state": state,
                "held-out (base -> last)": f"{held[0]:.3f} -> {held[-1]:.3f}" if held else "",
                "judge agreement": _fmt(last.get("judge_agreement", {}).get("overall")),
                "reward margin": _fmt(last.get("train", {}).get("reward_margin")),
                "modified": time.strftime("%Y-%m-%d %H:%M", time.localtime(root.stat().st_mtime)),
            })  # fmt: skip
        return rows


def oracle_view(prompt: str, image: Any, questions: list[str]) -> dict:
    """The world oracle on one image: the prompt's verdict and the true answer to each question (None: unreadable)."""
    from silmm.world.grammar import ParseError
    from silmm.world.oracle import SceneView, judge_prompt
    from silmm.world.questions import answer

    v = judge_prompt(prompt, image)
    view = SceneView.from_image(image)
    truth = []
    for q in questions:
        try:
            truth.append(answer(q, view))
        except ParseError:
            truth.append(None)
    known = [t for t in truth if t is not None]
    return {"strict": v.strict, "facts_only": v.facts_only, "n_objects": v.n_objects, "answers": truth,
            "share_true": sum(known) / len(known) if known else None}  # fmt: skip


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"
