"""How close does the tiny DPT of `python -m eval.bench` come to this device's arithmetic peak, batched and alone?

    OMP_NUM_THREADS=1 .venv/bin/python -m scripts.dpt_roofline [--repeats 9] [--batch 16]

Batching pays only while a model's work per image is small next to its per-call overhead. This script counts the
multiply-adds of the tiny random DPT's convolutions and linear layers (forward hooks) and times the model's forward
pass (no pre- or post-processing) on 32 images of 64 px, in batches of `--batch` and one at a time. It prints
the achieved GFLOP/s of each mode beside the device's fp32 matrix-multiply rate (1024 x 1024, measured in the same
run). A batched rate near the matrix-multiply rate means the batched path has no overhead left to remove, so
the batched/single ratio cannot rise by batching better. Medians of `--repeats`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from silmm.bench import median_seconds


def count_flops(model: torch.nn.Module, pixels: torch.Tensor) -> float:
    """FLOPs (2 x multiply-adds) of the Conv2d, ConvTranspose2d and Linear layers in one forward pass."""
    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Linear):  # each input element meets out_features weights
            total += 2 * inputs[0].numel() * module.out_features
        elif isinstance(module, torch.nn.ConvTranspose2d):  # each input element feeds out_channels / groups x kernel
            kh, kw = module.kernel_size
            total += 2 * inputs[0].numel() * module.out_channels // module.groups * kh * kw
        else:  # Conv2d: each output element reads in_channels / groups x kernel inputs
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw

    layers = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, layers)]
    with torch.no_grad():
        model(pixel_values=pixels)
    for h in handles:
        h.remove()
    return total


def main(argv: list[str] | None = None) -> dict:
    from transformers import DPTForDepthEstimation

    from eval.bench import build_tiny_judges
    from eval.common import keep_freed_memory

    p = argparse.ArgumentParser(prog="python -m scripts.dpt_roofline", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--images", type=int, default=32)
    args = p.parse_args(argv)
    keep_freed_memory()  # as python -m eval.bench
    torch.set_num_threads(1)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    matmul = 2 * 1024**3 / median_seconds(lambda: a @ b, args.repeats) / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        model = DPTForDepthEstimation.from_pretrained(build_tiny_judges(Path(tmp))["dpt"]).eval()
    model.to(memory_format=torch.channels_last)  # as eval.scorers.depth.DptDepth on CPU
    pixels = torch.randn(args.images, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    flops_per_image = count_flops(model, pixels[:1])

    def forward(size: int):
        with torch.no_grad():
            for start in range(0, args.images, size):
                model(pixel_values=pixels[start : start + size])

    rows = {}
    forward(args.batch)  # warm-up
    for mode, size in (("batched", args.batch), ("single", 1)):
        seconds = median_seconds(lambda s=size: forward(s), args.repeats)
        rows[mode] = {"ms_per_image": 1000 * seconds / args.images,
                      "gflops": flops_per_image * args.images / seconds / 1e9}  # fmt: skip
    print(f"fp32 matmul 1024x1024: {matmul:.1f} GFLOP/s (1 thread)")
    print(f"tiny DPT forward: {flops_per_image / 1e6:.1f} MFLOP per image (convolutions and linear layers)")
    for mode, r in rows.items():
        print(f"  {mode:8s} {r['ms_per_image']:6.2f} ms/image  {r['gflops']:5.1f} GFLOP/s  "
              f"= {r['gflops'] / matmul:4.0%} of the matmul rate")  # fmt: skip
    print(f"  forward-only ratio, single / batched: {rows['single']['ms_per_image'] / rows['batched']['ms_per_image']:.2f}")
    return {"matmul_gflops": matmul, "mflop_per_image": flops_per_image / 1e6, **rows}


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    main()
