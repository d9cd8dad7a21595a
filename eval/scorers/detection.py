"""Object detection for 2D-spatial, 3D-spatial and numeracy: the official geometry rules plus an OWLv2 detector.

The rules are pure functions over `Detection`s, copied from T2I-CompBench's UniDet_eval scripts (BENCHMARKS.md
1.4-1.6): 2D `pos` with the 150-px "next to" rule and the `< 0.5` zeroing, 3D `pos3d` with the transposed depth
indexing and the overlap requirement, numeracy de-duplication with the "+1 pixel" area convention.
UniDet (detectron2) is not available on the HF stack, so an open-vocabulary detector queries the prompt's objects
by name: `OwlDetector` (transformers `Owlv2ForObjectDetection`, the default) or Grounding DINO
(eval/scorers/grounding_dino.py), picked by `load_detector` from the checkpoint's model_type. Boxes are mapped
into UniDet's input frame (short side 479, long side at most 480) so the pixel thresholds mean what they meant
officially. `vocab_ok` reproduces UniDet's closed 722-label vocabulary (exact match for 2D, substring for
3D/numeracy) when the gate is on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from eval.scorers.unidet_labels import UNIDET_LABELS

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

RELATIONS_2D = ("on side of", "next to", "near", "on the left of", "on the right of", "on the bottom of",
                "on the top of", "on top of")  # fmt: skip
RELATIONS_3D = ("in front of", "behind", "hidden")
_UNIDET_JOINED = " ".join(UNIDET_LABELS)
OWL_THRESHOLD = 0.1  # transformers' OWLv2 post-processing default (UniDet used 0.5 on its own scale)


@dataclass(frozen=True)
class Detection:
    """One box: `label` (the queried name), `score` in [0, 1], `box` (x1, y1, x2, y2) in detector-frame pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


def detector_frame(width: int, height: int, short: int = 479, max_size: int = 480) -> tuple[int, int]:
    """(w, h) after torchvision `Resize(size=479, max_size=480)`, the official UniDet input size."""
    if width <= height:
        w, h = short, int(short * height / width)
    else:
        w, h = int(short * width / height), short
    if max(w, h) > max_size:
        scale = max_size / max(w, h)
        w, h = int(w * scale), int(h * scale)
    return w, h


