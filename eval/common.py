"""Shared plumbing for the benchmark evaluators: data files, image folders, judges, caches and result files.

- Official data files are fetched from raw.githubusercontent.com at pinned commits (or read from a local copy),
  checked against their git blob hashes and cached (default ~/.cache/silmm, env SILMM_CACHE).
- Image folders are validated completely (missing, unexpected, unreadable files) before any scoring starts.
- Judge weights load by hub id or local folder; a missing one raises one error that says how to provide it.
- Per-image scores are appended to a jsonl cache keyed by a signature of the scoring settings, so an
  interrupted run resumes where it stopped. Results: results.json, per_image.jsonl, results.csv, results.html/png.
- Under `accelerate launch` (or torchrun) each process takes batches rank, rank+world, ...
  (`silmm.runio.Processes`) and writes its own cache file; after a barrier the caches are read together and the
  main process writes the results.
  Whole batches are dealt out, so every batch is the one a single process would score: same numbers.
Nothing here imports torch or a model; importing this module touches no network.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from silmm.runio import ONE_PROCESS, Processes

if TYPE_CHECKING:
    from PIL import Image

GenerateFn = Callable[[list[str], list[int]], list["Image.Image"]]
T = TypeVar("T")

DEFAULT_CACHE_DIR = Path(os.environ.get("SILMM_CACHE", "~/.cache/silmm")).expanduser()
MAX_LISTED = 10  # names shown per problem kind in an error message


class EvalInputError(ValueError):
    """Bad user input (image folder, CSV, category, prompt file); raised before any scoring starts."""


class JudgeUnavailableError(RuntimeError):
    """A judge model (VQA, CLIP, detector, depth) could not be loaded."""


def git_blob_sha1(data: bytes) -> str:
    """`git hash-object` of a byte string (sha1 over 'blob <len>\\0' + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class RemoteFile:
    """One official data file: `relpath` inside its source folder, download `url`, expected git `blob`."""

    relpath: str
    url: str
    blob: str


def fetch_verified(
    remote: RemoteFile, *, local_dir: Path | None, cache_dir: Path, verify: bool = True
) -> Path:
    """Path of a verified copy of `remote`: from `local_dir` if given, else the cache, else downloaded."""
    if local_dir is not None:
        path = Path(local_dir) / remote.relpath
        if not path.is_file():
            raise EvalInputError(
                f"{path} does not exist (expected the official file {remote.relpath} in {local_dir})"
            )
        _check_blob(path.read_bytes(), remote, str(path), verify)
        return path
    path = Path(cache_dir) / remote.relpath
    if path.is_file() and (not verify or git_blob_sha1(path.read_bytes()) == remote.blob):
        return path
    try:
        with urllib.request.urlopen(remote.url, timeout=60) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as err:
        raise EvalInputError(
            f"could not download {remote.url} ({err}). Download it by hand and pass its folder as a local copy "
            f"(--prompts-dir / --csv), or put it at {path}."
        ) from err
    _check_blob(data, remote, remote.url, verify)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(path, data)
    return path


def _check_blob(data: bytes, remote: RemoteFile, where: str, verify: bool) -> None:
    if verify and (got := git_blob_sha1(data)) != remote.blob:
        raise EvalInputError(
            f"{where} is not the official {remote.relpath}: git blob {got}, expected {remote.blob}. "
            "Re-download it from the pinned commit (see docs/EVAL.md)."
        )


def read_prompt_lines(path: Path) -> list[str]:
    """Non-empty stripped lines; handles CRLF files and a missing final newline (several official files)."""
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _listing(kind: str, names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return f"  {kind} ({len(names)}): {shown}{more}"


def validate_image_folder(
    folder: Path, expected: list[str], *, allowed: Iterable[str] = (), rule: str = ""
) -> dict[str, Path]:
    """Check that `folder` holds every `expected` file, nothing outside `expected | allowed`, all readable.

    Returns {name: path} for the expected names. Raises one EvalInputError listing every problem.
    """
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise EvalInputError(f"image folder {folder} does not exist")
    present = {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
    known = set(expected) | set(allowed)
    missing = [n for n in expected if n not in present]
    unexpected = sorted(n for n in present if n not in known)
    unreadable = []
    for name in expected:
        if name in present:
            try:
                with Image.open(present[name]) as im:
                    im.verify()
            except Exception as err:  # PIL raises many types for corrupt files
                unreadable.append(f"{name} ({type(err).__name__})")
    if missing or unexpected or unreadable:
        lines = [f"image folder {folder} does not match the benchmark:"]
        lines += [
            _listing(k, v)
            for k, v in (("missing", missing), ("unexpected", unexpected), ("unreadable", unreadable))
            if v
        ]
        if rule:
            lines.append(f"  naming rule: {rule}")
        raise EvalInputError("\n".join(lines))
    return {n: present[n] for n in expected}


def load_pretrained(load: Callable[[str], T], name_or_path: str, *, role: str, option: str) -> T:
    """Call `load(name_or_path)`; turn any hub/file failure into one JudgeUnavailableError that teaches."""
    try:
        return load(name_or_path)
    except (OSError, ValueError, KeyError) as err:  # hub offline, repo missing, folder without weights
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JudgeUnavailableError(
            f"could not load the {role} {name_or_path!r}: {first}\n"
            f"Provide it in one of two ways: pass a local folder with `{option} /path/to/folder` (written by "
            f"save_pretrained, or `hf download <repo> --local-dir /path/to/folder` on a machine with internet), "
            f"or fill the Hugging Face cache with that hub id and run with HF_HUB_OFFLINE=1."
        ) from err


def batched(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def current_shard(device: str | None) -> tuple[Processes, str | None]:
    """(this process's `silmm.runio.Processes`, its device) under `accelerate launch` / torchrun; (one process,
    device) otherwise.

    Several processes on a machine without CUDA (or with `--device cpu`) meet over gloo; with CUDA each
    process takes the GPU of its local rank.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ONE_PROCESS, device
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    own = "cpu" if state.device.type == "cpu" else str(state.device)
    return Processes(state.process_index, state.num_processes), own if device in (None, "cuda") else device


class ScoreCache:
    """Append-only jsonl of per-image records; entries written under other settings are ignored on load.

    With several processes, process r appends to `<stem>.rank<r>.jsonl` beside `path`; `load` reads them all.
    """

    def __init__(self, path: Path, signature: dict[str, Any], shard: Processes = ONE_PROCESS):
        self.path = Path(path)
        self.sig = hashlib.sha1(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:16]
        own = f"{self.path.stem}.rank{shard.rank}{self.path.suffix}"
        self.write_path = self.path if shard.world == 1 else self.path.with_name(own)

    def load(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        for path in [self.path, *sorted(self.path.parent.glob(f"{self.path.stem}.rank*{self.path.suffix}"))]:
            if path.is_file():
                records.update(self._read(path))
        return records

    def _read(self, path: Path) -> dict[str, dict]:
        records = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interrupted write
                continue
            if rec.get("sig") == self.sig:
                records[rec["key"]] = rec
        return records

    def append(self, records: list[dict]) -> None:
        self.write_path.parent.mkdir(parents=True, exist_ok=True)
        with self.write_path.open("a", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps({**rec, "sig": self.sig}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, default=str) + "\n").encode())


def write_results(out_dir: Path, summary: dict, records: list[dict]) -> dict:
    """Write results.json, per_image.jsonl, results.csv and the figure; returns the summary with file names."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out_dir / "per_image.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    with (out_dir / "results.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["benchmark", "model", "category", "score", "complete"])
        for category, value in summary["scores"].items():
            writer.writerow([summary["benchmark"], summary["model"], category, value, summary["complete"]])
        writer.writerow(
            [summary["benchmark"], summary["model"], "overall", summary["overall"], summary["complete"]]
        )
    summary = {**summary, "figure": write_figure(out_dir, summary)}
    # the result files only: score caches (one per process when sharded) are not results
    summary["files"] = ["per_image.jsonl", "results.csv", "results.html", "results.json", "results.png"]
    write_json(out_dir / "results.json", summary)
    return summary


def write_figure(out_dir: Path, summary: dict) -> dict:
    """Plotly bar chart of the category scores as HTML, and as PNG through kaleido or, failing that, Pillow."""
    import plotly.graph_objects as go

    names, values = list(summary["scores"]), [float(v) for v in summary["scores"].values()]
    title = f"{summary['benchmark']} - {summary['model']}" + ("" if summary["complete"] else " (INCOMPLETE)")
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.4g}" for v in values], textposition="outside"))
    fig.update_layout(title=title, yaxis_title="score", template="plotly_white")
    fig.write_html(out_dir / "results.html", include_plotlyjs="cdn")
    try:
        fig.write_image(out_dir / "results.png", width=900, height=500)
        renderer = "kaleido"
    except Exception as err:  # kaleido missing, or no browser for it
        _bar_chart_png(out_dir / "results.png", title, names, values)
        renderer = f"pillow (plotly export unavailable: {type(err).__name__})"
    return {"html": "results.html", "png": "results.png", "png_renderer": renderer}


def _bar_chart_png(path: Path, title: str, names: list[str], values: list[float]) -> None:
    from PIL import Image, ImageDraw

    width, height, pad, base = 900, 500, 60, 420
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((pad, 15), title, fill="black")
    top = max([abs(v) for v in values] + [1e-9])
    slot = (width - 2 * pad) / max(len(values), 1)
    draw.line([(pad, base), (width - pad, base)], fill="black")
    for i, (name, value) in enumerate(zip(names, values)):
        x0 = pad + i * slot + slot * 0.15
        bar = (base - 60) * value / top
        draw.rectangle([x0, base - max(bar, 0), x0 + slot * 0.7, base], fill=(99, 110, 250))
        draw.text((x0, base - max(bar, 0) - 14), f"{value:.4g}", fill="black")
        draw.text((x0, base + 8 + 12 * (i % 2)), name[:18], fill="black")
    img.save(path)


def resolve_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep freed blocks for reuse: mmap threshold 32 MiB, trim threshold 128 MiB (the same as
    `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728`). A batched CPU call allocates and frees
    several MiB of activations; with glibc's defaults the heap is trimmed after each call and the next call pays
    fresh page faults (~320 per image for batched DPT), which one-image calls never do. Called by the CLIs
    (`python -m eval`, `python -m eval.bench`), never on import: it changes the whole process. Returns whether it
    applied (glibc on Linux); elsewhere nothing changes."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 128 << 20))
