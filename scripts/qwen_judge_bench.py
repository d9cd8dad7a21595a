"""Qwen2.5-VL-7B as the DPG-Bench judge at its real shapes (random bf16 weights): seconds per 2x2 grid.

One DPG grid is 4 tiles x ~16 questions = 64 (tile, question) prompts, each the chat template with the tile's
256 visual tokens (448 px, `QWEN_VQA_PIXELS`) and one question, answered by `QwenVLJudge.answer_yes_no` (the code
`--judge qwen2.5-vl-7b` runs), at several judge batch sizes. Medians of `--repeats` runs after a warm-up, in one
process. The tokenizer is the tests' offline byte-level one: the text tokens per prompt are printed beside the
real tokenizer's count of the same prompt's words, so the difference can be judged.

    python -m scripts.qwen_judge_bench --device cuda           # real shapes (needs ~17 GB of GPU memory)
    python -m scripts.qwen_judge_bench --tiny --device cpu     # the same code on a tiny model (smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

QUESTIONS = ["is there a red dog on the table ?", "are there two cups near the book ?",
             "is the tree behind the house ?", "is the ball round ?"]  # fmt: skip


def build(tiny: bool, device: str):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_real_models import build_qwen_vl, qwen_image_processor, qwen_tokenizer
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from silmm.adapters.judges import QWEN_VQA_PIXELS, QwenVLJudge

    tok = qwen_tokenizer()
    if tiny:
        model, tok = build_qwen_vl(0, tok)
        return QwenVLJudge(model.to(device), tok, qwen_image_processor())
    cid = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(  # Qwen/Qwen2.5-VL-7B-Instruct's config.json shapes
        text_config={"hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                     "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                     "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": cid("<|endoftext|>"),
                     "eos_token_id": cid("<|im_end|>"), "pad_token_id": cid("<|endoftext|>")},
        vision_config={"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                       "out_hidden_size": 3584, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]},
        image_token_id=cid("<|image_pad|>"), video_token_id=cid("<|video_pad|>"),
        vision_start_token_id=cid("<|vision_start|>"), vision_end_token_id=cid("<|vision_end|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    processor = Qwen2VLImageProcessorPil(max_pixels=QWEN_VQA_PIXELS)
    return QwenVLJudge(model, tok, processor, name="qwen2.5-vl-7b shapes, random")


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m scripts.qwen_judge_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--grids", type=int, default=2)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    judge = build(args.tiny, args.device)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    side = 64 if args.tiny else 512  # a DPG tile: a quarter of a 1024 px grid
    tiles = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(4 * args.grids)]
    images = [t for t in tiles for _ in range(16)]
    questions = [QUESTIONS[k % len(QUESTIONS)] for k in range(len(images))]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    text = judge.tokenizer(questions[0] + " Please answer yes or no.")["input_ids"]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        judge.batch_size = batch
        judge.answer_yes_no(images[:batch], questions[:batch])  # warm-up
        times = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            judge.answer_yes_no(images, questions)
            sync()
            times.append(time.perf_counter() - start)
        per_grid = statistics.median(times) / args.grids
        rows.append({"batch": batch, "s_per_grid": round(per_grid, 4), "prompts_per_s": round(64 / per_grid, 1)})
        print(f"batch {batch:3d}: {per_grid:.3f} s per grid (64 prompts), {64 / per_grid:.1f} prompts/s", flush=True)
    out = {"tiny": args.tiny, "device": args.device, "build_s": round(build_s, 1), "tile_px": side,
           "question_tokens_here": len(text), "rows": rows,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "torch": torch.__version__}  # fmt: skip
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
