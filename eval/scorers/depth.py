"""Monocular depth for 3D-spatial: DPT (official: DPT-Hybrid MiDaS, `Intel/dpt-hybrid-midas` on the hub).

Official conventions (BENCHMARKS.md 1.5), kept here: 480x480 bilinear input, mean = std = 0.5, output is relative
inverse depth (larger = nearer), min-max normalised per image, resized back to the image size (bilinear,
align_corners=True), quantised to 8 bits as the official PNG round trip does (truncation), then resized like the
detector input (short side 479, long side <= 480, bilinear) and divided by 255. The 3D rule then indexes this map
transposed (see detection.pos_3d).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eval.scorers.detection import detector_frame

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class DptDepth:
    """Depth maps in the detector frame, values in [0, 1], batched."""

    def __init__(self, model, *, input_size: int = 480, device: str = "cpu"):
        import torch

        self.model, self.input_size, self.device = model.to(device).eval(), input_size, device
        if device == "cpu":  # measured on CPU only (docs/EVAL.md); GPUs keep the default layout
            self.model.to(memory_format=torch.channels_last)
        if (
            model.config.is_hybrid
        ):  # HF's hybrid embedding refuses sizes other than the config's; MiDaS ran at 480
            model.dpt.embeddings.image_size = (input_size, input_size)
        self.name = getattr(model, "name_or_path", "dpt")

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", **kw) -> DptDepth:
        from transformers import DPTForDepthEstimation

        from eval.common import load_pretrained

        model = load_pretrained(DPTForDepthEstimation.from_pretrained, name_or_path, role="depth model (DPT)",
                                option="--depth")  # fmt: skip
        depth = cls(model, device=device, **kw)
        depth.name = name_or_path
        return depth

    def depth_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        """One float32 map per image in its detector frame; post-processing batched per image size."""
        import numpy as np
        import torch
        import torch.nn.functional as F
        from PIL import Image

        size = self.input_size
        arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR),
                                   dtype=np.float32) / 255 for im in images])  # fmt: skip
        pix = ((torch.from_numpy(arr).permute(0, 3, 1, 2) - 0.5) / 0.5).to(self.device)  # (B, 3, size, size)
        if self.device == "cpu":  # channels-last convolutions: 1.4x faster batched (DPT's neck is conv-bound)
            pix = pix.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            pred = self.model(pixel_values=pix).predicted_depth.float()  # (B, h, w)
        lo, hi = pred.amin((1, 2), keepdim=True), pred.amax((1, 2), keepdim=True)
        pred = torch.where(hi > lo, (pred - lo) / (hi - lo), torch.zeros_like(pred))
        maps: list[np.ndarray] = [None] * len(images)  # type: ignore[list-item]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.size, []).append(i)
        for (w, h), rows in by_size.items():
            up = F.interpolate(pred[rows][:, None], size=(h, w), mode="bilinear", align_corners=True)[:, 0]
            png = (up * 255).to(torch.uint8).cpu().numpy()  # 8-bit PNG round trip (truncation)
            for i, q in zip(rows, png):
                frame = np.asarray(Image.fromarray(q).resize(detector_frame(w, h), Image.Resampling.BILINEAR))
                # float32, as the official ToTensor; np.asarray(frame, dtype=np.float32) gives the same 4x slower
                maps[i] = np.divide(frame, np.float32(255), dtype=np.float32)
        return maps
