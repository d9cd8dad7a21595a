"""The built-in compositional world: vocabulary, objects on a lattice, and the pixel renderer.

A scene is a list of `Obj` placed on a 6x6 lattice of a 64x64 canvas. Every object is a glyph (shape x size x
texture) in one colour, drawn over a one-pixel white halo, so that touching objects stay separable. Objects are
drawn back layer first, then the front layer, each layer in lattice order; a later object occludes an earlier
one (this is how "in front of" / "behind" are drawn). Textures are white holes in the glyph: stripes or dots,
large enough to be seen at the native 64 px (the app upscales for display).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

COLORS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "diamond")
TEXTURES = ("plain", "striped", "dotted")
SIZES = ("small", "large")
PLURALS = {s: s + "s" for s in SHAPES}

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 130, 20),
}
WHITE = (255, 255, 255)

CANVAS = 64
GRID = 6  # lattice cells per side
CELL = 8  # pixels between lattice points
ORIGIN = 12  # pixel centre of lattice cell 0
RADIUS = {"small": 4, "large": 7}
HALO = 1


@dataclass(frozen=True, order=True)
class Obj:
    row: int
    col: int
    shape: str
    color: str
    texture: str = "plain"
    size: str = "large"
    layer: int = 0  # 0 = back, 1 = front

    def __post_init__(self):
        for name, value, valid in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, COLORS),
            ("texture", self.texture, TEXTURES),
            ("size", self.size, SIZES),
        ):
            if value not in valid:
                raise ValueError(f"{name} {value!r} is not one of {list(valid)}")
        if not (0 <= self.row < GRID and 0 <= self.col < GRID):
            raise ValueError(f"lattice cell ({self.row}, {self.col}) is outside the {GRID}x{GRID} grid")
        if self.layer not in (0, 1):
            raise ValueError(f"layer {self.layer} is not 0 (back) or 1 (front)")

    @property
    def center(self) -> tuple[int, int]:
        """(x, y) pixel centre."""
        return ORIGIN + CELL * self.col, ORIGIN + CELL * self.row

    def describe(self) -> str:
        words = [self.size] if self.size != "large" else []
        return " ".join(
            [*words, *([self.texture] if self.texture != "plain" else []), self.color, self.shape]
        )


def _silhouette(shape: str, r: int) -> np.ndarray:
    """Boolean (2r+1, 2r+1) mask of the shape."""
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    if shape == "circle":
        return x * x + y * y <= r * r + r * 0.8
    if shape == "square":
        return np.ones_like(x, dtype=bool)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= r
    if shape == "triangle":  # apex up, base on the bottom row
        return np.abs(x) <= (y + r) / 2.0 + 0.01
    raise ValueError(f"shape {shape!r} is not one of {list(SHAPES)}")


@cache
def glyph(shape: str, size: str, texture: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(silhouette, colour mask, halo) boolean masks on a (2R+1)^2 window, R = radius + halo."""
    r = RADIUS[size]
    big = r + HALO
    sil = np.zeros((2 * big + 1, 2 * big + 1), dtype=bool)
    sil[HALO:-HALO, HALO:-HALO] = _silhouette(shape, r)
    y, x = np.mgrid[-big : big + 1, -big : big + 1]
    # interior = silhouette pixels whose 4 neighbours are in the silhouette (keeps a solid outline)
    inner = sil.copy()
    inner[1:, :] &= sil[:-1, :]
    inner[:-1, :] &= sil[1:, :]
    inner[:, 1:] &= sil[:, :-1]
    inner[:, :-1] &= sil[:, 1:]
    if texture == "striped":
        holes = inner & (np.mod(y, 3) == 1)
    elif texture == "dotted":
        holes = inner & (np.mod(y, 3) == 1) & (np.mod(x, 3) == 1)
    else:
        holes = np.zeros_like(sil)
    color = sil & ~holes
    halo = np.zeros_like(sil)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            halo |= np.roll(np.roll(sil, dy, 0), dx, 1)
    return sil, color, halo & ~sil


def overlaps(a: Obj, b: Obj) -> bool:
    """True when one object's glyph (with its halo) touches the other's silhouette."""
    dr, dc = b.row - a.row, b.col - a.col
    if abs(dr) > 2 or abs(dc) > 2:
        return False
    return _overlaps(a.shape, a.size, b.shape, b.size, dr, dc)


@cache
def _overlaps(shape_a: str, size_a: str, shape_b: str, size_b: str, dr: int, dc: int) -> bool:
    a = Obj(2, 2, shape_a, COLORS[0], "plain", size_a)
    b = Obj(2 + dr, 2 + dc, shape_b, COLORS[0], "plain", size_b)
    ya, xa, sa, _, ha = footprint(a)
    yb, xb, sb, _, hb = footprint(b)
    ma = np.zeros((CANVAS, CANVAS), dtype=bool)
    mb = np.zeros((CANVAS, CANVAS), dtype=bool)
    ma[ya, xa] = sa
    mb[yb, xb] = sb
    na, nb = ma.copy(), mb.copy()
    na[ya, xa] |= ha
    nb[yb, xb] |= hb
    return bool((na & mb).any() or (nb & ma).any())


def draw_order(objs: list[Obj]) -> list[Obj]:
    return sorted(objs, key=lambda o: (o.layer, o.row, o.col))


def footprint(obj: Obj) -> tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray]:
    """Window slices on the canvas plus the glyph masks (silhouette, colour, halo)."""
    sil, col, halo = glyph(obj.shape, obj.size, obj.texture)
    big = sil.shape[0] // 2
    cx, cy = obj.center
    return slice(cy - big, cy + big + 1), slice(cx - big, cx + big + 1), sil, col, halo


def render_array(objs: list[Obj]) -> np.ndarray:
    """(64, 64, 3) uint8 render of the scene."""
    img = np.full((CANVAS, CANVAS, 3), 255, dtype=np.uint8)
    for obj in draw_order(objs):
        ys, xs, sil, col, halo = footprint(obj)
        win = img[ys, xs]
        win[sil | halo] = WHITE
        win[col] = PALETTE[obj.color]
    return img


def render(objs: list[Obj], scale: int = 1) -> Image.Image:
    img = Image.fromarray(render_array(objs))
    return img.resize((CANVAS * scale, CANVAS * scale), Image.NEAREST) if scale != 1 else img
