"""The world's image tokenizer: 64x64 pixels <-> 36 lattice codes, and the pixel parser behind it.

A code names what sits on one lattice cell: empty, or colour x shape x texture x size x layer (288 object codes).
`decode` renders codes to pixels; `encode` parses pixels back to codes by exact template matching: first the
objects whose whole glyph (colour pixels, texture holes and white halo) is visible, then, greedily, partly hidden
objects whose visible pixels match exactly. The parser also reports which object hides which (occlusion, used for
"in front of") and how many coloured pixels no object explains (`residual`), so malformed drawings are caught.
On rendered scenes the round trip is exact (measured in tests); this is what keeps the oracle's verdicts intact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image

from silmm.world.scene import (
    CANVAS,
    COLORS,
    GRID,
    PALETTE,
    SHAPES,
    SIZES,
    TEXTURES,
    Obj,
    footprint,
    render,
    render_array,
)

N_CELLS = GRID * GRID
ATTRS = list(itertools.product(COLORS, SHAPES, TEXTURES, SIZES, (0, 1)))
N_CODES = 1 + len(ATTRS)  # code 0 = empty cell
_CODE_OF = {a: i + 1 for i, a in enumerate(ATTRS)}
GLYPHS = list(itertools.product(SHAPES, SIZES, TEXTURES))
MIN_VISIBLE = 0.3  # a partly hidden object must show at least this share of its colour pixels


@dataclass
class Parse:
    objects: list[Obj]
    occluders: dict[int, set[int]] = field(default_factory=dict)  # index -> indices of objects hiding it
    residual: int = 0  # coloured pixels that no object explains

    def in_front(self, a: int, b: int) -> bool:
        return a in self.occluders.get(b, set())


def obj_to_code(obj: Obj) -> int:
    return _CODE_OF[(obj.color, obj.shape, obj.texture, obj.size, obj.layer)]


def code_to_obj(code: int, cell: int) -> Obj | None:
    if not 0 <= code < N_CODES:
        raise ValueError(f"image code {code} is outside [0, {N_CODES})")
    if code == 0:
        return None
    color, shape, texture, size, layer = ATTRS[code - 1]
    return Obj(cell // GRID, cell % GRID, shape, color, texture, size, layer)


def objs_to_codes(objs: list[Obj]) -> list[int]:
    codes = [0] * N_CELLS
    for obj in objs:
        cell = obj.row * GRID + obj.col
        if codes[cell]:
            raise ValueError(f"two objects on lattice cell ({obj.row}, {obj.col})")
        codes[cell] = obj_to_code(obj)
    return codes


def codes_to_objs(codes: list[int]) -> list[Obj]:
    if len(codes) != N_CELLS:
        raise ValueError(f"expected {N_CELLS} image codes, got {len(codes)}")
    return [o for cell, c in enumerate(codes) if (o := code_to_obj(int(c), cell)) is not None]


def decode(codes: list[int], scale: int = 1) -> Image.Image:
    return render(codes_to_objs(codes), scale)


def label_map(image: Image.Image | np.ndarray) -> np.ndarray:
    """(64, 64) int: -1 for white, else the index of the nearest palette colour."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if arr.shape[:2] != (CANVAS, CANVAS):
        arr = np.asarray(
            Image.fromarray(arr.astype(np.uint8)).resize((CANVAS, CANVAS), Image.NEAREST), np.float32
        )
    refs = np.array([(255, 255, 255), *[PALETTE[c] for c in COLORS]], dtype=np.float32)
    dist = ((arr[:, :, None, :] - refs[None, None]) ** 2).sum(-1)
    return dist.argmin(-1) - 1


def _match(labels: np.ndarray, obj_cell: tuple[int, int], glyph: tuple, hidden: np.ndarray):
    """Colour index if the glyph matches at the cell on every non-hidden pixel, else None; plus visible share."""
    shape, size, texture = glyph
    probe = Obj(obj_cell[0], obj_cell[1], shape, COLORS[0], texture, size)
    ys, xs, sil, col, halo = footprint(probe)
    win, hid = labels[ys, xs], hidden[ys, xs]
    vis_col = col & ~hid
    n_col = int(col.sum())
    if vis_col.sum() < MIN_VISIBLE * n_col:
        return None, 0.0
    values = win[vis_col]
    k = int(values[0])
    if k < 0 or (values != k).any():
        return None, 0.0
    if (win[(sil & ~col) & ~hid] != -1).any() or (win[halo & ~hid] != -1).any():
        return None, 0.0
    return k, float(vis_col.sum()) / n_col


