"""Training runs and their output folders: an earlier run is never mixed into a new one, the metrics log holds
every step once after any sequence of kills and ``--resume``, a checkpoint with a truncated file is named and
skipped, and DDP looks for unused parameters where a model declares them."""

import argparse
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from hf_vtok.training import CheckpointManager, Trainer, add_training_arguments, list_checkpoints, read_metrics
from hf_vtok.training.checkpointing import verify_checkpoint
from hf_vtok.training.trainer import has_parameters_without_gradient, parse_with_config
from tests.testing_utils.training import REPO_ROOT, SCRIPTS, reset_accelerate

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS = 10


class Toy(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 4):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x):
        return self.linear(x)


class Points(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, draw):
        position, index = draw
        return {"x": torch.randn(4, generator=torch.Generator().manual_seed(index))}


class Killed(BaseException):
    """A hard kill inside the training loop: nothing after it runs (no checkpoint, no final save)."""


def run(output, *options, kill_before=None, kill_saving=None, steps=STEPS, model=None):
    """A tiny training run through ``Trainer``. ``kill_before=s`` dies at the start of step ``s`` (steps before it
    are logged); ``kill_saving=s`` dies while the checkpoint of step ``s`` is written (its row is logged)."""
    parser = add_training_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--output-dir", str(output), "--max-steps", str(steps), "--batch-size", "2",
                              "--log-every", "1", "--checkpoint-every", "3", "--ema-decay", "0",
                              "--keep-checkpoints", "3", *options])  # fmt: skip
    reset_accelerate()
    try:
        trainer = Trainer(args)
        torch.manual_seed(0)
        model = model or Toy()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model, optimizer, scheduler = trainer.prepare(model, optimizer, scheduler)
        trainer.add_model("model", model, ema=False)

        def train_step(batch, step):
            if kill_before is not None and step + 1 == kill_before:
                raise Killed
            loss = (model(batch["x"]) + torch.randn_like(batch["x"])).square().mean()
            return {"loss": loss.item(), **trainer.optimizer_step(loss, optimizer, scheduler, model.parameters())}

        save = CheckpointManager.save

        def save_or_die(self, step, **info):
            if step == kill_saving:
                raise Killed
            return save(self, step, **info)

        CheckpointManager.save = save_or_die
        try:
            trainer.fit(train_step, Points())
        finally:
            CheckpointManager.save = save
        return trainer
    finally:
        reset_accelerate()


def weights(output):
    return Toy.from_pretrained(output / "model").state_dict()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    output = tmp_path_factory.mktemp("straight")
    run(output)
    return output


def _same_run(output, straight):
    rows, reference = read_metrics(output / "metrics.csv"), read_metrics(straight / "metrics.csv")
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    assert [row["loss"] for row in rows] == [row["loss"] for row in reference]
    assert all(torch.equal(a, b) for a, b in zip(weights(output).values(), weights(straight).values()))


@pytest.mark.parametrize(
    "kills",
    [
        [dict(kill_before=3)],  # before the first checkpoint (step 3): rows 1-2 logged
        [dict(kill_before=2), dict(kill_before=3)],  # twice before the first checkpoint
        [dict(kill_saving=3)],  # while the first checkpoint is written: row 3 logged, no checkpoint
        [dict(kill_before=6), dict(kill_saving=6), dict(kill_before=9)],  # between, during and after checkpoints
    ],
)
def test_the_log_holds_each_step_once_after_any_kills(tmp_path, straight, kills):
    for index, kill in enumerate(kills):
        with pytest.raises(Killed):
            run(tmp_path, *(["--resume"] if index else []), **kill)
    run(tmp_path, "--resume")  # before: rows of the steps before the first checkpoint appeared twice
    _same_run(tmp_path, straight)


def test_a_torn_row_is_dropped_on_resume(tmp_path, straight):
    with pytest.raises(Killed):
        run(tmp_path, kill_before=5)
    with (tmp_path / "metrics.csv").open("a") as handle:
        handle.write("5,0.12")  # a kill in the middle of writing row 5
    run(tmp_path, "--resume")
    _same_run(tmp_path, straight)


