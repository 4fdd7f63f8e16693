"""Loss curves: a CSV file appended every logging step, and a PNG plot of every column drawn at the end of a run
(matplotlib, when installed).

Safe to resume after any kill: a run (re)starting at step ``s`` first drops the rows past ``s`` (they are
recomputed) and a row torn by a kill mid-write; the file is only ever rewritten whole, atomically. So the log
holds each step once whatever sequence of kills and ``--resume`` came before."""

import csv
import math
import os
from pathlib import Path

METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss_curves.png"


class CSVLogger:
    """``log(step, {name: value})`` appends a row to ``output_dir/metrics.csv`` (main process only)."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True):
        self.path = Path(output_dir) / METRICS_FILE
        self.enabled = enabled
        self.columns: list[str] | None = None
        if enabled and self.path.is_file():
            with self.path.open(newline="") as handle:
                header = next(csv.reader(handle), None)
            self.columns = header

    def truncate_after(self, step: int) -> None:
        """Forget rows logged after ``step`` (they are recomputed when a run resumes from ``step``; 0: a run that
        starts over) and rows torn by a kill."""
        if not (self.enabled and self.path.is_file()):
            return
        rows = read_metrics(self.path, skip_malformed=True)
        kept = [row for row in rows if row["step"] <= step]
        self._write_all(kept)

    def _write_all(self, rows: list[dict]) -> None:
        """Rewrite the whole file (through a temporary file and a rename: a kill leaves the old or the new one)."""
        columns = self.columns or ["step"]
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: _format(row.get(key)) for key in columns})
        os.replace(temporary, self.path)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{key: float(value) for key, value in values.items()}}
        if self.columns is None or any(key not in self.columns for key in row):
            old = read_metrics(self.path, skip_malformed=True) if self.path.is_file() else []
            self.columns = list(dict.fromkeys([*(self.columns or ["step"]), *row]))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._write_all(old)
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(
                {key: _format(row.get(key)) for key in self.columns}
            )


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(int(value)) if isinstance(value, int) else f"{value:.6g}"


def read_metrics(path: str | os.PathLike, skip_malformed: bool = False) -> list[dict]:
    """Rows of a metrics CSV as dicts (``step`` an int, other columns floats, missing values absent).

    ``skip_malformed`` drops rows that do not parse (a line torn by a kill) instead of raising ``ValueError``."""
    rows = []
    with Path(path).open(newline="") as handle:
        reader = csv.DictReader(handle)
        for line, raw in enumerate(reader, start=2):
            try:
                if None in raw or any(value is None for value in raw.values()):
                    raise ValueError("wrong number of fields")
                row = {key: float(value) for key, value in raw.items() if key != "step" and value != ""}
                row["step"] = int(raw["step"])
            except (ValueError, TypeError) as error:
                if skip_malformed:
                    continue
                raise ValueError(f"{path}: line {line} is not a metrics row ({error})") from None
            rows.append(row)
    return rows


def plot_metrics(path: str | os.PathLike, output: str | os.PathLike | None = None) -> Path | None:
    """One panel per column of the metrics CSV (log scale for positive losses); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    path = Path(path)
    rows = read_metrics(path)
    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key != "step"]
    if not columns:
        return None
    output = Path(output) if output else path.with_name(PLOT_FILE)
    per_row = min(3, len(columns))
    figure, axes = plt.subplots(
        math.ceil(len(columns) / per_row),
        per_row,
        figsize=(4.5 * per_row, 3 * math.ceil(len(columns) / per_row)),
        squeeze=False,
    )
    for axis, column in zip(axes.flat, columns):
        points = [(row["step"], row[column]) for row in rows if column in row]
        axis.plot([step for step, _ in points], [value for _, value in points], linewidth=1)
        if column != "lr" and points and all(value > 0 for _, value in points):
            axis.set_yscale("log")
        axis.set_title(column, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(columns) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output


__all__ = ["CSVLogger", "METRICS_FILE", "PLOT_FILE", "plot_metrics", "read_metrics"]