def to_detector_frame(box: tuple, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A box in image pixels, scaled into UniDet's input frame of an image of `size` (w, h) and clipped to it
    (detectron2 clips UniDet's boxes to the image)."""
    fw, fh = detector_frame(*size)
    sx, sy = fw / size[0], fh / size[1]
    x1, y1, x2, y2 = box
    return (
        min(max(x1 * sx, 0), fw),
        min(max(y1 * sy, 0), fh),
        min(max(x2 * sx, 0), fw),
        min(max(y2 * sy, 0), fh),
    )


def load_detector(name_or_path: str, *, threshold: float | None, text_threshold: float, device: str = "cpu"):
    """OWLv2 or Grounding DINO, by the checkpoint's model_type; `threshold=None` takes the family's default."""
    from transformers import AutoConfig

    from eval.common import EvalInputError, load_pretrained

    config = load_pretrained(AutoConfig.from_pretrained, name_or_path, role="detector", option="--detector")
    if config.model_type == "owlv2":
        thr = OWL_THRESHOLD if threshold is None else threshold
        return OwlDetector.from_pretrained(name_or_path, threshold=thr, device=device)
    if config.model_type == "grounding-dino":
        from eval.scorers.grounding_dino import BOX_THRESHOLD, GroundingDinoDetector

        thr = BOX_THRESHOLD if threshold is None else threshold
        return GroundingDinoDetector.from_pretrained(name_or_path, threshold=thr, text_threshold=text_threshold,
                                                     device=device)  # fmt: skip
    raise EvalInputError(
        f"detector {name_or_path!r} has model_type {config.model_type!r}; supported: ['grounding-dino', 'owlv2']"
    )


def load_model_and_processor(name_or_path: str, model_cls, processor_cls, image_processor_cls, *, role: str):
    """(model, processor) of a detector folder or hub id: the PIL image processor (no torchvision here) and the
    folder's tokenizer; one JudgeUnavailableError naming `--detector` if they cannot be loaded."""
    from transformers import AutoTokenizer

    from eval.common import load_pretrained

    def load(path):
        proc = processor_cls(image_processor=image_processor_cls.from_pretrained(path),
                             tokenizer=AutoTokenizer.from_pretrained(path))  # fmt: skip
        return model_cls.from_pretrained(path), proc

    return load_pretrained(load, name_or_path, role=role, option="--detector")


def first_relation(prompt: str, relations: tuple[str, ...]) -> str | None:
    """The first relation (in the official list order) that occurs in the prompt as a substring."""
    return next((r for r in relations if r in prompt), None)


def vocab_ok(name: str, *, exact: bool) -> bool:
    """Could UniDet ever report `name`? 2D needs an exact label, 3D/numeracy a substring of some label."""
    return name in UNIDET_LABELS if exact else name in _UNIDET_JOINED


def iou(a: tuple, b: tuple) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pos_2d(relation: str, box1: tuple, box2: tuple) -> float:
    """Official 2D relation score of object 1 relative to object 2 (image y grows downward)."""
    dx = (box2[0] + box2[2]) / 2 - (box1[0] + box1[2]) / 2
    dy = (box2[1] + box2[3]) / 2 - (box1[1] + box1[3]) / 2
    overlap = iou(box1, box2)
    if relation in ("next to", "on side of", "near"):
        return 1.0 if abs(dx) < 150 or abs(dy) < 150 else 150 / max(abs(dx), abs(dy))
    sides = {
        "on the right of": dx < 0 and abs(dx) > abs(dy),
        "on the left of": dx > 0 and abs(dx) > abs(dy),
        "on the bottom of": dy < 0 and abs(dy) > abs(dx),
        "on the top of": dy > 0 and abs(dy) > abs(dx),
    }
    if not sides.get(relation, False):  # "on top of" (no "the") is not handled officially: 0
        return 0.0
    return 1.0 if overlap < 0.1 else 0.1 / overlap


def spatial_2d_score(
    obj1: str, obj2: str, relation: str | None, dets: list[Detection], *, zero_below: float = 0.5
) -> float:
    """0.25*conf1 + 0.25*conf2 + 0.5*pos, exact label match, highest-score box; then `< 0.5 -> 0` (official)."""
    ranked = sorted(dets, key=lambda d: -d.score)
    d1 = next((d for d in ranked if d.label == obj1), None)
    d2 = next((d for d in ranked if d.label == obj2), None)
    if d1 is not None and d2 is not None:
        score = (
            0.25 * d1.score + 0.25 * d2.score + 0.5 * (pos_2d(relation, d1.box, d2.box) if relation else 0.0)
        )
    elif d1 is not None or d2 is not None:
        score = 0.25 * (d1 or d2).score
    else:
        score = 0.0
    return 0.0 if score < zero_below else score


def box_depth(depth: np.ndarray, box: tuple, *, transposed: bool) -> float:
    """Mean depth inside a box; official code indexes rows by x (`depth[x1:x2, y1:y2]`)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    region = depth[x1:x2, y1:y2] if transposed else depth[y1:y2, x1:x2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an empty region gives nan, and nan earns 0 below
        return float(region.mean())


def pos_3d(relation: str, box1: tuple, box2: tuple, depth: np.ndarray, *, transposed: bool = True) -> float:
    """Official 3D relation score: depth is inverse (larger = nearer); only overlapping boxes can score."""
    overlap = iou(box1, box2)
    diff = box_depth(depth, box1, transposed=transposed) - box_depth(depth, box2, transposed=transposed)
    right_order = diff > 0 if relation == "in front of" else diff < 0  # "behind" and "hidden" alike
    if overlap > 0.5:
        return 1.0 if right_order else 0.0
    if 0 < overlap < 0.5:
        return overlap / 0.5 if right_order else 0.0
    return 0.0


def spatial_3d_score(obj1: str, obj2: str, relation: str | None, dets: list[Detection], depth: np.ndarray,
                     *, transposed: bool = True) -> float:  # fmt: skip
    """Official 3D score: substring label scan (later matches overwrite until both are set), no zeroing."""
    ranked = sorted(dets, key=lambda d: -d.score)
    p1 = p2 = None
    for i, det in enumerate(ranked):
        if obj1 in det.label:
            p1 = i
        if obj2 in det.label:
            p2 = i
        if p1 is not None and p2 is not None:
            break
    if p1 is not None and p2 is not None:
        rel = (
            pos_3d(relation, ranked[p1].box, ranked[p2].box, depth, transposed=transposed)
            if relation
            else 0.0
        )
        return 0.25 * ranked[p1].score + 0.25 * ranked[p2].score + 0.5 * rel
    if p1 is not None or p2 is not None:
        return 0.25 * ranked[p1 if p1 is not None else p2].score
    return 0.0


def dedup_numeracy(dets: list[Detection], *, threshold: float = 0.9) -> list[Detection]:
    """Drop a box when a kept box of the same label overlaps it (IoU or either coverage > 0.9, +1-px areas)."""
    kept: list[Detection] = []
    for det in sorted(dets, key=lambda d: -d.score):
        if not any(k.label == det.label and _overlaps_plus1(k.box, det.box, threshold) for k in kept):
            kept.append(det)
    return kept


def _overlaps_plus1(a: tuple, b: tuple, threshold: float) -> bool:
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    union = area_a + area_b - inter
    return inter / union > threshold or inter / area_a > threshold or inter / area_b > threshold


def numeracy_score(targets: list[tuple[str, int]], dets: list[Detection]) -> float:
    """Sum over parsed objects of (1/N) * (0.5*[detected] + 0.5*[count == target]), after de-duplication."""
    if not targets:
        return 0.0
    kept = dedup_numeracy(dets)
    total = 0.0
    for name, target in targets:
        count = sum(1 for d in kept if d.label == name)
        total += (0.5 * (count > 0) + 0.5 * (count == target)) / len(targets)
    return total


class OwlDetector:
    """OWLv2 open-vocabulary detection by name; returns boxes in the official UniDet input frame."""

    def __init__(self, model, processor, *, threshold: float, device: str = "cpu"):
        self.model, self.processor = model.to(device).eval(), processor
        self.threshold, self.device, self.name = threshold, device, getattr(model, "name_or_path", "owlv2")

    @property
    def settings(self) -> dict:
        return {"family": "owlv2", "threshold": self.threshold}

    def describe(self) -> str:
        return f"OWLv2 ({self.name}), box threshold {self.threshold} instead of UniDet's 0.5"

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, threshold: float, device: str = "cpu") -> OwlDetector:
        from transformers import Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

        model, proc = load_model_and_processor(name_or_path, Owlv2ForObjectDetection, Owlv2Processor,
                                               Owlv2ImageProcessorPil, role="detector (OWLv2)")  # fmt: skip
        det = cls(model, proc, threshold=threshold, device=device)
        det.name = name_or_path
        return det

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The OWLv2 processor's steps (rescale, pad bottom/right to square with 0, resize, normalise) in torch on
        the device: scipy's resize in the PIL processor costs ~0.2 s per image. Bilinear; antialiased when shrinking
        (scipy: Gaussian pre-filter), so downscaled inputs differ slightly."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        proc = self.processor.image_processor
        side = proc.size["height"]
        mean = torch.tensor(proc.image_mean, device=self.device).view(3, 1, 1)
        std = torch.tensor(proc.image_std, device=self.device).view(3, 1, 1)
        out = []
        for im in images:
            x = (
                torch.from_numpy(np.array(im.convert("RGB"))).to(self.device).permute(2, 0, 1).float() / 255
            )  # (3, H, W)
            h, w = x.shape[1:]
            x = F.pad(x, (0, max(h, w) - w, 0, max(h, w) - h))
            x = F.interpolate(
                x[None], size=(side, side), mode="bilinear", align_corners=False, antialias=max(h, w) > side
            )
            out.append((x[0] - mean) / std)
        return torch.stack(out)

    def detect(self, images: list[Image.Image], queries: list[list[str]]) -> list[list[Detection]]:
        """Boxes above `threshold` for each image's own query names (batched; queries padded per batch)."""
        import torch

        width = max(len(q) for q in queries)
        padded = [q + [q[-1]] * (width - len(q)) for q in queries]  # repeated queries are dropped below
        max_len = self.model.config.text_config.max_position_embeddings
        tok = self.processor.tokenizer([q for qs in padded for q in qs], padding="max_length", truncation=True,
                                       max_length=max_len, return_tensors="pt").to(self.device)  # fmt: skip
        with torch.no_grad():
            outputs = self.model(
                input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=self.pixels(images)
            )
        # OWLv2 pads images to a square: target size = longest side keeps boxes in original pixels
        sizes = torch.tensor([[max(im.size), max(im.size)] for im in images])
        results = self.processor.image_processor.post_process_object_detection(
            outputs=outputs, threshold=self.threshold, target_sizes=sizes
        )
        return [
            [Detection(names[label], float(score), to_detector_frame(box, im.size))
             for score, label, box in zip(res["scores"].tolist(), res["labels"].tolist(), res["boxes"].tolist())
             if label < len(names)]
            for im, names, res in zip(images, queries, results)
        ]  # fmt: skip