def parse(image: Image.Image | np.ndarray) -> Parse:
    labels = label_map(image)
    hidden = np.zeros((CANVAS, CANVAS), dtype=bool)  # pixels owned by accepted (nearer) objects
    accepted: list[tuple[Obj, np.ndarray]] = []
    cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    # 1. fully visible objects: their centre pixel always carries their colour
    for cell in cells:
        cx, cy = Obj(cell[0], cell[1], SHAPES[0], COLORS[0]).center
        if labels[cy, cx] < 0:
            continue
        for g in GLYPHS:
            k, share = _match(labels, cell, g, hidden)
            if k is not None and share == 1.0:
                accepted.append((Obj(cell[0], cell[1], g[0], COLORS[k], g[2], g[1]), _sil_canvas(cell, g)))
    for _, sil in accepted:
        hidden |= sil
    n_front = len(accepted)
    # 2. partly hidden objects, greedily by the number of unexplained pixels they explain; a candidate is
    #    re-checked only when an accepted object lands near it
    cache: dict[tuple, tuple] = {}
    while (unexplained := (labels >= 0) & ~hidden).any():
        best = None
        for cell in cells:
            for g in GLYPHS:
                key = (cell, g)
                if key not in cache:
                    cache[key] = _match(labels, cell, g, hidden)
                k, share = cache[key]
                if k is None:
                    continue
                sil = _sil_canvas(cell, g)
                gain = int((sil & unexplained).sum())
                if gain and (best is None or (gain, share) > best[0]):
                    best = ((gain, share), Obj(cell[0], cell[1], g[0], COLORS[k], g[2], g[1]), sil)
        if best is None:
            break
        accepted.append((best[1], best[2]))
        hidden |= best[2]
        r0, c0 = best[1].row, best[1].col
        cache = {key: v for key, v in cache.items() if abs(key[0][0] - r0) > 2 or abs(key[0][1] - c0) > 2}
    occluders: dict[int, set[int]] = {}
    for i in range(n_front, len(accepted)):
        o = accepted[i][0]
        own = _sil_canvas((o.row, o.col), (o.shape, o.size, o.texture), halo=False)
        hiders = {j for j in range(i) if (accepted[j][1] & own).any()}
        if hiders:
            occluders[i] = hiders
    front = {j for hs in occluders.values() for j in hs}
    objs = [Obj(o.row, o.col, o.shape, o.color, o.texture, o.size, int(i in front)) for i, (o, _) in enumerate(accepted)]
    residual = int(((labels >= 0) & ~hidden).sum())
    return Parse(objs, occluders, residual)


@cache
def _sil_canvas(cell: tuple[int, int], glyph: tuple, halo: bool = True) -> np.ndarray:
    shape, size, texture = glyph
    ys, xs, sil, _, ring = footprint(Obj(cell[0], cell[1], shape, COLORS[0], texture, size))
    out = np.zeros((CANVAS, CANVAS), dtype=bool)
    out[ys, xs] = sil | ring if halo else sil
    return out


def encode(image: Image.Image | np.ndarray) -> list[int]:
    """Pixels -> 36 codes. Objects the parser cannot place on distinct cells are dropped (see `parse`)."""
    codes = [0] * N_CELLS
    for obj in parse(image).objects:
        cell = obj.row * GRID + obj.col
        if not codes[cell]:
            codes[cell] = obj_to_code(obj)
    return codes


def reconstruction_error(image: Image.Image | np.ndarray) -> float:
    """Mean absolute pixel error (0-255) of decode(encode(image)) against the image."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    return float(np.abs(render_array(codes_to_objs(encode(image))).astype(np.float32) - arr).mean())
