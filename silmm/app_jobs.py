"""Background training jobs for the app: one `python -m silmm run` subprocess at a time, the rest queued.

A job is a config file plus a command line; its record (`<runs_dir>/_jobs/<id>.json`) and log (`<id>.log`) live
on disk, so a browser reload (or a second browser) sees the same jobs, and a server restart finds them again
(a job whose process is gone is marked "interrupted"; the loop's `--resume` continues it). Subprocesses, not
threads: the loop runs with one torch thread in its own process group, is stopped with SIGTERM to the group,
and can never block or crash the web server. Progress is read from the run folder (which stage files exist) and
the last tqdm percentage in the log. No Gradio and no torch here.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from silmm import runio

ROOT = Path(__file__).resolve().parents[1]
JOBS_DIR = "_jobs"
ACTIVE = ("queued", "running")
# stage name -> the file (relative to iter_<k>/) whose existence means the stage is finished, in loop order
STAGE_FILES = (
    ("prompts", "prompts.jsonl"),
    ("sampling", "samples.jsonl"),
    ("feedback", "candidates.jsonl"),
    ("pairs", "pairs.jsonl"),
    ("train", "adapter"),
    ("measure", "metrics.json"),
)
_PERCENT = re.compile(r"(\d+)%\|")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Job:
    id: str
    run: str  # run folder name under runs_dir
    argv: list[str]
    state: str = "queued"  # queued | running | done | failed | stopped | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    returncode: int | None = None
    pid: int | None = None
    resume: bool = False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


class JobManager:
    """Runs queued jobs one at a time in a daemon thread; every method is safe to call from any thread."""

    def __init__(self, runs_dir: str | Path, *, poll_s: float = 0.5):
        self.runs_dir = Path(runs_dir).resolve()
        self.dir = self.runs_dir / JOBS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.poll_s = poll_s
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._procs: dict[str, subprocess.Popen] = {}
        self.jobs: dict[str, Job] = {}
        for path in sorted(self.dir.glob("*.json")):
            job = Job(**runio.read_json(path))
            if job.state in ACTIVE and not (job.state == "running" and _alive(job.pid)):
                job.state, job.ended = "interrupted", job.ended or time.time()
                self._save(job)
            self.jobs[job.id] = job
        threading.Thread(target=self._worker, name="silmm-jobs", daemon=True).start()

    # -- queue ------------------------------------------------------------------------------------------------
    def submit(self, run: str, argv: list[str], *, resume: bool = False) -> Job:
        with self._lock:
            busy = [j for j in self.jobs.values() if j.run == run and j.state in ACTIVE]
            if busy:
                raise ValueError(
                    f"run {run!r} already has a {busy[0].state} job ({busy[0].id}); stop it first"
                )
            job = Job(
                id=time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], run=run, argv=argv, resume=resume
            )
            self.jobs[job.id] = job
            self._save(job)
        self._wake.set()
        return job

    def stop(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.state == "queued":
                job.state, job.ended = "stopped", time.time()
            elif job.state == "running":
                job.state = "stopped"  # the worker records the end when the process is gone
                try:
                    os.killpg(job.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self._save(job)
            return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self.jobs:
                raise ValueError(f"no job {job_id!r}; jobs: {sorted(self.jobs)[-10:]}")
            return self.jobs[job_id]

    def queue(self) -> list[Job]:
        """Running job first, then queued ones in submission order (index = position in the queue)."""
        with self._lock:
            active = [j for j in self.jobs.values() if j.state in ACTIVE]
        return sorted(active, key=lambda j: (j.state != "running", j.created))

    def position(self, job: Job) -> int | None:
        """0 = running, k = k-th in the queue, None = not active."""
        ids = [j.id for j in self.queue()]
        return ids.index(job.id) if job.id in ids else None

    def latest(self, run: str | None = None) -> Job | None:
        """The running job, else the newest job (of `run`, if given)."""
        with self._lock:
            jobs = [j for j in self.jobs.values() if run is None or j.run == run]
        running = [j for j in jobs if j.state == "running"]
        return running[0] if running else max(jobs, key=lambda j: j.created, default=None)

    def active_runs(self) -> dict[str, str]:
        return {j.run: j.state for j in self.queue()}

    def log_path(self, job: Job) -> Path:
        return self.dir / f"{job.id}.log"

    def wait(self, job_id: str, timeout: float) -> Job:
        """Block until the job is no longer queued or running (tests, scripts)."""
        deadline = time.time() + timeout
        while self.get(job_id).state in ACTIVE:
            if time.time() > deadline:
                raise TimeoutError(f"job {job_id} still {self.get(job_id).state} after {timeout} s")
            time.sleep(0.2)
        return self.get(job_id)

    # -- worker -----------------------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        runio.write_json(self.dir / f"{job.id}.json", asdict(job))

    def _next(self) -> Job | None:
        with self._lock:
            queued = [j for j in self.jobs.values() if j.state == "queued"]
            return min(queued, key=lambda j: j.created, default=None)

    def _worker(self) -> None:
        while True:
            adopted = [j for j in self.jobs.values() if j.state == "running" and j.id not in self._procs]
            if adopted:  # left running by an earlier server: wait for it before starting another
                while _alive(adopted[0].pid):
                    time.sleep(self.poll_s)
                with self._lock:
                    adopted[0].state, adopted[0].ended = "interrupted", time.time()
                    self._save(adopted[0])
                continue
            job = self._next()
            if job is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        with self._lock:
            if job.state != "queued":  # stopped between _next and here
                return
            log = open(self.log_path(job), "ab")  # noqa: SIM115  (closed below, after the process ends)
            proc = subprocess.Popen(
                job.argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            self._procs[job.id] = proc
            job.state, job.started, job.pid = "running", time.time(), proc.pid
            self._save(job)
        rc = proc.wait()
        log.close()
        with self._lock:
            del self._procs[job.id]
            job.returncode, job.ended = rc, time.time()
            if job.state == "running":
                job.state = "done" if rc == 0 else "failed"
            self._save(job)


def read_log(path: Path, max_lines: int = 80, max_bytes: int = 64_000) -> str:
    """The end of a log, with each tqdm line reduced to its last refresh (carriage returns)."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - max_bytes))
        text = f.read().decode("utf-8", errors="replace")
    text = _ANSI.sub("", text)
    lines = [line.rstrip("\r").split("\r")[-1] for line in text.split("\n")]
    return "\n".join([line for line in lines if line.strip()][-max_lines:])


