"""A small vector canvas: polylines and text in points, written as PNG (Pillow) and PDF.

The per-run latency figure is drawn on it (metrics/latency_canvas.py) rather than with
matplotlib, whose import (0.2-0.3 s), per-draw text layout (~0.1 s per format) and PDF font
subsetting (fontTools, 0.12 s) made the figure most of a small run's CPU
(docs/PERFORMANCE.md). Both files come from one display list, so they show the same:

* PNG: lines drawn ``SUPERSAMPLE`` times larger and reduced (anti-aliasing), then text with
  Pillow's FreeType at the final size (hinted, as matplotlib's Agg draws it), DejaVu Sans.
* PDF: vector paths; text as DejaVu Sans' glyph outlines (metrics/glyphs.py), each glyph one
  form XObject, so no font is embedded or needed; streams zlib-compressed; no dates or ids.

Both are byte-identical for the same display list (no clock, no randomness).
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simkv.metrics.glyphs import font, font_path, quadratic_path

SUPERSAMPLE = 2
Color = tuple[float, float, float]


def rgb(hex_colour: str, alpha: float = 1.0) -> Color:
    """``#RRGGBB`` as (r, g, b) in [0, 1], blended over white by ``alpha``."""
    h = hex_colour.lstrip("#")
    c = tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return tuple(1 - alpha * (1 - v) for v in c)  # type: ignore[return-value]


@dataclass(frozen=True)
class Line:
    x: np.ndarray  # points, from the left
    y: np.ndarray  # points, from the bottom
    color: Color
    width: float
    dash: tuple[float, float] | None = None  # (on, off) in points


@dataclass(frozen=True)
class Text:
    x: float
    y: float
    text: str
    size: float
    color: Color
    ha: str = "left"  # left, center, right
    va: str = "baseline"  # baseline, top, bottom, center
    rotation: int = 0  # 0 or 90


class Canvas:
    """A page of ``width`` x ``height`` points; primitives drawn in the order added (lines
    first, text above them)."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.lines: list[Line] = []
        self.texts: list[Text] = []

    def line(self, x: object, y: object, color: Color, width: float,
             dash: tuple[float, float] | None = None) -> None:
        self.lines.append(Line(np.asarray(x, float), np.asarray(y, float), color, width, dash))

    def text(self, x: float, y: float, text: str, size: float, color: Color = (0.0, 0.0, 0.0),
             ha: str = "left", va: str = "baseline", rotation: int = 0) -> None:
        self.texts.append(Text(x, y, text, size, color, ha, va, rotation))

    @staticmethod
    def text_width(text: str, size: float) -> float:
        return font().advance(text, size)

    # --- PNG ------------------------------------------------------------------------------
    def png(self, path: Path, dpi: float) -> None:
        from PIL import Image, ImageDraw

        k = dpi / 72
        ss = SUPERSAMPLE
        w, h = round(self.width * k), round(self.height * k)
        big = Image.new("RGB", (w * ss, h * ss), "white")
        draw = ImageDraw.Draw(big)
        for ln in self.lines:
            px = ln.x * k * ss
            py = (self.height - ln.y) * k * ss
            width = max(1, round(ln.width * k * ss))
            fill = _rgb255(ln.color)
            for sx, sy in _dashes(px, py, ln.dash, k * ss):
                if len(sx) > 1:
                    draw.line(list(zip(sx.tolist(), sy.tolist(), strict=True)), fill=fill,
                              width=width)
        img = big.reduce(ss)
        draw = ImageDraw.Draw(img)
        for t in self.texts:
            _png_text(img, draw, t, k, self.height)
        # NOTE: the dpi is written (pHYs), nothing else: no software name, no time.
        img.save(path, format="png", dpi=(dpi, dpi), compress_level=6)

    # --- PDF ------------------------------------------------------------------------------
    def pdf(self, path: Path) -> None:
        f = font()
        ops = ["1 J 1 j"]
        for ln in self.lines:
            if len(ln.x) < 2:
                continue
            ops.append(f"{_n(ln.width)} w {' '.join(_n(v) for v in ln.color)} RG "
                       + (f"[{_n(ln.dash[0])} {_n(ln.dash[1])}] 0 d 0 J" if ln.dash else "[] 0 d 1 J"))
            # NOTE: one %-format over the whole polyline: a call per number was most of the PDF.
            xy = tuple(np.column_stack([ln.x, ln.y]).ravel().tolist())
            ops.append(("%.2f %.2f m " + "%.2f %.2f l " * (len(ln.x) - 1) + "S") % xy)
        used: dict[int, int] = {}
        for t in self.texts:
            x, y = _anchor(t, f.advance(t.text, t.size), t.size)
            s = t.size / f.units_per_em
            ops.append(f"{' '.join(_n(v) for v in t.color)} rg")
            pen = 0.0
            for ch in t.text:
                g = f.glyph(ch)
                if f.contours(g):
                    used.setdefault(g, len(used))
                    if t.rotation == 90:
                        ops.append(f"q 0 {_n(s, 6)} {_n(-s, 6)} 0 {_n(x)} {_n(y + pen)} cm /G{g} Do Q")
                    else:
                        ops.append(f"q {_n(s, 6)} 0 0 {_n(s, 6)} {_n(x + pen)} {_n(y)} cm /G{g} Do Q")
                pen += f.width(g) * s
        content = "\n".join(ops).encode()
        objs: list[bytes] = []  # object n is objs[n - 1]
        objs.append(b"<< /Type /Catalog /Pages 2 0 R >>")
        objs.append(b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
        first_glyph = 5
        xobjects = " ".join(f"/G{g} {first_glyph + i} 0 R" for g, i in used.items())
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_n(self.width)} {_n(self.height)}] "
                    f"/Resources << /XObject << {xobjects} >> >> /Contents 4 0 R >>".encode())
        objs.append(_stream(content, ""))
        for g in used:
            path_ops = _glyph_ops(g)
            objs.append(_stream(path_ops.encode(), "/Type /XObject /Subtype /Form /BBox "
                                "[-2048 -2048 4096 4096]"))
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for i, body in enumerate(objs, 1):
            offsets.append(len(out))
            out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
        xref = len(out)
        out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
        out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
        out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
        path.write_bytes(bytes(out))


def _n(v: float, digits: int = 2) -> str:
    """A PDF number: fixed digits, no exponent, trailing zeros dropped."""
    s = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _stream(data: bytes, keys: str) -> bytes:
    z = zlib.compress(data, 6)
    return f"<< {keys} /Length {len(z)} /Filter /FlateDecode >>\nstream\n".encode() + z + b"\nendstream"


@functools.cache
def _glyph_ops(gid: int) -> str:
    """The glyph's outline as PDF path operators (quadratic steps as cubic Béziers), filled
    with the nonzero rule, as TrueType outlines are."""
    ops = []
    for contour in font().contours(gid):
        x0 = y0 = 0.0
        for kind, v in quadratic_path(contour):
            if kind == "M":
                x0, y0 = v
                ops.append(f"{_n(x0)} {_n(y0)} m")
            elif kind == "L":
                x0, y0 = v
                ops.append(f"{_n(x0)} {_n(y0)} l")
            else:
                cx, cy, x, y = v
                ops.append(f"{_n(x0 + 2 / 3 * (cx - x0))} {_n(y0 + 2 / 3 * (cy - y0))} "
                           f"{_n(x + 2 / 3 * (cx - x))} {_n(y + 2 / 3 * (cy - y))} {_n(x)} {_n(y)} c")
                x0, y0 = x, y
        ops.append("h")
    return " ".join(ops) + " f"


def _anchor(t: Text, width: float, size: float) -> tuple[float, float]:
    """The baseline origin of ``t`` in points (before rotation), from its alignment. Heights
    are DejaVu's: cap height 0.73 em, descent 0.24 em."""
    along = {"left": 0.0, "center": -width / 2, "right": -width}[t.ha]
    across = {"baseline": 0.0, "top": -0.76 * size, "bottom": 0.24 * size,
              "center": -0.365 * size}[t.va]
    if t.rotation == 90:  # text reads upwards: along is y, across is -x
        return t.x - across, t.y + along
    return t.x + along, t.y + across


