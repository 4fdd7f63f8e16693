"""Resumable training checkpoints: accelerate ``save_state`` plus hf_vtok's own extra state, written atomically.

A checkpoint is the folder ``<output>/checkpoints/step-<NNNNNNNN>``. It is first written as ``….tmp`` by
every process (``accelerator.save_state``: models, optimizers, schedulers, per-process RNG states), then
the extra state (EMA weights, loss-balancing statistics, the step; tensors in ``extra_state.safetensors``,
the rest in ``trainer_state.json``) is added and the folder is renamed: a folder without ``.tmp`` is always
complete, so a kill at any moment loses at most one checkpoint interval. ``trainer_state.json`` lists the size
of every file of the checkpoint: ``--resume`` checks them (and the safetensors headers) first, and over a
checkpoint with a truncated or missing file names it and falls back to the previous complete checkpoint.
Nothing is unpickled on load (accelerate reads its files with ``weights_only=True``; the extra state is
safetensors + JSON).
"""

import json
import os
import re
import shutil
import signal
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils.checkpoints import check_safetensors_file

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})$")
STATE_FILE = "trainer_state.json"
EXTRA_TENSORS_FILE = "extra_state.safetensors"


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and _CHECKPOINT_NAME.match(path.name)]
    return sorted(found, key=lambda path: int(_CHECKPOINT_NAME.match(path.name).group(1)))


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def _flatten_state(name: str, state, tensors: dict, plain: dict) -> None:
    """Split a nested state dict into tensors (``name/key`` -> tensor) and JSON values."""
    if isinstance(state, torch.Tensor):
        tensor = state.full_tensor() if hasattr(state, "full_tensor") else state
        tensors[name] = tensor.detach().cpu().contiguous()
    elif isinstance(state, dict):
        for key, value in state.items():
            if "/" in str(key):
                raise ValueError(f"state key {key!r} of {name!r} contains '/', which checkpoints use as separator")
            _flatten_state(f"{name}/{key}", value, tensors, plain)
    else:
        plain[name] = state


def _unflatten_state(prefix: str, tensors: dict, plain: dict) -> dict:
    state: dict = {}
    for source in (tensors, plain):
        for name, value in source.items():
            if not name.startswith(prefix + "/"):
                continue
            parts = name[len(prefix) + 1 :].split("/")
            node = state
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return state


class CheckpointManager:
    """Saves and restores training state under ``output_dir/checkpoints``.

    ``stateful`` maps names to objects with ``state_dict()`` / ``load_state_dict()`` (EMA, LeCAM
    statistics...) whose state holds tensors and JSON values; they are saved beside accelerate's state.
    ``keep`` most recent checkpoints are kept (older ones are deleted after a new one is complete).
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, stateful: dict | None = None, keep: int = 2):
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.stateful = dict(stateful or {})
        self.keep = keep

    def save(self, step: int, **info) -> Path:
        """Write the checkpoint of ``step`` (collective: every process must call it)."""
        accelerator = self.accelerator
        final = self.output_dir / CHECKPOINT_DIR / checkpoint_name(step)
        temporary = final.with_name(final.name + ".tmp")
        if accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)  # left over from a save that was killed
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary), safe_serialization=True)
        accelerator.wait_for_everyone()  # every process has written its files (its RNG state) before the rename
        tensors, plain = {}, {}
        for name, obj in self.stateful.items():
            _flatten_state(name, obj.state_dict(), tensors, plain)
        if accelerator.is_main_process:
            if tensors:
                save_file(tensors, str(temporary / EXTRA_TENSORS_FILE))
            files = {
                path.relative_to(temporary).as_posix(): path.stat().st_size
                for path in sorted(temporary.rglob("*"))
                if path.is_file()
            }
            state = {"step": step, "num_processes": accelerator.num_processes, "extra": plain, "files": files, **info}
            (temporary / STATE_FILE).write_text(json.dumps(state, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            for old in list_checkpoints(self.output_dir)[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()
        return final

    def load(self, checkpoint: str | os.PathLike) -> dict:
        """Restore everything from ``checkpoint``; returns its ``trainer_state.json`` content."""
        checkpoint = Path(checkpoint)
        state_file = checkpoint / STATE_FILE
        if not state_file.is_file():
            raise ValueError(f"{str(checkpoint)!r} is not a complete hf_vtok checkpoint (no {STATE_FILE})")
        state = json.loads(state_file.read_text())
        if state.get("num_processes", 1) != self.accelerator.num_processes:
            raise ValueError(
                f"{str(checkpoint)!r} was written by {state['num_processes']} processes but this run has "
                f"{self.accelerator.num_processes}: the per-process RNG states and data order need the same number"
            )
        self.accelerator.load_state(str(checkpoint))
        tensor_file = checkpoint / EXTRA_TENSORS_FILE
        tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
        for name, obj in self.stateful.items():
            obj.load_state_dict(_unflatten_state(name, tensors, state.get("extra", {})))
        return state

    def resolve(self, resume: str | None) -> Path | None:
        """``--resume`` value -> checkpoint: ``"latest"`` (None if there is none yet) or a checkpoint folder.

        ``"latest"`` skips, with a message naming the bad file, checkpoints that ``verify`` finds incomplete; a
        given folder that is incomplete is an error."""
        if not resume:
            return None
        if resume == "latest":
            for checkpoint in reversed(list_checkpoints(self.output_dir)):
                problem = verify_checkpoint(checkpoint)
                if problem is None:
                    return checkpoint
                self.accelerator.print(f"not resuming from {checkpoint}: {problem}; trying the previous checkpoint")
            return None
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise ValueError(f"--resume {resume!r} is neither 'latest' nor a complete checkpoint folder")
        problem = verify_checkpoint(path)
        if problem is not None:
            raise ValueError(f"--resume {resume!r}: {problem}; resume from an earlier checkpoint")
        return path

    def candidates(self, resume: str | None) -> list[Path]:
        """The checkpoints ``--resume`` may start from, best first: the resolved one, then (for ``"latest"``) the
        older complete ones, to fall back on when loading one fails."""
        first = self.resolve(resume)
        if first is None:
            return []
        if resume != "latest":
            return [first]
        older = [path for path in reversed(list_checkpoints(self.output_dir)) if path.name < first.name]
        return [first, *older]


def verify_checkpoint(checkpoint: str | os.PathLike) -> str | None:
    """What makes ``checkpoint`` unusable (a missing or truncated file, by name), or None when it is complete.

    Checks the file sizes ``trainer_state.json`` lists and the header of every safetensors file; reads no weights."""
    checkpoint = Path(checkpoint)
    state_file = checkpoint / STATE_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as error:
        return f"{state_file} is missing or corrupt ({type(error).__name__})"
    for name, size in (state.get("files") or {}).items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size:
            return f"{path} is truncated or changed ({path.stat().st_size} bytes, {size} when saved)"
    for path in sorted(checkpoint.rglob("*.safetensors")):
        try:
            check_safetensors_file(path)
        except ValueError as error:
            return str(error)
    return None


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the training loop polls (all processes agree through a reduction),
    so the loop saves a checkpoint and stops cleanly instead of dying mid-step."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signal_number: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for number in self.SIGNALS:
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: no handler, the loop just runs
                pass
        return self

    def _handle(self, number, frame) -> None:
        self.signal_number = number

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def requested(self, accelerator) -> bool:
        flag = torch.tensor([1.0 if self.signal_number is not None else 0.0], device=accelerator.device)
        if accelerator.num_processes > 1:
            flag = accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)


__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointManager",
    "StopRequest",
    "latest_checkpoint",
    "list_checkpoints",
    "verify_checkpoint",
]
