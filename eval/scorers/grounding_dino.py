"""Grounding DINO as the T2I-CompBench detector (2D/3D-spatial, numeracy): transformers GroundingDinoForObjectDetection.

Follows the official `Model.predict_with_classes` (IDEA-Research/GroundingDINO, groundingdino/util/inference.py
@ 96ca504): the caption is `". ".join(names)`, lower-cased, ending in "."; a box is kept when its highest token
probability (sigmoid) exceeds the box threshold, and that probability is its score; its phrase is the tokens
above the text threshold, decoded, with "." removed (`predict`); the phrase becomes the first queried name it
contains (`phrases2classes`), and a box whose phrase contains none is dropped. Thresholds: the official demo
values, box 0.35 and text 0.25. Boxes are mapped into UniDet's input frame as for OWLv2 (detection.py).
Left out: the official `remove_combined` option (off by default there too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eval.scorers.detection import Detection, load_model_and_processor, to_detector_frame

if TYPE_CHECKING:
    import torch
    from PIL import Image

BOX_THRESHOLD = 0.35  # official README / predict_with_caption default
TEXT_THRESHOLD = 0.25


def caption(names: list[str]) -> str:
    """The official caption for a class list: `". ".join(classes)`, lower-cased, stripped, ending in '.'."""
    text = ". ".join(names).lower().strip()
    return text if text.endswith(".") else text + "."


def phrase_to_name(phrase: str, names: list[str]) -> str | None:
    """Official `phrases2classes`: the first name (in query order) that is a substring of the (lower-cased) phrase."""
    return next((n for n in names if n.lower() in phrase), None)


class GroundingDinoDetector:
    """Grounding DINO detection by name; returns boxes in the official UniDet input frame."""

    def __init__(self, model, processor, *, threshold: float = BOX_THRESHOLD, text_threshold: float = TEXT_THRESHOLD,
                 device: str = "cpu"):  # fmt: skip
        self.model, self.processor = model.to(device).eval(), processor
        self.threshold, self.text_threshold, self.device = threshold, text_threshold, device
        self.name = getattr(model, "name_or_path", "grounding-dino")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", **kw) -> GroundingDinoDetector:
        from transformers import (
            GroundingDinoForObjectDetection,
            GroundingDinoImageProcessorPil,
            GroundingDinoProcessor,
        )

        model, proc = load_model_and_processor(name_or_path, GroundingDinoForObjectDetection, GroundingDinoProcessor,
                                               GroundingDinoImageProcessorPil, role="detector (Grounding DINO)")  # fmt: skip
        det = cls(model, proc, device=device, **kw)
        det.name = name_or_path
        return det

    @property
    def settings(self) -> dict:
        return {
            "family": "grounding-dino",
            "box_threshold": self.threshold,
            "text_threshold": self.text_threshold,
        }

    def describe(self) -> str:
        return (f"Grounding DINO ({self.name}), box threshold {self.threshold} and text threshold "
                f"{self.text_threshold} (official demo values 0.35/0.25) instead of UniDet's 0.5; a box's phrase "
                "names the first queried object it contains (official phrases2classes); preprocessing in torch "
                "(bilinear, antialiased, without PIL's 8-bit rounding of the resized image)")  # fmt: skip

    def pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The image processor's steps for images of one size (resize the short side to `shortest_edge` within
        `longest_edge`, rescale, normalise; no padding needed) in torch on the device: the PIL processor took ~0.1 s
        per 512-px image on the CPU. Bilinear with antialiasing as PIL's; the float result skips PIL's 8-bit rounding
        of the resized image (the tests bound the difference)."""
        import numpy as np
        import torch
        import torch.nn.functional as F
        from transformers.image_transforms import get_size_with_aspect_ratio

        proc = self.processor.image_processor
        w, h = images[0].size
        size = get_size_with_aspect_ratio((h, w), proc.size["shortest_edge"], proc.size["longest_edge"])
        x = torch.from_numpy(np.stack([np.array(im.convert("RGB")) for im in images])).to(self.device)
        x = x.permute(0, 3, 1, 2).float()  # (B, 3, H, W), 0..255 as PIL resizes them
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(proc.image_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(proc.image_std, device=self.device).view(1, 3, 1, 1)
        return (x.clamp(0, 255) / 255 - mean) / std

    def detect(self, images: list[Image.Image], queries: list[list[str]]) -> list[list[Detection]]:
        """Boxes above the thresholds for each image's own query names: one forward per image size.

        Images of one size share a forward (captions padded: no effect); mixing sizes would pad the smaller images,
        which moves the boxes, so each image gets what the official batch-size-1 inference gives it."""
        import torch

        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        out: list[list[Detection]] = [[] for _ in images]
        for rows in by_size.values():
            ims, qs = [images[i] for i in rows], [queries[i] for i in rows]
            enc = self.processor.tokenizer([caption(q) for q in qs], padding="longest", return_tensors="pt")
            enc = enc.to(self.device)
            pixel_values = self.pixels(ims)
            with torch.no_grad():
                outputs = self.model(**enc, pixel_values=pixel_values,
                                     pixel_mask=torch.ones_like(pixel_values[:, 0], dtype=torch.long))  # fmt: skip
            for i, dets in zip(rows, self.to_detections(outputs, enc.input_ids, ims, qs)):
                out[i] = dets
        return out

    def to_detections(self, outputs, input_ids: torch.Tensor, images: list[Image.Image],
                      queries: list[list[str]]) -> list[list[Detection]]:  # fmt: skip
        """Official box and text thresholds, phrase -> queried name, boxes in the UniDet frame."""
        results = self.processor.post_process_grounded_object_detection(
            outputs, input_ids, threshold=self.threshold, text_threshold=self.text_threshold,
            target_sizes=[(im.size[1], im.size[0]) for im in images],
        )  # fmt: skip
        out = []
        for im, names, res in zip(images, queries, results):
            dets = []
            for score, box, phrase in zip(res["scores"].tolist(), res["boxes"].tolist(), res["text_labels"]):
                name = phrase_to_name(phrase.replace(".", ""), names)
                if name is not None:
                    dets.append(Detection(name, float(score), to_detector_frame(box, im.size)))
            out.append(dets)
        return out