def run_progress(root: Path, iterations: int, log_text: str = "") -> dict:
    """Where a run stands: current iteration, its stage, the fraction of that stage and of the whole run."""
    layout = runio.RunLayout(root)
    if not layout.metrics(0).exists():
        return {"iteration": 0, "stage": "base evaluation", "stage_fraction": _tail_fraction(log_text), "fraction": 0.0, "done": []}  # fmt: skip
    for it in range(1, iterations + 1):
        if layout.metrics(it).exists():
            if "stopped" in runio.read_json(layout.metrics(it)):
                return {"iteration": it, "stage": "stopped", "stage_fraction": 1.0, "fraction": 1.0, "done": [s for s, _ in STAGE_FILES]}  # fmt: skip
            continue
        done = [s for s, f in STAGE_FILES if (layout.iter_dir(it) / f).exists()]
        stage = next((s for s, f in STAGE_FILES if not (layout.iter_dir(it) / f).exists()), "measure")
        frac = _tail_fraction(log_text)
        total = ((it - 1) + (len(done) + frac) / len(STAGE_FILES)) / iterations
        return {"iteration": it, "stage": stage, "stage_fraction": frac, "fraction": total, "done": done}
    return {"iteration": iterations, "stage": "finished", "stage_fraction": 1.0, "fraction": 1.0, "done": [s for s, _ in STAGE_FILES]}  # fmt: skip


def _tail_fraction(log_text: str) -> float:
    lines = log_text.strip().split("\n")
    found = _PERCENT.findall(lines[-1]) if lines else []
    return int(found[-1]) / 100 if found else 0.0


def command(config_path: Path, *, resume: bool, overrides: list[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "silmm", "run", str(config_path), *overrides]
    return argv + (["--resume"] if resume else [])
