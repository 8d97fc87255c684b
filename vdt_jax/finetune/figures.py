"""PNG figures drawn with Pillow: segmentation overlays and the label-efficiency plot."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vdt_jax.atomic import atomic_write

# Class colours (background has none); tab10-like.
PALETTE = np.array(
    [(0, 0, 0), (230, 85, 13), (49, 130, 189), (49, 163, 84), (117, 107, 177), (214, 39, 40), (140, 86, 75),
     (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127), (255, 187, 120), (152, 223, 138), (197, 176, 213)],
    np.uint8,
)
LINE_COLOURS = {"pretrained": (214, 39, 40), "scratch": (49, 130, 189)}
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)


def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _colour(index: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[index % len(PALETTE)])  # type: ignore[return-value]


def pick_slices(truth: np.ndarray | None, prediction: np.ndarray, count: int) -> list[int]:
    """Depth indices spread over the extent of the foreground (truth, else prediction, else the volume)."""
    for labels in (prediction,) if truth is None else (truth, prediction):
        depths = np.flatnonzero(np.any(labels > 0, axis=(1, 2)))
        if depths.size:
            break
    else:
        depths = np.arange(prediction.shape[0])
    quantiles = np.linspace(0.2, 0.8, count) if count > 1 else [0.5]
    return sorted({int(depths[int(round(q * (len(depths) - 1)))]) for q in quantiles})


def _grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    scaled = np.clip((image - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _overlay(grey: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    colours = PALETTE[labels % len(PALETTE)].astype(np.float32)
    mixed = np.where(labels[..., None] > 0, (1 - alpha) * grey + alpha * colours, grey)
    return mixed.astype(np.uint8)


def segmentation_overlay(
    path: str,
    image: np.ndarray,
    truth: np.ndarray | None,
    prediction: np.ndarray,
    class_names: Sequence[str],
    *,
    num_slices: int = 3,
    title: str = "",
) -> None:
    """Write a PNG: per axial slice, the image, the ground truth overlay (if given) and the prediction overlay.

    Args:
      path: the .png to write (atomically).
      image: (D, H, W) model-space intensities (depth = inferior->superior,
        H = posterior->anterior, W = left->right); shown in radiological
        convention (anterior up, patient's right on the left).
      truth, prediction: (D, H, W) integer label maps on the same grid (truth None: no truth column).
      class_names: names of the classes, background first (for the legend).
      num_slices: rows of the figure.
      title: a line above the panels.
    """
    slices = pick_slices(truth, prediction, num_slices)
    height, width = image.shape[1:3]
    scale = max(1, int(np.ceil(160 / max(height, width))))
    panel_h, panel_w = height * scale, width * scale
    header, footer, gap = 36, 28, 6
    columns = ("image", "prediction") if truth is None else ("image", "ground truth", "prediction")
    canvas = Image.new("RGB", (len(columns) * panel_w + (len(columns) + 1) * gap, header + len(slices) * (panel_h + gap) + footer), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 2), title, fill=BLACK, font=_font(12))
    for col, name in enumerate(columns):
        draw.text((gap + col * (panel_w + gap), 18), name, fill=BLACK, font=_font(12))
    for row, d in enumerate(slices):
        view = np.s_[d, ::-1, ::-1]  # radiological display
        grey = _grey(image[view])
        overlays = [labels for labels in (truth, prediction) if labels is not None]
        panels = (grey, *(_overlay(grey, labels[view].astype(np.int64)) for labels in overlays))
        y = header + row * (panel_h + gap)
        for col, panel in enumerate(panels):
            tile = Image.fromarray(panel).resize((panel_w, panel_h), Image.NEAREST)
            canvas.paste(tile, (gap + col * (panel_w + gap), y))
        draw.text((gap + 2, y + 2), f"slice {d}", fill=(255, 255, 0), font=_font(11))
    x = gap
    for index, name in enumerate(class_names[1:], start=1):
        draw.rectangle((x, canvas.height - 20, x + 12, canvas.height - 8), fill=_colour(index))
        draw.text((x + 16, canvas.height - 22), name, fill=BLACK, font=_font(12))
        x += 24 + int(draw.textlength(name, font=_font(12)))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def label_efficiency_plot(
    path: str, series: dict[str, list[tuple[float, float, float]]], *, metric: str, title: str = ""
) -> None:
    """Write a PNG line plot of metric vs training fraction (log2 x axis), one line per initialisation.

    Args:
      path: the .png to write (atomically).
      series: name -> [(fraction, mean, std)], e.g. {"pretrained": [...], "scratch": [...]}.
      metric: the y axis label.
      title: the line above the plot.
    """
    size, margin = (640, 440), (70, 40, 30, 80)  # left, top, right, bottom
    canvas = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(canvas)
    points = [p for values in series.values() for p in values]
    fractions = sorted({p[0] for p in points})
    lows = [p[1] - p[2] for p in points if np.isfinite(p[1])]
    highs = [p[1] + p[2] for p in points if np.isfinite(p[1])]
    y_low, y_high = (min(lows), max(highs)) if lows else (0.0, 1.0)
    pad = max((y_high - y_low) * 0.1, 0.02)
    y_low, y_high = max(y_low - pad, 0.0), min(y_high + pad, 1.0) if y_high <= 1.0 else y_high + pad
    left, top, right, bottom = margin[0], margin[1], size[0] - margin[2], size[1] - margin[3]
    x_of = _log_axis(fractions, left + 20, right - 20)

    def y_of(value: float) -> float:
        return bottom - (value - y_low) / max(y_high - y_low, 1e-9) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=BLACK)
    for tick in np.linspace(y_low, y_high, 6):
        y = y_of(tick)
        draw.line((left, y, right, y), fill=GREY)
        draw.text((left - 48, y - 7), f"{tick:.3f}", fill=BLACK, font=_font(11))
    for fraction in fractions:
        draw.text((x_of(fraction) - 14, bottom + 6), f"{fraction:g}", fill=BLACK, font=_font(11))
    draw.text(((left + right) / 2 - 90, bottom + 26), "fraction of training cases (log scale)", fill=BLACK, font=_font(12))
    draw.text((left, 8), title or f"{metric} vs labelled data", fill=BLACK, font=_font(13))
    draw.text((8, top - 20), metric, fill=BLACK, font=_font(12))
    for index, (name, values) in enumerate(series.items()):
        colour = LINE_COLOURS.get(name, _colour(index + 1))
        xy = [(x_of(f), y_of(m)) for f, m, _ in sorted(values) if np.isfinite(m)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for (f, m, s), (x, y) in zip(sorted(values), xy):
            if s > 0:
                draw.line((x, y_of(m - s), x, y_of(m + s)), fill=colour, width=1)
            draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=colour)
        x = left + 140 * index  # legend under the axis label, clear of the data
        draw.line((x, size[1] - 14, x + 25, size[1] - 14), fill=colour, width=3)
        draw.text((x + 30, size[1] - 21), name, fill=BLACK, font=_font(12))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def _log_axis(values: list[float], low: float, high: float):
    logs = np.log2(values) if values else np.zeros(1)
    span = max(float(logs.max() - logs.min()), 1e-9)

    def x_of(value: float) -> float:
        return low + (np.log2(value) - logs.min()) / span * (high - low) if len(values) > 1 else (low + high) / 2

    return x_of
