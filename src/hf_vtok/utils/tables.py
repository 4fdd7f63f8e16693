"""Writing evaluation results: JSON, a markdown table, a metric plot and image grids (PNG)."""

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .outputs import atomic_path

# metric key -> (column title, which direction is better)
METRIC_TITLES = {
    "psnr": ("PSNR", "↑"),
    "ssim": ("SSIM", "↑"),
    "lpips": ("LPIPS", "↓"),
    "rfid": ("rFID", "↓"),
    "fdd": ("FDD", "↓"),
    "gfid": ("gFID", "↓"),
    "is": ("IS", "↑"),
}
_DIGITS = {"psnr": 2, "ssim": 4, "lpips": 4, "rfid": 2, "fdd": 2, "gfid": 2, "is": 2}


def _json_ready(value):
    """inf / nan are not JSON: they are written as null (e.g. PSNR of a lossless reconstruction is inf)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(results: dict, path: Path) -> Path:
    """``results`` as JSON (inf / nan as null), written atomically."""
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(_json_ready(results), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def format_value(metric: str, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:.{_DIGITS.get(metric, 4)}f}"


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str]], metrics: Sequence[str]) -> str:
    """``columns``: leading ``(key, title)`` pairs (model, tokens, ...); then one column per metric, with
    ``± <metric>_std`` where the row has one (the Inception Score's spread over splits)."""
    titles = [title for _, title in columns] + [
        " ".join(METRIC_TITLES.get(m, (m.upper(), ""))).strip() for m in metrics
    ]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [str(row.get(key, "")) for key, _ in columns]
        for metric in metrics:
            spread = row.get(f"{metric}_std")
            suffix = f" ± {format_value(metric, spread)}" if spread is not None and math.isfinite(spread) else ""
            cells.append(format_value(metric, row.get(metric)) + suffix)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(
    rows: Sequence[dict],
    metrics: Sequence[str],
    path: Path,
    x_key: str,
    x_label: str,
    label_key: str,
    title: str = "",
    log_x: bool | None = None,
) -> Path:
    """One panel per metric: ``row[x_key]`` against the metric, a labelled point (and a line) per ``label_key``.
    ``log_x=None`` uses a log2 axis when the x values span a factor of 4 or more (token counts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(metrics), 3)
    lines = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(str(row[label_key]), []).append(row)
    xs = [float(row[x_key]) for row in rows if row.get(x_key) is not None]
    if log_x is None:
        log_x = bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= 4
    for axis, metric in zip(axes.flat, metrics):
        name, better = METRIC_TITLES.get(metric, (metric, ""))
        for label, points in series.items():
            points = [
                p
                for p in points
                if p.get(metric) is not None and math.isfinite(p[metric]) and p.get(x_key) is not None
            ]
            points.sort(key=lambda p: p[x_key])
            if not points:
                continue
            x = [p[x_key] for p in points]
            y = [p[metric] for p in points]
            axis.plot(x, y, marker="o", label=label)
            if len(series) > 1 and len(points) == 1:
                axis.annotate(label, (x[0], y[0]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if log_x:
            axis.set_xscale("log", base=2)
        axis.set_xlabel(x_label)
        axis.set_ylabel(f"{name} ({better} better)" if better else name)
        axis.grid(True, alpha=0.3)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.95 if title else 1))
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(figure)
    return path


def _to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def center_crop_tensor(image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    size = min(size, height, width)
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size]


def image_grid(
    rows: Sequence[tuple[str, Sequence[torch.Tensor]]], path: Path, cell: int = 128, crop: int | None = None
) -> Path:
    """Labelled rows of ``[3, H, W]`` images in [0, 1]; each image is center-cropped to ``crop`` pixels (at
    native scale, so detail is visible) and shown in a ``cell`` x ``cell`` square."""
    label_width, gap = 110, 2
    columns = max(len(images) for _, images in rows)
    canvas = Image.new("RGB", (label_width + columns * (cell + gap), len(rows) * (cell + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for row_index, (label, images) in enumerate(rows):
        top = row_index * (cell + gap)
        text = label if len(label) <= 16 else label[:15] + "…"
        draw.text((4, top + cell // 2 - 6), text, fill="black")
        for column, image in enumerate(images):
            if crop is not None:
                image = center_crop_tensor(image, crop)
            tile = Image.fromarray(_to_uint8_hwc(image))
            if tile.size != (cell, cell):
                scale = cell / max(tile.size)
                resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
                tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))), resample)
            canvas.paste(tile, (label_width + column * (cell + gap), top))
    with atomic_path(path) as partial:
        canvas.save(partial, format=Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))
    return path
