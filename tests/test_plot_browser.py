"""The SVG and HTML pictures rendered by a real headless browser: the screenshot shows the capacity line
where plot.svg_geometry puts it, and the peak label (read back by OCR when tesseract is installed).

Needs chromium (Debian: apt-get install chromium); skipped without it. tesseract (apt-get install
tesseract-ocr) adds the OCR check of the label's text; without it the label's box is checked for ink.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from vramcalc.cli import plot
from vramcalc.cli.pictures import step_chart_of
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
TESSERACT = shutil.which("tesseract")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


def read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """(width, height, rows of RGB) of an 8-bit RGB or RGBA, non-interlaced PNG (what chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[list[tuple[int, int, int]]] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # PNG filters (RFC 2083 §6)
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([(line[x], line[x + 1], line[x + 2]) for x in range(0, stride, channels)])
        prev = line
    return width, height, rows


def _screenshot(tmp_path: Path, name: str, text: str, width: int, height: int) -> Path:
    page = tmp_path / name
    page.write_text(text, encoding="utf-8")
    png = tmp_path / (name + ".png")
    assert CHROMIUM is not None
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},{height}",
                    f"--screenshot={png}", page.as_uri()], check=True, capture_output=True, timeout=120)
    return png


def _near(px: tuple[int, int, int], hex_colour: str, tol: int = 40) -> bool:
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= tol for a, b in zip(px, want, strict=True))


@pytest.mark.parametrize("fmt", ["svg", "html"])
def test_browser_shows_capacity_line_and_peak_label(fmt: str, tmp_path: Path) -> None:
    chart = step_chart_of(presets.find_model("mistral-7b"), TrainingSpec(), presets.find_gpu("rtx4090"), "GB")
    g = plot.svg_geometry(chart)
    text = plot.svg(chart) if fmt == "svg" else plot.html(chart)
    png = _screenshot(tmp_path, f"step.{fmt}", text, g.width, g.height + (120 if fmt == "html" else 0))
    _, _, rows = read_png(png.read_bytes())
    # The capacity line: a dashed (12 on, 4 off) 3-px red line at capacity_y, across the plot.
    y = g.capacity_y[0]
    span = range(g.plot_left, g.plot_right)
    red = max(sum(_near(rows[yy][x], plot.CAPACITY_HEX) for x in span) for yy in (y - 1, y, y + 1))
    assert red >= 0.6 * len(span), f"capacity line: {red} of {len(span)} pixels red at y={y}"
    # ... and not elsewhere: two rows well above it hold no such run of red.
    assert sum(_near(rows[y - 30][x], plot.CAPACITY_HEX) for x in span) < 0.1 * len(span)
    # The peak label: ink (dark pixels) inside the box svg_geometry reserves for it.
    assert g.mark_label_box is not None
    x0, y0, x1, y1 = g.mark_label_box
    ink = sum(1 for yy in range(y0, y1) for x in range(x0, x1) if sum(rows[yy][x]) < 200)
    assert ink > 100, f"peak label box {g.mark_label_box}: {ink} dark pixels"
    if TESSERACT is None:
        return
    ocr = subprocess.run([TESSERACT, str(png), "stdout"], capture_output=True, text=True, check=True).stdout
    # chart.mark_label is "peak 96.06 GB at backward end (embedding gradient)" (tests/test_timeline.py pins the point).
    assert "peak 96.06 GB at backward end (embedding gradient)" in " ".join(ocr.split()), ocr
    assert "RTX 4090 25.76 GB" in " ".join(ocr.split()), ocr