def _rgb255(c: Color) -> tuple[int, int, int]:
    return (round(c[0] * 255), round(c[1] * 255), round(c[2] * 255))


def _dashes(x: np.ndarray, y: np.ndarray, dash: tuple[float, float] | None,
            scale: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """The polyline as it is drawn: whole, or cut into its dashes (straight lines only: the
    figure's dashed lines are vertical markers and legend samples)."""
    if dash is None or len(x) < 2:
        return [(x, y)]
    on, off = dash[0] * scale, dash[1] * scale
    out = []
    for i in range(len(x) - 1):
        length = float(np.hypot(x[i + 1] - x[i], y[i + 1] - y[i]))
        if length == 0:
            continue
        starts = np.arange(0.0, length, on + off)
        ends = np.minimum(starts + on, length)
        ux, uy = (x[i + 1] - x[i]) / length, (y[i + 1] - y[i]) / length
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            out.append((np.array([x[i] + ux * a, x[i] + ux * b]), np.array([y[i] + uy * a, y[i] + uy * b])))
    return out


@functools.cache
def _pil_font(px: int) -> object:
    from PIL import ImageFont

    # Basic layout (FreeType's kerning only, no shaping): the text as the PDF and
    # matplotlib's Agg lay it out, and no HarfBuzz.
    return ImageFont.truetype(str(font_path()), px, layout_engine=ImageFont.Layout.BASIC)


def _png_text(img: object, draw: object, t: Text, k: float, height: float) -> None:
    from PIL import Image, ImageDraw

    size_px = max(1, round(t.size * k))
    pil_font = _pil_font(size_px)
    # Aligned by the same metrics as the PDF, then drawn from the baseline ("ls").
    x, y = _anchor(t, font().advance(t.text, t.size), t.size)
    fill = _rgb255(t.color)
    if t.rotation == 0:
        draw.text((x * k, (height - y) * k), t.text, font=pil_font, fill=fill, anchor="ls")  # type: ignore[attr-defined]
        return
    w = round(font().advance(t.text, t.size) * k) + 2 * size_px
    mask = Image.new("L", (w, 2 * size_px))
    ImageDraw.Draw(mask).text((size_px, round(1.5 * size_px)), t.text, font=pil_font, fill=255, anchor="ls")
    mask = mask.rotate(90, expand=True)  # the baseline origin moves to (1.5 size, w - size)
    left = round(x * k - 1.5 * size_px)
    top = round((height - y) * k - (w - size_px))
    img.paste(Image.new("RGB", mask.size, fill), (left, top), mask)  # type: ignore[attr-defined]
