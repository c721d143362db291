"""Small line plots drawn with PIL only (no plotting library dependency), written atomically as PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

#: Line colours (colour-blind friendly "Okabe-Ito" palette), used in order.
PALETTE = [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (0, 0, 0), (240, 228, 66)]

#: PNG text chunk written into every plot, so a later run can tell its own old plot from a user's file.
MARKER_KEY = "dsgan-cli"


def _font(size: int) -> ImageFont.ImageFont:
    """PIL's bundled font at ``size`` px (bitmap fallback on builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    """Width and height of ``text`` in pixels."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick positions (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def _fmt(v: float) -> str:
    """Compact tick label."""
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:.4g}"


def _finite_points(xs: Sequence[float], ys: Sequence[float], logy: bool) -> list[tuple[float, float] | None]:
    """Points to draw; ``None`` breaks the line (non-finite values, or y <= 0 on a log axis)."""
    pts: list[tuple[float, float] | None] = []
    for x, y in zip(xs, ys):
        x, y = float(x), float(y)
        if not (math.isfinite(x) and math.isfinite(y)) or (logy and y <= 0):
            pts.append(None)
        else:
            pts.append((x, math.log10(y) if logy else y))
    return pts


def render_line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", xlabel: str = "",
                     ylabel: str = "", logy: bool = False, size: tuple[int, int] = (800, 500)) -> Image.Image:
    """Draw ``series`` ({label: (xs, ys)}) as lines with axes, ticks, labels and a legend; returns the RGB image."""
    width, height = size
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small, big = _font(14), _font(12), _font(16)

    lines = {name: _finite_points(xs, ys, logy) for name, (xs, ys) in series.items()}
    all_pts = [p for pts in lines.values() for p in pts if p is not None]
    if all_pts:
        x_lo, x_hi = min(p[0] for p in all_pts), max(p[0] for p in all_pts)
        y_lo, y_hi = min(p[1] for p in all_pts), max(p[1] for p in all_pts)
    else:
        x_lo, x_hi, y_lo, y_hi = 0.0, 1.0, 0.0, 1.0
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    if y_hi <= y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = (y_hi - y_lo) * 0.05
    y_lo, y_hi = y_lo - pad, y_hi + pad

    if logy:
        decades = list(range(math.ceil(y_lo), math.floor(y_hi) + 1))
        step = max(1, math.ceil(len(decades) / 8))
        y_ticks = [float(d) for d in decades[::step]] or nice_ticks(y_lo, y_hi)
        y_labels = [f"1e{int(t)}" if float(t).is_integer() else f"{10 ** t:.2g}" for t in y_ticks]
    else:
        y_ticks = nice_ticks(y_lo, y_hi)
        y_labels = [_fmt(t) for t in y_ticks]
    x_ticks = nice_ticks(x_lo, x_hi)

    label_w = max((_text_size(draw, s, small)[0] for s in y_labels), default=20)
    left = 24 + label_w + 12
    right, top, bottom = width - 20, 44 if title else 20, height - 56
    if right - left < 50 or bottom - top < 50:
        raise ValueError(f"plot size {size} is too small")

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top)

    grid = (225, 225, 225)
    for t, s in zip(y_ticks, y_labels):
        y = py(t)
        draw.line([(left, y), (right, y)], fill=grid)
        draw.line([(left - 5, y), (left, y)], fill="black")
        tw, th = _text_size(draw, s, small)
        draw.text((left - 8 - tw, y - th / 2 - 2), s, fill="black", font=small)
    for t in x_ticks:
        x = px(t)
        draw.line([(x, top), (x, bottom)], fill=grid)
        draw.line([(x, bottom), (x, bottom + 5)], fill="black")
        s = _fmt(t)
        tw, _ = _text_size(draw, s, small)
        draw.text((x - tw / 2, bottom + 8), s, fill="black", font=small)
    draw.rectangle([left, top, right, bottom], outline="black")

    if title:
        tw, _ = _text_size(draw, title, big)
        draw.text(((width - tw) / 2, 12), title, fill="black", font=big)
    if xlabel:
        tw, _ = _text_size(draw, xlabel, font)
        draw.text(((left + right - tw) / 2, height - 26), xlabel, fill="black", font=font)
    if ylabel:
        text = ylabel + (" (log scale)" if logy else "")
        tw, th = _text_size(draw, text, font)
        label = Image.new("RGBA", (tw + 4, th + 8), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((2, 0), text, fill="black", font=font)
        label = label.rotate(90, expand=True)
        img.paste(label, (4, int((top + bottom - label.height) / 2)), label)

    colours = {}
    for i, (name, pts) in enumerate(lines.items()):
        colour = colours[name] = PALETTE[i % len(PALETTE)]
        segment: list[tuple[float, float]] = []
        for p in pts + [None]:
            if p is None:
                if len(segment) == 1:
                    x, y = segment[0]
                    draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
                elif segment:
                    draw.line(segment, fill=colour, width=2, joint="curve")
                segment = []
            else:
                segment.append((px(p[0]), py(p[1])))

    if series:
        entries = [(name, colours[name]) for name in series]
        box_w = max(_text_size(draw, name, font)[0] for name, _ in entries) + 44
        line_h = 20
        x0, y0 = right - box_w - 10, top + 10
        draw.rectangle([x0, y0, x0 + box_w, y0 + line_h * len(entries) + 8], fill="white", outline=(160, 160, 160))
        for i, (name, colour) in enumerate(entries):
            y = y0 + 6 + i * line_h + line_h / 2
            draw.line([(x0 + 8, y), (x0 + 30, y)], fill=colour, width=3)
            _, th = _text_size(draw, name, font)
            draw.text((x0 + 36, y - th / 2 - 3), name, fill="black", font=font)
    return img


def is_own_plot(path: str | Path) -> bool:
    """True when ``path`` is a PNG this package wrote (it carries the ``dsgan-cli`` text chunk)."""
    try:
        with Image.open(path) as im:
            return im.format == "PNG" and MARKER_KEY in getattr(im, "text", {})
    except (OSError, ValueError):
        return False


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *, title: str = "",
              xlabel: str = "", ylabel: str = "", logy: bool = False, size: tuple[int, int] = (800, 500),
              kind: str = "plot") -> Path:
    """Draw ``series`` ({label: (xs, ys)}) and write it to ``path`` as PNG atomically; returns the path.

    ``logy`` draws y on a log10 axis (points with y <= 0 are left out).
    ``kind`` is stored in the PNG's ``dsgan-cli`` text chunk.
    """
    from .images import write_bytes_atomic

    img = render_line_plot(series, title=title, xlabel=xlabel, ylabel=ylabel, logy=logy, size=size)
    info = PngImagePlugin.PngInfo()
    info.add_text(MARKER_KEY, kind)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path
