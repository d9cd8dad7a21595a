"""`python -m eval world`: exact-oracle evaluation of a world model (silmm.world.evaluate) as a benchmark.

    python -m eval world --model world-discrete --out eval_results/world
    python -m eval world --model world-discrete --adapter runs/demo/iter_3/adapter --prompts assets/world/seen.txt

Writes DIR/results.json (strict `scores`/`overall`, `facts_only`, `judge_agreement` per question type, counts,
seconds), DIR/per_prompt.jsonl and DIR/samples.png (a grid of the first prompts' images). Nothing is written to
DIR unless the whole evaluation finished; fixed seeds make a rerun give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="world-discrete, world-continuous, or a world model folder")
    p.add_argument("--adapter", help="LoRA folder saved by the loop (runs/<name>/iter_<k>/adapter)")
    p.add_argument("--prompts", help="prompt file, one per line (default: assets/world/heldout.txt + single.txt)")
    p.add_argument("--images-per-prompt", type=int, default=4)
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default=None, help="cpu or cuda (default cpu)")


def _grid(rows: list[list[Image.Image]], prompts: list[str], scale: int = 2) -> Image.Image:
    side = 64 * scale
    cols = max((len(r) for r in rows), default=1)
    label_w = 260
    grid = Image.new("RGB", (label_w + cols * (side + 4), len(rows) * (side + 4) + 4), "white")
    draw = ImageDraw.Draw(grid)
    for r, (imgs, prompt) in enumerate(zip(rows, prompts)):
        y = 4 + r * (side + 4)
        words, line, lines = prompt.split(), "", []
        for w in words:
            if len(line) + len(w) > 36:
                lines.append(line)
                line = ""
            line += w + " "
        lines.append(line)
        draw.multiline_text((4, y + 4), "\n".join(lines), fill="black")
        for c, img in enumerate(imgs):
            grid.paste(img.resize((side, side), Image.NEAREST), (label_w + c * (side + 4), y))
    return grid


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def run(args) -> dict:
    """Validate everything, evaluate, then write the outputs; bad input raises EvalInputError naming it."""
    from eval.common import EvalInputError

    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as err:
        raise EvalInputError(str(err)) from err


def _run(args) -> dict:
    from silmm.adapters import load_adapter
    from silmm.world.evaluate import default_prompts, evaluate, read_prompts

    if args.images_per_prompt < 1:
        raise ValueError(f"--images-per-prompt={args.images_per_prompt} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit={args.limit} must be >= 1")
    prompts = read_prompts(args.prompts) if args.prompts else default_prompts()
    prompts = prompts[: args.limit] if args.limit else prompts
    adapter = load_adapter(args.model, adapter_dir=args.adapter, device=args.device)
    res = evaluate(adapter, prompts, images_per_prompt=args.images_per_prompt, keep_images=24)
    images, per_prompt = res.pop("images"), res.pop("per_prompt")
    res["model"] = args.model + (f"+{Path(args.adapter).name}" if args.adapter else "")
    res["adapter"] = args.adapter
    res["prompts_file"] = args.prompts or "assets/world/heldout.txt+single.txt"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "per_prompt.jsonl", "".join(json.dumps(r) + "\n" for r in per_prompt).encode())
    grid = _grid(images, prompts[: len(images)])
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".samples.", suffix=".png")
    os.close(fd)
    grid.save(tmp)
    os.replace(tmp, out / "samples.png")
    _atomic_write(out / "results.json", (json.dumps(res, indent=2) + "\n").encode())
    return res
