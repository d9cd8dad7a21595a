"""Command line: `python -m silmm run CONFIG.yaml [section.key=value ...] [--resume]`.

The config (defaults <- YAML <- overrides) and the run folder are checked before the model is loaded; the
model comes from `silmm.adapters.load_adapter(model.name, ...)`, its world measurement (held-out evaluation
and oracle; None for real models) from `silmm.adapters.measurement_for(model.name)`, and an external judge,
if `feedback.judge` names one, from `silmm.adapters.load_judge(spec)`. Progress bars go to stderr; one summary
line per iteration to stdout.
Several processes: `accelerate launch [--multi_gpu] --num_processes K -m silmm run CONFIG ...` (README,
"Several processes"); the run's Accelerator is made before the model is loaded, so that with `model.device=auto`
each process loads the model onto its own device.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from silmm.config import Config, load_config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m silmm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run or resume the SILMM loop")
    run.add_argument("config", help="YAML config file, e.g. configs/world-discrete.yaml")
    run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. dpo.beta=0.2 run.iterations=1")
    run.add_argument(
        "--resume", action="store_true", help="continue runs/<name> from its last finished stage"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def load_model(cfg: Config) -> tuple[Any, Any, Any]:
    """(adapter, measure hook or None, external judge or None) for the config; imports lazily."""
    from accelerate import PartialState

    from silmm import adapters

    device = None if cfg.model.device == "auto" else cfg.model.device
    if device is None and PartialState().num_processes > 1:  # state made by main(): this process's device
        device = str(PartialState().device)
    adapter = adapters.load_adapter(cfg.model.name, weights=cfg.model.weights or None, device=device)
    measure = adapters.measurement_for(cfg.model.name, images_per_prompt=cfg.run.heldout_images)
    judge = adapters.load_judge(cfg.feedback.judge, device=device) if cfg.feedback.judge else None
    return adapter, measure, judge


def main(
    argv: list[str] | None = None, *, load: Callable[[Config], tuple[Any, Any, Any]] = load_model
) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        _precheck(cfg, resume=args.resume)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from silmm import loop

    accelerator = loop.make_accelerator(cfg)
    adapter, measure, judge = load(cfg)
    try:
        loop.run(
            cfg, adapter, resume=args.resume, measure=measure, judge=judge,
            progress=not args.no_progress, accelerator=accelerator,
        )  # fmt: skip
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _precheck(cfg: Config, *, resume: bool) -> None:
    """What can be checked before loading weights: the prompt file, the tracker package, the run folder."""
    import importlib.util

    from silmm import adapters
    from silmm.prompts import read_prompt_file

    if cfg.prompts.file:
        read_prompt_file(cfg.prompts.file)
    if cfg.feedback.judge == "oracle" and not adapters.is_world(cfg.model.name):
        raise ValueError(f"feedback.judge='oracle' needs a world model (the oracle reads world images); model.name={cfg.model.name!r} is not one")  # fmt: skip
    if cfg.run.log_with != "none" and importlib.util.find_spec(cfg.run.log_with) is None:
        raise ValueError(f"run.log_with={cfg.run.log_with!r} but the package {cfg.run.log_with!r} is not installed (valid: 'none' or install it)")  # fmt: skip
    root = Path(cfg.run.out_dir) / cfg.run.name
    if root.exists() and not resume:
        raise FileExistsError(f"run folder {root} already exists: pass --resume to continue it, or choose another run.name")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
