"""Glyph outlines and advance widths of a TrueType font, read with ``struct``: the text of
latency.pdf is drawn as these outlines (metrics/canvas.py), so the PDF needs no embedded font
program, no font subsetting (fontTools) and no font a reader may lack.

Only what the figure needs is read: ``head``, ``hhea``, ``hmtx``, ``maxp``, ``cmap`` (format
4, Unicode BMP), ``loca`` and ``glyf`` (simple and composite glyphs, offsets only). A
character the font lacks is drawn as the font's missing glyph (glyph 0).
"""

from __future__ import annotations

import bisect
import functools
import importlib.util
import struct
from pathlib import Path

# A contour: its points as (x, y, on_curve), in font units.
Contour = list[tuple[int, int, bool]]


def font_path() -> Path:
    """DejaVu Sans, the font of matplotlib's default style, from matplotlib's own data (found
    without importing matplotlib: its import costs 0.1-0.3 s)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("matplotlib is not installed: its DejaVu Sans draws the figure")
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"


class Font:
    """A TrueType font's cmap, advance widths and outlines (glyphs parsed on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes()
        self.data = data
        n = struct.unpack_from(">H", data, 4)[0]
        self.tables = {data[12 + 16 * i:16 + 16 * i].decode("latin-1"):
                       struct.unpack_from(">II", data, 20 + 16 * i) for i in range(n)}
        head = self.tables["head"][0]
        self.units_per_em = struct.unpack_from(">H", data, head + 18)[0]
        self.long_loca = struct.unpack_from(">h", data, head + 50)[0] == 1
        hhea = self.tables["hhea"][0]
        self.ascent, self.descent = struct.unpack_from(">hh", data, hhea + 4)
        self.n_metrics = struct.unpack_from(">H", data, hhea + 34)[0]
        self.long_loca_at = self.tables["loca"][0]
        self._segments()

    def _segments(self) -> None:
        data = self.data
        cmap = self.tables["cmap"][0]
        n = struct.unpack_from(">H", data, cmap + 2)[0]
        for i in range(n):
            platform, encoding, offset = struct.unpack_from(">HHI", data, cmap + 4 + 8 * i)
            sub = cmap + offset
            if (platform, encoding) in ((3, 1), (0, 3)) and struct.unpack_from(">H", data, sub)[0] == 4:
                break
        else:
            raise ValueError(f"{self.path}: no Unicode BMP cmap (format 4)")
        segs = struct.unpack_from(">H", data, sub + 6)[0] // 2
        self.ends = struct.unpack_from(f">{segs}H", data, sub + 14)
        self.starts = struct.unpack_from(f">{segs}H", data, sub + 16 + 2 * segs)
        self.deltas = struct.unpack_from(f">{segs}h", data, sub + 16 + 4 * segs)
        self.ro_at = sub + 16 + 6 * segs
        self.offsets = struct.unpack_from(f">{segs}H", data, self.ro_at)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (one Font per process: font() caches it)
    def glyph(self, ch: str) -> int:
        """The glyph index of a character (0, the missing glyph, if the font lacks it)."""
        c = ord(ch)
        k = bisect.bisect_left(self.ends, c)
        if k == len(self.ends) or self.starts[k] > c:
            return 0
        if self.offsets[k] == 0:
            return (c + self.deltas[k]) & 0xFFFF
        at = self.ro_at + 2 * k + self.offsets[k] + 2 * (c - self.starts[k])
        g = struct.unpack_from(">H", self.data, at)[0]
        return (g + self.deltas[k]) & 0xFFFF if g else 0

    def width(self, gid: int) -> int:
        """The glyph's advance width in font units (hmtx)."""
        i = min(gid, self.n_metrics - 1)
        return struct.unpack_from(">H", self.data, self.tables["hmtx"][0] + 4 * i)[0]

    def _loca(self, gid: int) -> tuple[int, int]:
        if self.long_loca:
            return struct.unpack_from(">II", self.data, self.long_loca_at + 4 * gid)
        a, b = struct.unpack_from(">HH", self.data, self.long_loca_at + 2 * gid)
        return 2 * a, 2 * b

    def advance(self, text: str, size: float) -> float:
        """The width of ``text`` at ``size`` (no kerning)."""
        return sum(self.width(self.glyph(c)) for c in text) * size / self.units_per_em

    @functools.lru_cache(maxsize=512)  # noqa: B019 (one Font per process: font() caches it)
    def contours(self, gid: int) -> list[Contour]:
        """The glyph's closed contours in font units (composite glyphs resolved)."""
        glyf = self.tables["glyf"][0]
        start, end = self._loca(gid)
        if end <= start:
            return []
        data, at = self.data, glyf + start
        n_contours = struct.unpack_from(">h", data, at)[0]
        if n_contours < 0:
            return self._composite(at + 10)
        ends = struct.unpack_from(f">{n_contours}H", data, at + 10)
        n_points = ends[-1] + 1 if n_contours else 0
        p = at + 10 + 2 * n_contours
        p += 2 + struct.unpack_from(">H", data, p)[0]  # instructions: skipped
        flags: list[int] = []
        while len(flags) < n_points:
            f = data[p]
            p += 1
            flags.append(f)
            if f & 8:
                flags.extend([f] * data[p])
                p += 1
        coords = []
        for short, same in ((2, 16), (4, 32)):  # x, then y
            v, vals = 0, []
            for f in flags:
                if f & short:
                    d = data[p]
                    p += 1
                    v += d if f & same else -d
                elif not f & same:
                    v += struct.unpack_from(">h", data, p)[0]
                    p += 2
                vals.append(v)
            coords.append(vals)
        out, first = [], 0
        for last in ends:
            out.append([(coords[0][i], coords[1][i], bool(flags[i] & 1)) for i in range(first, last + 1)])
            first = last + 1
        return out

    def _composite(self, p: int) -> list[Contour]:
        data, out = self.data, []
        while True:
            flags, gid = struct.unpack_from(">HH", data, p)
            p += 4
            if flags & 1:
                dx, dy = struct.unpack_from(">hh", data, p)
                p += 4
            else:
                dx, dy = struct.unpack_from(">bb", data, p)
                p += 2
            if not flags & 2:  # point matching, not offsets: not in DejaVu's text glyphs
                dx = dy = 0
            p += 2 if flags & 8 else 4 if flags & 0x40 else 8 if flags & 0x80 else 0
            out += [[(x + dx, y + dy, on) for x, y, on in c] for c in self.contours(gid)]
            if not flags & 0x20:
                return out


