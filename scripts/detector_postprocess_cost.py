"""Why `python -m eval.bench --real-size` lets no detector box pass: the cost of Grounding DINO's post-processing
(official thresholds, phrase decoding, UniDet frame) for random-like logits (most of the 900 queries pass) against
a trained detector's handful of boxes, and of the PIL preprocessing against the torch one, per 512-px image, on
the CPU (1 thread).

    python -m scripts.detector_postprocess_cost
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def main() -> dict:
    from transformers import GroundingDinoImageProcessorPil
    from transformers.models.grounding_dino.modeling_grounding_dino import GroundingDinoObjectDetectionOutput

    from eval.bench import _save_grounding_dino
    from eval.scorers.grounding_dino import GroundingDinoDetector, caption

    torch.set_num_threads(1)
    n = 16
    with tempfile.TemporaryDirectory() as tmp:
        _save_grounding_dino(Path(tmp), tiny=True)
        det = GroundingDinoDetector.from_pretrained(tmp)
    det.processor.image_processor = GroundingDinoImageProcessorPil()  # the real one: short side 800
    rng = np.random.RandomState(0)
    ims = [Image.fromarray(rng.randint(0, 255, (512, 512, 3), dtype=np.uint8)) for _ in range(n)]
    names = [["dog", "cat"]] * n
    out = {}
    start = time.perf_counter()
    enc = det.processor(images=ims, text=[caption(q) for q in names], padding="longest", return_tensors="pt")
    out["pil_preprocess_ms"] = 1000 * (time.perf_counter() - start) / n
    start = time.perf_counter()
    det.pixels(ims)
    out["torch_preprocess_cpu_ms"] = 1000 * (time.perf_counter() - start) / n
    width = enc.input_ids.shape[1]
    random_like = torch.randn(n, 900, width)
    trained_like = torch.full((n, 900, width), -8.0)
    trained_like[:, :3, 1] = 3.0  # three confident boxes for the first name
    for label, logits in (("random_like", random_like), ("three_boxes", trained_like)):
        outputs = GroundingDinoObjectDetectionOutput(logits=logits, pred_boxes=torch.rand(n, 900, 4) * 0.5 + 0.25)
        start = time.perf_counter()
        dets = det.to_detections(outputs, enc.input_ids, ims, names)
        out[f"post_{label}_ms"] = 1000 * (time.perf_counter() - start) / n
        out[f"boxes_{label}"] = sum(map(len, dets)) / n
    for k, v in out.items():
        print(f"{k:28s} {v:8.1f}")
    return out


if __name__ == "__main__":
    main()
