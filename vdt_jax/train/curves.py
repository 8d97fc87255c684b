"""`curves.png`: a run's training curves drawn from its metrics.jsonl with Pillow (no plotting library).

Three panels against the step: the loss (training, and evaluation where the
task reports one), the learning rate, and the evaluation scores (top-1/top-5,
accuracy and ROC AUC, or Dice per class and their mean). The reporter redraws
the file after every evaluation; for interactive plots open the TensorBoard
events in `<workdir>/tensorboard` (README, "Training curves").
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from vdt_jax import storage
from vdt_jax.atomic import atomic_write  # a gs:// path is written locally, then uploaded whole

SCORE_KEYS = ("accuracy", "auc", "mean_dice")  # after every top<k>, before every dice/<class>
MAX_SCORES = 8
COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (215, 215, 215)
Series = dict[str, list[tuple[float, float]]]


def read_metrics(path: str) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a metrics.jsonl, one per step (a resumed run's repeated steps: the last)."""
    by_split: dict[str, dict[int, dict]] = {"train": {}, "eval": {}}
    for line in storage.read_text(path).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if record.get("split") in by_split and "step" in record:
            by_split[record["split"]][int(record["step"])] = record
    train, evaluation = by_split["train"], by_split["eval"]
    return [train[k] for k in sorted(train)], [evaluation[k] for k in sorted(evaluation)]


def _series(records: list[dict], keys: Sequence[str], prefix: str = "") -> Series:
    out: Series = {}
    for key in keys:
        points = [(float(r["step"]), float(r[key])) for r in records if key in r and math.isfinite(float(r[key]))]
        if points:
            out[prefix + key] = points
    return out


def score_keys(eval_records: list[dict]) -> list[str]:
    present = {k for r in eval_records for k in r}
    top_k = sorted((k for k in present if re.fullmatch(r"top\d+", k)), key=lambda k: int(k[3:]))
    keys = top_k + [k for k in SCORE_KEYS if k in present] + sorted(k for k in present if k.startswith("dice/"))
    return keys[:MAX_SCORES]


def write_curves(metrics_path: str, out_path: str, title: str = "") -> bool:
    """Draw `out_path` (PNG, atomically) from `metrics_path` (both local or gs://); False when there is nothing to draw yet."""
    if not storage.exists(metrics_path):
        return False
    train, evaluation = read_metrics(metrics_path)
    panels = [
        ("loss", {**_series(train, ["loss"], "train "), **_series(evaluation, ["loss"], "eval ")}),
        ("learning rate", _series(train, ["learning_rate"])),
        ("evaluation", _series(evaluation, score_keys(evaluation))),
    ]
    panels = [(name, series) for name, series in panels if series]
    if not panels:
        return False
    width, panel_height, top = 720, 230, 30
    canvas = Image.new("RGB", (width, top + panel_height * len(panels)), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 8), title or os.path.dirname(storage.absolute(metrics_path)), fill=BLACK, font=_font(13))
    steps = [p[0] for _, series in panels for points in series.values() for p in points]
    x_range = (min(steps), max(max(steps), min(steps) + 1))
    for i, (name, series) in enumerate(panels):
        _panel(draw, (70, top + i * panel_height + 20, width - 170, top + (i + 1) * panel_height - 30), name, series, x_range)
    atomic_write(out_path, lambda tmp: canvas.save(tmp, format="PNG"))
    return True


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], name: str, series: Series, x_range) -> None:
    """One panel: frame, y ticks, step ticks, one line (and points) per series, legend on the right."""
    left, top, right, bottom = box
    values = [v for points in series.values() for _, v in points]
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - x_range[0]) / (x_range[1] - x_range[0]) * (right - left)
        return x, bottom - (value - low) / (high - low) * (bottom - top)

    draw.rectangle(box, outline=BLACK)
    draw.text((left, top - 16), name, fill=BLACK, font=_font(12))
    for k in range(5):
        value = low + (high - low) * k / 4
        y = xy(x_range[0], value)[1]
        draw.line((left, y, right, y), fill=GREY)
        draw.text((4, y - 6), f"{value:.3g}", fill=BLACK, font=_font(10))
    for step in sorted({round(x_range[0] + (x_range[1] - x_range[0]) * k / 4) for k in range(5)}):
        draw.text((xy(step, low)[0] - 10, bottom + 4), str(step), fill=BLACK, font=_font(10))
    for index, (label, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = [xy(s, v) for s, v in points]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for x, y in coords if len(coords) <= 60 else coords[-1:]:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=colour)
        legend_y = top + 4 + 15 * index
        draw.line((right + 10, legend_y + 6, right + 30, legend_y + 6), fill=colour, width=3)
        draw.text((right + 34, legend_y), f"{label} {points[-1][1]:.4g}", fill=BLACK, font=_font(11))
    draw.text((right - 30, bottom + 14), "step", fill=BLACK, font=_font(10))
