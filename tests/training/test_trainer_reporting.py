"""What a training run shows while it runs: a progress bar with the time left, and ``--report-to`` trackers
(accelerate's) beside metrics.csv and its plot, without changing the run or its resume."""

import importlib.util

import pytest
import torch

import hf_vtok.training.trainer as trainer_module
from hf_vtok.training import read_metrics
from tests.reliability.test_training_reliability import STEPS, Killed, Toy, run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_progress_bar_counts_the_steps_and_lines_tell_the_time_left(tmp_path, monkeypatch, capsys):
    bars = []

    class RecordingBar(trainer_module.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": False})  # drawn, as on a terminal
            bars.append(self)

    monkeypatch.setattr(trainer_module, "tqdm", RecordingBar)
    with pytest.raises(Killed):
        run(tmp_path, kill_before=5)  # checkpoint at step 3
    run(tmp_path, "--resume")
    assert [(bar.total, bar.initial, bar.n) for bar in bars] == [(STEPS, 0, 4), (STEPS, 3, STEPS)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert lines[-1].startswith(f"step {STEPS}/{STEPS} ") and all("(left " in line for line in lines)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard (the test extra)")
def test_tensorboard_tracker_beside_the_csv_and_an_unchanged_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    straight = tmp_path / "straight"
    run(straight)
    tracked = tmp_path / "tracked"
    with pytest.raises(Killed):
        run(tracked, "--report-to", "tensorboard", "--run-name", "toy", kill_before=8)
    run(tracked, "--report-to", "tensorboard", "--run-name", "toy", "--resume")
    # the run is the same as without a tracker, kill and resume included
    rows, reference = read_metrics(tracked / "metrics.csv"), read_metrics(straight / "metrics.csv")
    assert [row["loss"] for row in rows] == [row["loss"] for row in reference]
    assert all(
        torch.equal(a, b)
        for a, b in zip(Toy.from_pretrained(tracked / "model").state_dict().values(),
                        Toy.from_pretrained(straight / "model").state_dict().values())
    )  # fmt: skip
    assert (tracked / "loss_curves.png").is_file()
    events = EventAccumulator(str(tracked / trainer_module.TRACKER_DIR / "toy"))
    events.Reload()
    logged = {event.step: event.value for event in events.Scalars("loss")}
    assert sorted(logged) == list(range(1, STEPS + 1))  # steps 7 and after: from the resumed run
    assert logged == pytest.approx({row["step"]: row["loss"] for row in rows}, rel=1e-5)  # the CSV: 6 digits
    # a tracker's folder marks an earlier run, as the CSV does
    assert trainer_module.TRACKER_DIR in trainer_module.previous_run(tracked)


@pytest.mark.parametrize("name", ["wandb", "trackio"])
def test_a_tracker_that_is_not_installed_is_named(tmp_path, name):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed")
    with pytest.raises(ImportError, match=rf"--report-to {name}: the {name} package is not installed"):
        run(tmp_path, "--report-to", name)
    assert not (tmp_path / "metrics.csv").exists()  # refused before the run started