@functools.cache
def font() -> Font:
    """The figure's font, read once per process."""
    return Font(font_path())


def quadratic_path(contour: Contour) -> list[tuple[str, tuple[float, ...]]]:
    """A TrueType contour as ("M", (x, y)), ("L", (x, y)) and ("Q", (cx, cy, x, y)) steps,
    closed: consecutive off-curve points imply an on-curve point halfway between them."""
    n = len(contour)
    if n == 0:
        return []
    start = next((i for i, pt in enumerate(contour) if pt[2]), None)
    if start is None:  # all off-curve: start halfway between the first two
        (x0, y0, _), (x1, y1, _) = contour[0], contour[1 % n]
        pts = [((x0 + x1) / 2, (y0 + y1) / 2, True), *contour[1:], contour[0]]
    else:
        pts = contour[start:] + contour[:start]
    steps: list[tuple[str, tuple[float, ...]]] = [("M", (pts[0][0], pts[0][1]))]
    ctrl: tuple[float, float] | None = None
    for x, y, on in [*pts[1:], pts[0]]:
        if on:
            steps.append(("Q", (*ctrl, x, y)) if ctrl else ("L", (x, y)))
            ctrl = None
        elif ctrl is None:
            ctrl = (x, y)
        else:
            mx, my = (ctrl[0] + x) / 2, (ctrl[1] + y) / 2
            steps.append(("Q", (*ctrl, mx, my)))
            ctrl = (x, y)
    return steps