def test_an_earlier_run_is_never_mixed_in(tmp_path, straight):
    with pytest.raises(Killed):
        run(tmp_path, kill_before=8)
    old = [path.name for path in list_checkpoints(tmp_path)]
    with pytest.raises(ValueError, match="holds an earlier run.*--resume.*--overwrite"):  # before: both runs mixed
        run(tmp_path)
    assert [path.name for path in list_checkpoints(tmp_path)] == old
    (tmp_path / "notes.txt").write_text("mine")
    run(tmp_path, "--overwrite")
    _same_run(tmp_path, straight)
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000009", "step-00000010"]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a file of the run
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "config.json").write_text("{}")  # e.g. the --config file beside the run: not an earlier run
    run(fresh, steps=1)
    taken = tmp_path / "file"
    taken.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        run(taken)


@pytest.mark.parametrize("damage", ["truncate weights", "truncate optimizer", "corrupt optimizer", "delete rng"])
def test_a_damaged_checkpoint_is_named_and_the_previous_one_used(tmp_path, straight, capsys, damage):
    with pytest.raises(Killed):
        run(tmp_path, kill_before=8)
    latest = list_checkpoints(tmp_path)[-1]
    assert latest.name == "step-00000006" and verify_checkpoint(latest) is None
    name = {"truncate weights": "model.safetensors", "delete rng": "random_states_0.pkl"}.get(damage, "optimizer.bin")
    target = latest / name
    content = target.read_bytes()
    if damage.startswith("truncate"):
        target.write_bytes(content[: len(content) // 2])
    elif damage == "corrupt optimizer":
        target.write_bytes(b"\0" * len(content))  # same size: found when loading
    else:
        target.unlink()
    with pytest.raises(ValueError, match="cannot resume from" if damage == "corrupt optimizer" else name):
        run(tmp_path, "--resume", str(latest))  # a given checkpoint: no fallback, the file is named
    capsys.readouterr()
    run(tmp_path, "--resume")
    printed = capsys.readouterr().out
    assert f"not resuming from {latest}" in printed and (name in printed or damage == "corrupt optimizer")
    assert "step-00000003 at step 3" in printed  # the previous complete checkpoint
    _same_run(tmp_path, straight)


def test_ddp_looks_for_unused_parameters_where_a_model_declares_them(tmp_path):
    class WithUnused(Toy):
        def parameters_without_gradient(self):
            return ["linear.bias"]

    assert has_parameters_without_gradient(WithUnused()) and not has_parameters_without_gradient(Toy())
    frozen = WithUnused()
    frozen.linear.bias.requires_grad_(False)  # FlowMo builds them frozen: nothing unused is left for DDP
    assert not has_parameters_without_gradient(frozen)
    declared = run(tmp_path / "declared", steps=1, model=WithUnused())
    assert declared.accelerator.ddp_handler.find_unused_parameters
    plain = run(tmp_path / "plain", steps=1)
    assert not plain.accelerator.ddp_handler.find_unused_parameters


def test_a_bad_training_config_file_is_named(tmp_path):
    parser = add_training_arguments(argparse.ArgumentParser())
    bad = tmp_path / "recipe.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="recipe.json.*not valid JSON"):
        parse_with_config(parser, ["--config", str(bad), "--output-dir", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        parse_with_config(parser, ["--config", str(tmp_path / "missing.json"), "--output-dir", str(tmp_path)])


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_then_resume(tmp_path):
    """A real ``kill -9`` of a training script before its first checkpoint, then ``--resume``: the log holds each
    step once (before: the steps of the killed run twice)."""
    command = [sys.executable, str(SCRIPTS / "train_vitok.py"), "--variant", "w32_d1_h2-w32_d1_h2/8x4", "--train-data",
               str(REPO_ROOT / "assets"), "--output-dir", str(tmp_path), "--max-steps", "8", "--batch-size", "1",
               "--log-every", "1", "--checkpoint-every", "100", "--ema-decay", "0", "--crop", "random",
               "--crop-min", "16", "--crop-max", "16", "--max-tokens", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in process.stdout:
        if line.startswith("step 3/"):
            process.send_signal(signal.SIGKILL)
            break
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL and not list_checkpoints(tmp_path)
    assert len(read_metrics(tmp_path / "metrics.csv")) >= 3
    result = subprocess.run([*command, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert [row["step"] for row in read_metrics(tmp_path / "metrics.csv")] == list(range(1, 9))
    assert json.loads((tmp_path / "training_args.json").read_text())["resume"] == "latest"
