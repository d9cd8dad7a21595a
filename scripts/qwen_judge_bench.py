"""Qwen2.5-VL as the DPG-Bench judge (random weights): seconds per 2x2 grid, shared prefix against whole prompts.

One DPG grid is 4 tiles x ~16 questions = 64 (tile, question) pairs, each the chat template with the tile's 256
visual tokens (448 px, `QWEN_VQA_PIXELS`) and one question. `QwenVLJudge.answer_yes_no` (the code `--judge
qwen2.5-vl-7b` runs) encodes each tile and its prompt prefix once and continues every question from that KV cache;
the baseline, measured in the same run, is one whole prompt per question (the judge before session 19), batched
by the same number of prompts. Medians of `--repeats` runs after a warm-up; the largest difference between the
two answers is printed. The tokenizer is the tests' offline byte-level one, which spells the question in more
tokens than Qwen's own.

    python -m scripts.qwen_judge_bench --size 7b --device cuda   # Qwen2.5-VL-7B's shapes (~17 GB in bf16)
    python -m scripts.qwen_judge_bench --size small              # a small model on the CPU (fp32)
    python -m scripts.qwen_judge_bench --size tiny               # smoke test
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


SIZES = {  # text (hidden, intermediate, layers, heads, kv heads, mrope sections), vision (depth, hidden, inter., heads)
    "small": ((256, 512, 4, 4, 2, [8, 12, 12]), (4, 128, 256, 4)),
    "7b": ((3584, 18944, 28, 28, 4, [16, 24, 24]), (32, 1280, 3420, 16)),  # Qwen/Qwen2.5-VL-7B-Instruct's
}


def build(size: str, device: str):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_real_models import build_qwen_vl, qwen_image_processor, qwen_tokenizer
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from silmm.adapters.judges import QWEN_VQA_PIXELS, QwenVLJudge

    tok = qwen_tokenizer()
    if size == "tiny":
        model, tok = build_qwen_vl(0, tok)
        return QwenVLJudge(model.to(device), tok, qwen_image_processor())
    (hidden, inter, layers, heads, kv, mrope), (depth, v_hidden, v_inter, v_heads) = SIZES[size]
    cid = tok.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config={"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
                     "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": 152064,
                     "rope_scaling": {"mrope_section": mrope, "rope_type": "default"},
                     "rope_theta": 1000000.0, "bos_token_id": cid("<|endoftext|>"),
                     "eos_token_id": cid("<|im_end|>"), "pad_token_id": cid("<|endoftext|>")},
        vision_config={"depth": depth, "hidden_size": v_hidden, "intermediate_size": v_inter, "num_heads": v_heads,
                       "out_hidden_size": hidden, "window_size": 112,
                       "fullatt_block_indexes": [k for k in (7, 15, 23, 31) if k < depth] or [depth - 1]},
        image_token_id=cid("<|image_pad|>"), video_token_id=cid("<|video_pad|>"),
        vision_start_token_id=cid("<|vision_start|>"), vision_end_token_id=cid("<|vision_end|>"),
    )  # fmt: skip
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    torch.set_default_dtype(torch.float32)
    processor = Qwen2VLImageProcessorPil(max_pixels=QWEN_VQA_PIXELS)
    return QwenVLJudge(model, tok, processor, name=f"qwen2.5-vl {size} shapes, random")


@torch.no_grad()
def whole_prompts(judge, images, questions, batch: int) -> torch.Tensor:
    """The baseline: one whole prompt per (image, question), `batch` prompts a forward; P(yes)."""
    from silmm.adapters.hf_common import VQA_TEMPLATE
    from silmm.adapters.judges import QWEN_VQA_CHAT

    model, device = judge.model, next(judge.model.parameters()).device
    merge = judge.image_processor.merge_size**2
    p_yes = []
    for start in range(0, len(images), batch):
        ims, qs = images[start : start + batch], questions[start : start + batch]
        vis = judge.image_processor(images=[im.convert("RGB") for im in ims], return_tensors="pt")
        texts = [QWEN_VQA_CHAT.format(image_pads="<|image_pad|>" * (int(thw.prod()) // merge),
                                      question=VQA_TEMPLATE.format(question=q))
                 for thw, q in zip(vis["image_grid_thw"], qs)]  # fmt: skip
        enc = judge.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt").to(device)
        logits = model(**enc, pixel_values=vis["pixel_values"].to(device, model.dtype),
                       image_grid_thw=vis["image_grid_thw"].to(device), logits_to_keep=1,
                       mm_token_type_ids=(enc.input_ids == model.config.image_token_id).int()).logits[:, -1]  # fmt: skip
        p_yes.append(logits.float().softmax(-1)[:, judge.yes_ids].sum(-1).cpu())
    return torch.cat(p_yes)


def main(argv: list[str] | None = None) -> dict:
    import numpy as np
    from PIL import Image

    p = argparse.ArgumentParser(prog="python -m scripts.qwen_judge_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=["tiny", "small", "7b"], default="7b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--grids", type=int, default=2)
    p.add_argument("--batch", type=int, default=64, help="prompts per forward for the baseline")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    judge = build(args.size, args.device)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    side = 64 if args.size == "tiny" else 512  # a DPG tile: a quarter of a 1024 px grid
    tiles = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(4 * args.grids)]
    images = [t for t in tiles for _ in range(16)]
    questions = [QUESTIONS[k % len(QUESTIONS)] for k in range(len(images))]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    judge.batch_size = max(1, args.batch // 16)  # distinct tiles a call: the same number of (tile, question) pairs
    runs = {"shared prefix (the judge)": lambda: judge.answer_yes_no(images, questions)[0],
            "whole prompts (baseline)": lambda: whole_prompts(judge, images, questions, args.batch)}  # fmt: skip
    rows, answers = {}, {}
    for name, fn in runs.items():
        fn()  # warm-up
        times = []
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            answers[name] = fn()
            sync()
            times.append(time.perf_counter() - start)
        rows[name] = per_grid = statistics.median(times) / args.grids
        print(f"{name:28s} {per_grid:.3f} s per grid (64 pairs), {64 / per_grid:.1f} pairs/s", flush=True)
    shared, whole = answers.values()
    out = {"size": args.size, "device": args.device, "build_s": round(build_s, 1), "tile_px": side,
           "pairs_per_forward": args.batch, "s_per_grid": rows,
           "ratio": rows["whole prompts (baseline)"] / rows["shared prefix (the judge)"],
           "max_abs_diff_p_yes": float((shared - whole).abs().max()),
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "torch": torch.__version__}  # fmt: skip
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
