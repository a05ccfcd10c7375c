"""The run's latency.png and latency.pdf, drawn without matplotlib (metrics/latency_canvas.py):
the font's metrics and outlines, the ticks, a well-formed PDF that needs no font, and the
same bytes for the same run."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

import simkv
from simkv.metrics.canvas import Canvas, rgb
from simkv.metrics.glyphs import font, font_path, quadratic_path
from simkv.metrics.latency_canvas import SLO, Axis, nice_ticks, tick_label
from tests.conftest import small


def test_glyph_widths_and_outlines_are_the_fonts() -> None:
    from PIL import ImageFont

    f = font()
    text = "TTFT (ms) fraction of requests 0.25 1,000 p99 SLO 2000 ms"
    # At one pixel per font unit FreeType's advance of a character is its hmtx width.
    freetype = ImageFont.truetype(str(font_path()), f.units_per_em)
    assert f.advance(text, f.units_per_em) == sum(freetype.getlength(c) for c in text)
    # Outlines: "o" and "i" have two contours, "l" one, a space none; every contour closes.
    assert [len(f.contours(f.glyph(c))) for c in "oil "] == [2, 2, 1, 0]
    for contour in f.contours(f.glyph("8")):
        steps = quadratic_path(contour)
        assert steps[0][0] == "M"
        assert steps[-1][1][-2:] == steps[0][1]
    assert f.glyph("\u4e00") == 0  # not in DejaVu Sans: its missing glyph


def test_ticks_are_matplotlibs_steps() -> None:
    ticks = nice_ticks(-0.05, 1.05, 9)
    assert ticks == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert [tick_label(t, ticks) for t in ticks] == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    ticks = nice_ticks(-1200.0, 25500.0, 6)
    assert ticks == [0, 5000, 10000, 15000, 20000, 25000]
    assert tick_label(5000, ticks) == "5000"
    ticks = nice_ticks(3.6, 4.45, 4)
    assert [tick_label(t, ticks) for t in ticks] == ["3.75", "4.00", "4.25"]
    # Log axes: decades in plain text, with 2 and 5 times them when under two decades show.
    assert Axis(10.0, 20000.0, True).ticks(9)[1] == ["10", "100", "1,000", "10,000"]
    assert Axis(8.0, 500.0, True).ticks(9)[1] == ["10", "20", "50", "100", "200", "500"]


def test_long_tick_labels_are_fewer_not_overlapping() -> None:
    from simkv.metrics.latency_canvas import TICK, Panel

    c = Canvas(720, 540)
    panel = Panel(c, (54.0, 300.0, 280.0, 200.0))
    ticks, labels = panel.x_ticks(Axis(1_000_000.0, 9_000_000.0, False))
    assert labels == ["2000000", "4000000", "6000000", "8000000"]  # 9 would not fit
    assert sum(c.text_width(s, TICK) + TICK for s in labels) <= 280.0
    short = panel.x_ticks(Axis(0.0, 90.0, False))[0]
    assert len(short) > len(ticks)  # short labels keep matplotlib's number of ticks


def _objects(pdf: bytes) -> dict[int, bytes]:
    """The PDF's objects by number, read through its xref table (which must be exact)."""
    start = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
    assert pdf[start:start + 4] == b"xref"
    lines = pdf[start:].split(b"\n")
    count = int(lines[1].split()[1])
    out = {}
    for n in range(1, count):
        offset = int(lines[2 + n].split()[0])
        assert pdf[offset:].startswith(f"{n} 0 obj\n".encode()), n
        out[n] = pdf[offset:pdf.index(b"endobj", offset)]
    return out


def _stream(obj: bytes) -> bytes:
    length = int(re.search(rb"/Length (\d+)", obj).group(1))  # type: ignore[union-attr]
    data = obj[obj.index(b"stream\n") + 7:]
    assert data[length:length + 10] == b"\nendstream"
    return zlib.decompress(data[:length])


def test_pdf_is_well_formed_and_draws_text_as_outlines(tmp_path: Path) -> None:
    c = Canvas(200, 100)
    c.line([10, 190], [10, 90], rgb("#0072B2"), 1.5)
    c.line([50, 50], [10, 90], rgb("#808080"), 0.8, dash=(0.8, 1.3))
    c.text(100, 50, "p50 (ms)", 8, ha="center", va="center")
    c.text(20, 50, "up", 9, rotation=90)
    c.pdf(tmp_path / "f.pdf")
    pdf = (tmp_path / "f.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-1.4")
    assert pdf.endswith(b"%%EOF\n")
    objs = _objects(pdf)
    assert b"/MediaBox [0 0 200 100]" in objs[3]
    assert b"/Font" not in pdf  # no font to embed, subset or lack
    content = _stream(objs[4]).decode()
    # One glyph drawn per visible character; the distinct ones are form XObjects.
    assert content.count(" Do Q") == len("p50(ms)up")
    assert len(re.findall(r"/G\d+ \d+ 0 R", objs[3].decode())) == len(set("p50(ms)up"))
    assert "[0.8 1.3] 0 d" in content
    for n in range(5, len(objs) + 1):
        assert _stream(objs[n]).rstrip().endswith(b" f")  # each glyph a filled outline


@pytest.mark.slow
def test_a_runs_figure_is_drawn_the_same_twice_and_shows_its_slo(tmp_path: Path) -> None:
    from PIL import Image

    from simkv.runner import draw_latency

    cfg = small(["output.plot=true", "slo.ttft_s=0.5"])
    simkv.simulate(cfg, tmp_path / "a")
    simkv.simulate(cfg, tmp_path / "b")
    for name in ("latency.png", "latency.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    img = Image.open(tmp_path / "a" / "latency.png")
    assert img.size == (1100, 825)  # 10 x 7.5 in at 110 dpi, as before
    pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    slo = np.round(np.array(rgb(SLO)) * 255)
    assert (np.abs(pixels - slo).sum(axis=1) < 10).sum() > 100  # the TTFT SLO line is drawn
    # The SLO's label is in the PDF's text: its glyphs are drawn (one Do per character).
    content = _stream(_objects((tmp_path / "a" / "latency.pdf").read_bytes())[4]).decode()
    assert content.count(" Do Q") > 300
    # Redrawn from the same folder, the same bytes.
    doc = json.loads((tmp_path / "a" / "config.json").read_text())
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    draw_latency(tmp_path / "a", summary, doc)
    assert (tmp_path / "a" / "latency.png").read_bytes() == (tmp_path / "b" / "latency.png").read_bytes()


def test_the_canvas_repeats_the_styles_colours_and_dpi() -> None:
    """latency_canvas repeats simkv.mplstyle's values (it must not import matplotlib): a
    change of the style must reach both the run's files and the notebooks' figure."""
    from simkv.metrics import latency_canvas, style

    assert tuple(c.lower() for c in latency_canvas.PALETTE) == style.PALETTE[:2]
    assert latency_canvas.SLO == style.SLO
    assert latency_canvas.DPI == style.DPI
    assert rgb("#b0b0b0", float(style.RC["grid.alpha"])) == latency_canvas.GRID
