"""Run folders and atomic writes, so that a run killed at any moment can be resumed.

Every file is written to a temporary name in the same folder and renamed into place (`os.replace` is atomic
on POSIX), so a reader sees either the old file, the new one, or none, never half a file. Folders (a LoRA
adapter) are written into a temporary folder that is renamed when complete. `RunLayout` names every path of
`runs/<name>/`; the loop decides what a finished stage is by which of these files exist.
`Processes` is what several processes sharing one run (`accelerate launch`) need: which batches are whose,
gathering the results back in order, the main process's view of which files exist, and a barrier; only the
main process writes run files (each process saves the PNGs it drew).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def _tmp_path(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def write_yaml(path: str | Path, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line]


def save_png(path: str | Path, image) -> None:
    """Save a PIL image as PNG (lossless, so the judge sees the same pixels after a resume)."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_tensors(path: str | Path, tensors: dict) -> None:
    """safetensors file of CPU tensors, written atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path` (any old folder is removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder: runs/<name>/{config.yaml, summary.json, iter_<k>/...}."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def iter_dir(self, k: int) -> Path:
        return self.root / f"iter_{k}"

    def prompts(self, k: int) -> Path:
        return self.iter_dir(k) / "prompts.jsonl"

    def samples(self, k: int) -> Path:
        return self.iter_dir(k) / "samples.jsonl"

    def sample_tensors(self, k: int) -> Path:
        return self.iter_dir(k) / "samples.safetensors"

    def images(self, k: int) -> Path:
        return self.iter_dir(k) / "images"

    def candidates(self, k: int) -> Path:
        return self.iter_dir(k) / "candidates.jsonl"

    def pairs(self, k: int) -> Path:
        return self.iter_dir(k) / "pairs.jsonl"

    def pair_tensors(self, k: int) -> Path:
        return self.iter_dir(k) / "pairs.safetensors"

    def adapter(self, k: int) -> Path:
        return self.iter_dir(k) / "adapter"

    def timings(self, k: int) -> Path:
        return self.iter_dir(k) / "timings.json"

    def metrics(self, k: int) -> Path:
        return self.iter_dir(k) / "metrics.json"


@dataclass(frozen=True)
class Processes:
    """The processes sharing one run: process `rank` of `world` (rank 0 is the main process).

    Work is split by whole batches (`mine`: every `world`-th batch), so each batch holds the same items as in
    a single-process run and a batched model gives the same outputs; `gather` is the inverse of `mine`.
    """

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list) -> list:
        return items[self.rank :: self.world]

    def gather(self, mine: list) -> list:
        """Every process's `mine(items)` results, back in the order of `items`, on every process."""
        if self.world == 1:
            return list(mine)
        from accelerate.utils import gather_object

        parts = gather_object([list(mine)])  # one list per process
        out: list = [None] * sum(len(part) for part in parts)
        for rank, part in enumerate(parts):
            out[rank :: self.world] = part
        return out

    def main_says(self, value: Any) -> Any:
        """The main process's `value` on every process (whether a stage's file exists: one decision for all)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def wait(self) -> None:
        """Barrier: after the main process wrote a file, before the others read it."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()


ONE_PROCESS = Processes()
