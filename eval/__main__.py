"""One CLI for every benchmark: `python -m eval {world,t2i-compbench,dpg-bench} ...`.

    python -m eval t2i-compbench --model janus-pro --adapter runs/x/iter3/adapter --out results/t2i
    python -m eval t2i-compbench --images my_images/ --categories color,spatial --judge /models/blip-vqa
    python -m eval dpg-bench --images grids/ --csv dpg_bench.csv --official-quirks

`--model` samples through `silmm.adapters.load_adapter` (the only place eval touches an adapter: the benchmark
modules see a plain `generate_fn(prompts, seeds) -> images`); `--images` scores a folder another tool produced.
Judges load by hub id or local folder. Bad input fails with one message before scoring; exit status 2.
Under `accelerate launch --num_processes N -m eval ...` (or torchrun) the work is sharded across the processes
and the main process writes the same result files as a single-process run; `world` runs on the main process.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.common import (
    DEFAULT_CACHE_DIR,
    EvalInputError,
    JudgeUnavailableError,
    current_shard,
    keep_freed_memory,
    resolve_device,
)

DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_DEPTH = "Intel/dpt-hybrid-midas"


def _source_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="adapter name (silmm.adapters.ADAPTERS) to generate the images with")
    src.add_argument("--images", type=Path, help="score this folder of existing images instead")
    p.add_argument("--adapter", type=Path, help="LoRA folder for --model (save_adapter output)")
    p.add_argument("--limit", type=int, help="only the first N prompts (per category); marked incomplete")
    p.add_argument("--out", type=Path, help="output folder (default: eval_results/<benchmark>/<model>)")
    p.add_argument(
        "--prompts-dir", type=Path, help="local copy of the official prompt files (else download+cache)"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="download cache (default %(default)s)"
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per generation / scoring batch")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def build_parser(with_world: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    world = sub.add_parser("world", help="the built-in compositional world (exact oracle)")
    if with_world:
        from eval import world as world_bench  # imported only when asked for: the lead's module

        world_bench.add_arguments(world)

    t2i = sub.add_parser("t2i-compbench", help="T2I-CompBench++ (8 categories, val splits, 10 images/prompt)")
    _source_args(t2i)
    t2i.add_argument(
        "--categories", default=",".join(_t2i().CATEGORIES), help="comma-separated (default: all 8)"
    )
    t2i.add_argument(
        "--judge", default=DEFAULT_BLIP, help="BLIP-VQA judge, hub id or folder (default %(default)s)"
    )
    t2i.add_argument("--clip", default=DEFAULT_CLIP, help="CLIP, hub id or folder (default %(default)s)")
    t2i.add_argument("--detector", default=DEFAULT_DETECTOR,
                     help="OWLv2 or Grounding DINO (by model_type), hub id or folder (default %(default)s)")  # fmt: skip
    t2i.add_argument(
        "--depth", default=DEFAULT_DEPTH, help="DPT depth, hub id or folder (default %(default)s)"
    )
    t2i.add_argument(
        "--mode", choices=["official", "fixed"], default="official", help="keep or remove official quirks"
    )
    t2i.add_argument("--vocab-gate", action=argparse.BooleanOptionalAction, default=None,
                     help="UniDet vocabulary gate (default: on in official mode, off in fixed mode)")  # fmt: skip
    t2i.add_argument("--det-threshold", type=float,
                     help="box score threshold (default: OWLv2 0.1, Grounding DINO 0.35 as officially)")  # fmt: skip
    t2i.add_argument(
        "--text-threshold", type=float, default=0.25, help="Grounding DINO phrase threshold (official 0.25)"
    )
    t2i.add_argument("--color-val", choices=["current", "legacy"], default="current")
    t2i.add_argument("--images-per-prompt", type=int, default=10)
    t2i.add_argument("--blip-size", type=int, default=480, help="BLIP input side (official 480)")
    t2i.add_argument("--depth-size", type=int, default=480, help="DPT input side (official 480)")

    dpg = sub.add_parser("dpg-bench", help="DPG-Bench (1,065 prompts, 2x2 grids, DSG questions)")
    _source_args(dpg)
    dpg.add_argument("--judge", default=DEFAULT_BLIP,
                     help="yes/no judge, BLIP-VQA or Qwen2.5-VL (by model_type), hub id or folder (default %(default)s)")  # fmt: skip
    dpg.add_argument("--csv", type=Path, help="local dpg_bench.csv (else download+cache, verified)")
    dpg.add_argument(
        "--no-verify-csv", action="store_true", help="accept a CSV whose git blob differs (recorded)"
    )
    dpg.add_argument(
        "--official-quirks", action="store_true", help="reproduce the official script's two bugs"
    )
    return parser


def _t2i():
    from eval import t2i_compbench

    return t2i_compbench


def make_generate_fn(name: str, adapter_dir: Path | None, device: str):
    """generate_fn(prompts, seeds) -> images over `silmm.adapters.load_adapter(name)`."""
    from silmm.adapters import load_adapter
    from silmm.adapters.base import Diversity

    adapter = load_adapter(name, adapter_dir=str(adapter_dir) if adapter_dir else None, device=device)
    # discrete models need sampling for seeds to matter; continuous ones draw their noise from the seed
    diversity = Diversity(mode="nucleus") if adapter.kind == "discrete" else Diversity(mode="none")

    def generate_fn(prompts: list[str], seeds: list[int]) -> list:
        return [s.image for s in adapter.sample(prompts, seeds, diversity)]

    return generate_fn


def _common(args, benchmark: str) -> tuple:
    label = args.model + (f"+{args.adapter.name}" if args.adapter else "") if args.model else args.images.name
    out = args.out = args.out or Path("eval_results") / benchmark / label
    shard, device = current_shard(args.device)
    device = resolve_device(device)
    generate_fn = make_generate_fn(args.model, args.adapter, device) if args.model else None
    return label, out, generate_fn, device, shard


def run_t2i(args) -> dict:
    t2i = _t2i()
    cats = tuple(c.strip() for c in args.categories.split(",") if c.strip())
    cfg = t2i.T2IConfig(categories=cats, limit=args.limit, images_per_prompt=args.images_per_prompt, mode=args.mode,
                        vocab_gate=args.vocab_gate, det_threshold=args.det_threshold, text_threshold=args.text_threshold,
                        color_val=args.color_val, batch_size=args.batch_size, blip_image_size=args.blip_size,
                        depth_input_size=args.depth_size, prompts_dir=args.prompts_dir, cache_dir=args.cache_dir)  # fmt: skip
    label, out, generate_fn, device, shard = _common(args, "t2i-compbench")

    def load():
        return t2i.load_judges(cats, blip=args.judge, clip=args.clip, detector=args.detector, depth=args.depth,
                               cfg=cfg, device=device)  # fmt: skip

    return t2i.run(
        cfg, load, out_dir=out, model=label, generate_fn=generate_fn, images_dir=args.images, shard=shard
    )


def run_dpg(args) -> dict:
    from eval import dpg_bench
    from eval.scorers.vqa import load_vqa_judge

    cfg = dpg_bench.DpgConfig(limit=args.limit, official_quirks=args.official_quirks, batch_size=args.batch_size,
                              prompts_dir=args.prompts_dir, csv_path=args.csv, verify_csv=not args.no_verify_csv,
                              cache_dir=args.cache_dir)  # fmt: skip
    label, out, generate_fn, device, shard = _common(args, "dpg-bench")
    return dpg_bench.run(cfg, lambda: load_vqa_judge(args.judge, device=device), out_dir=out, model=label,
                         generate_fn=generate_fn, images_dir=args.images, shard=shard)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser(with_world=argv[:1] == ["world"]).parse_args(argv)
    except ModuleNotFoundError as err:
        print(f"error: the world benchmark is not available ({err})", file=sys.stderr)
        return 2
    try:
        if args.benchmark == "world":
            from eval import world as world_bench

            # the world evaluation is not sharded: the main process runs all of it
            is_main = current_shard(None)[0].is_main
            summary = world_bench.run(args) if is_main else {}
        else:
            is_main = current_shard(args.device)[0].is_main
            summary = {"t2i-compbench": run_t2i, "dpg-bench": run_dpg}[args.benchmark](args)
    except (EvalInputError, JudgeUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not is_main:
        return 0  # the main process reports (and wrote the result files)
    keys = ("benchmark", "model", "scores", "overall", "n_prompts", "complete", "seconds")
    print(json.dumps({k: summary.get(k) for k in keys}, indent=2))
    if args.benchmark != "world":
        print(
            f"results written to {args.out}/ (results.json, per_image.jsonl, results.csv, results.html/png)"
        )
    return 0


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    keep_freed_memory()  # the command only, not main(): batched CPU scoring reuses its freed activations
    sys.exit(main())
