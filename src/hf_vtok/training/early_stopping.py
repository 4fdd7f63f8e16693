"""Periodic held-out evaluation with best-model tracking and early stopping.

Some recipes over-optimise their training loss (FlowMo's post-training reward-hacks its perceptual loss), so
the weights to keep are chosen on a held-out metric. ``EarlyStopping`` evaluates every ``every`` steps,
remembers the best value and its step, calls ``on_best(step, value)`` when it improves (e.g. to save the
weights as ``<output>/model_best``) and asks the trainer to stop after ``patience`` evaluations without
improvement. Its state is checkpointed with the run, and ``early_stopping.json`` in the output folder lists
every evaluation.
"""

import json
import math
from collections.abc import Callable
from pathlib import Path

REPORT_FILE = "early_stopping.json"
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "rfid": False, "fdd": False}


class EarlyStopping:
    """``maybe_evaluate(step)`` after each optimizer step; register with ``trainer.add_state``.

    Args:
        trainer: the ``Trainer`` (stop requests, output folder, main-process check).
        evaluate: ``evaluate(step) -> value`` of the held-out metric; every process calls it and must get
            the same value (evaluate the same images on each, or reduce across processes).
        metric: its name, for logs and the report.
        higher_is_better: direction of improvement.
        every: steps between evaluations (0 disables evaluation).
        patience: evaluations without improvement before stopping (0: never stop, only track the best).
        min_delta: the smallest change that counts as an improvement.
        on_best: called with ``(step, value)`` on every new best value.
    """

    def __init__(
        self,
        trainer,
        evaluate: Callable[[int], float],
        metric: str,
        higher_is_better: bool,
        every: int,
        patience: int = 0,
        min_delta: float = 0.0,
        on_best: Callable[[int, float], None] | None = None,
    ):
        if every < 0 or patience < 0 or min_delta < 0:
            raise ValueError(
                "early stopping needs every >= 0, patience >= 0 and min_delta >= 0, "
                f"got {every}, {patience}, {min_delta}"
            )
        self.trainer, self.evaluate, self.metric = trainer, evaluate, metric
        self.higher_is_better, self.every, self.patience, self.min_delta = higher_is_better, every, patience, min_delta
        self.on_best = on_best
        self.best: float | None = None
        self.best_step: int | None = None
        self.stale_evaluations = 0
        self.history: list[list[float]] = []

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        change = value - self.best if self.higher_is_better else self.best - value
        return change > self.min_delta

    def maybe_evaluate(self, step: int) -> dict[str, float]:
        """Evaluate if ``step`` (completed optimizer steps) is an evaluation step; returns values to log."""
        if not self.every or step % self.every:
            return {}
        value = float(self.evaluate(step))
        self.history.append([step, value])
        if self._improves(value):
            self.best, self.best_step, self.stale_evaluations = value, step, 0
            if self.on_best is not None:
                self.on_best(step, value)
        else:
            self.stale_evaluations += 1
        self._write_report()
        self._request_stop_if_done()
        return {f"eval_{self.metric}": value, f"best_{self.metric}": self.best if self.best is not None else value}

    def _request_stop_if_done(self) -> None:
        if self.patience and self.stale_evaluations >= self.patience:
            self.trainer.request_stop(
                f"early stopping: held-out {self.metric} has not improved for {self.stale_evaluations} evaluations "
                f"(best {self.best:.6g} at step {self.best_step})"
            )

    def _write_report(self) -> None:
        if not self.trainer.accelerator.is_main_process:
            return
        report = {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "best": self.best,
            "best_step": self.best_step,
            "evaluations": [{"step": int(step), self.metric: value} for step, value in self.history],
        }
        path = Path(self.trainer.output_dir) / REPORT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "stale_evaluations": self.stale_evaluations,
            "history": [list(entry) for entry in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")
        self.stale_evaluations = int(state.get("stale_evaluations", 0))
        self.history = [list(entry) for entry in state.get("history", [])]
        self._request_stop_if_done()  # a run that had stopped early stays stopped when resumed


__all__ = ["HIGHER_IS_BETTER", "REPORT_FILE", "EarlyStopping"]
