"""The accelerate training loop every hf_vtok training script shares.

A script builds its models, optimizers and data, then hands ``Trainer.fit`` a ``train_step(batch, step)``
that does the forward / backward / optimizer steps of one iteration and returns the values to log. The
trainer owns the rest: the ``Accelerator`` (one process, DDP, or FSDP2 on GPU), deterministic resumable
data order (``hf_vtok.training.data``), EMA updates, CSV loss curves and their PNG plot, checkpoints
every ``--checkpoint-every`` steps and on SIGTERM / SIGINT (``CheckpointManager``), ``--resume``, and the
final ``save_pretrained`` folders (online and EMA weights) that ``AutoModel`` / the diffusers classes load.
"""

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..data.datasets import StepBatchSampler, collate_samples
from .checkpointing import CHECKPOINT_DIR, CheckpointManager, StopRequest
from .early_stopping import REPORT_FILE
from .ema import ModelEMA
from .logging import METRICS_FILE, PLOT_FILE, CSVLogger, plot_metrics

MIXED_PRECISION = ("no", "bf16", "fp16")
ARGS_FILE = "training_args.json"
# what a run writes into --output-dir besides its model folders (sub-folders with a config.json)
RUN_FILES = (CHECKPOINT_DIR, METRICS_FILE, PLOT_FILE, ARGS_FILE, REPORT_FILE)


def add_training_arguments(parser: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """The options every training script has; ``defaults`` overrides their defaults (a recipe's values)."""
    group = parser.add_argument_group("training loop")
    group.add_argument("--config", help="JSON file of option defaults (the command line overrides them)")
    group.add_argument(
        "--output-dir", required=True, help="checkpoints, metrics.csv, loss plot and the final model folders"
    )
    group.add_argument("--max-steps", type=int, default=100_000, help="optimizer steps of the whole run")
    group.add_argument("--batch-size", type=int, default=32, help="per process")
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="no")
    group.add_argument(
        "--fsdp",
        action="store_true",
        help="shard models with FSDP2 (accelerate, GPU only); DDP is used otherwise when launched on several "
        "processes",
    )
    group.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass"
    )
    group.add_argument("--checkpoint-every", type=int, default=1000, help="steps between resumable checkpoints")
    group.add_argument("--keep-checkpoints", type=int, default=2)
    group.add_argument("--log-every", type=int, default=10)
    group.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        help="continue from the latest complete checkpoint in --output-dir (or the given checkpoint folder)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an --output-dir that holds an earlier run (its checkpoints, log and models are deleted)",
    )
    group.add_argument("--ema-decay", type=float, default=0.9999, help="0 disables the EMA copy")
    group.add_argument("--ema-start", type=int, default=0, help="step from which the EMA averages (before: a copy)")
    group.add_argument(
        "--ema-update-every", type=int, default=1, help="steps between EMA updates (each with decay ** this)"
    )
    group.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: no clipping)")
    parser.set_defaults(**{key.replace("-", "_"): value for key, value in defaults.items()})
    return parser


def move_to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(move_to_device(value, device) for value in batch)
    return batch


def _unsharded_class(model: torch.nn.Module) -> type:
    """The model's own class: FSDP2's ``fully_shard`` swaps it for a generated ``FSDP<Class>`` subclass."""
    cls = type(model)
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return cls
    if issubclass(cls, FSDPModule):
        cls = next(base for base in cls.__bases__ if base is not FSDPModule)
    return cls


def previous_run(output_dir: str | os.PathLike) -> list[str]:
    """What an earlier run left in ``output_dir``: its ``RUN_FILES`` and model folders (names; empty if none)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [name for name in RUN_FILES if (folder / name).exists()]
    found += sorted(
        path.name
        for path in folder.iterdir()
        if path.is_dir() and ((path / "config.json").is_file() or (path / "model_index.json").is_file())
    )
    return found


def has_parameters_without_gradient(model) -> bool:
    """Whether ``model`` (or the model a wrapper holds) has trainable parameters its forward never reaches: those
    named by its ``parameters_without_gradient()`` (FlowMo's) that still require grad (they are built frozen; a
    caller may unfreeze them). DDP must then look for unused parameters."""
    model = getattr(model, "module", model)
    declared = getattr(model, "parameters_without_gradient", None)
    if not callable(declared):
        return False
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    return any(name in trainable for name in declared())


def fresh_copy_with_state(model: torch.nn.Module, state_dict: dict) -> torch.nn.Module:
    """A new, unsharded CPU instance of ``model``'s class and config holding ``state_dict``."""
    from transformers import PreTrainedModel

    cls = _unsharded_class(model)
    fresh = cls(model.config) if isinstance(model, PreTrainedModel) else cls.from_config(model.config)
    fresh.load_state_dict(state_dict, strict=True)
    return fresh


class Trainer:
    """``Trainer(args)`` then ``prepare(...)``, ``add_model(...)``, ``fit(train_step, dataset)``."""

    def __init__(self, args: argparse.Namespace, find_unused_parameters: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.args = args
        self.output_dir = Path(args.output_dir)
        self._check_output_dir()
        plugin = None
        if args.fsdp:
            if not torch.cuda.is_available():
                raise ValueError("--fsdp needs GPUs (accelerate's FSDP2 runs on CUDA / XPU devices); drop it on CPU")
            from accelerate import FullyShardedDataParallelPlugin

            plugin = FullyShardedDataParallelPlugin(
                fsdp_version=2,
                auto_wrap_policy="transformer_based_wrap",
                reshard_after_forward=True,
                state_dict_type="SHARDED_STATE_DICT",
            )
        # the schedule advances once per optimizer step, whatever the number of processes
        self.accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)],
            fsdp_plugin=plugin,
        )
        set_seed(args.seed)  # identical initialisation on every process
        self.models: dict[str, dict] = {}
        self.stateful: dict = {}
        self.logger = CSVLogger(self.output_dir, enabled=self.accelerator.is_main_process)
        self.step = 0
        self.stop_reason: str | None = None

    def _check_output_dir(self) -> None:
        """An ``--output-dir`` that holds an earlier run needs ``--resume`` or ``--overwrite``: a fresh run would
        mix its log, checkpoints and models with the old ones (and the checkpoint rotation delete the new ones)."""
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise ValueError(f"--output-dir {str(self.output_dir)!r} is an existing file, not a folder")
        found = previous_run(self.output_dir)
        if found and not self.args.resume and not getattr(self.args, "overwrite", False):
            raise ValueError(
                f"--output-dir {str(self.output_dir)!r} holds an earlier run ({', '.join(found)}): pass --resume to "
                "continue it, --overwrite to start over (deleting it), or choose another folder"
            )

    def _clear_previous_run(self) -> None:
        """``--overwrite``: delete what an earlier run left (main process), before this run writes anything."""
        if self.accelerator.is_main_process:
            for name in previous_run(self.output_dir):
                path = self.output_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.accelerator.wait_for_everyone()
        self.logger = CSVLogger(self.output_dir, enabled=self.accelerator.is_main_process)

    # ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def print(self, *values) -> None:
        self.accelerator.print(*values, flush=True)

    def prepare(self, *objects):
        """``accelerator.prepare``; DDP looks for unused parameters when a model declares parameters that get no
        gradient (``has_parameters_without_gradient``), as FlowMo's last encoder block has."""
        handler = self.accelerator.ddp_handler
        if handler is not None and any(
            isinstance(item, torch.nn.Module) and has_parameters_without_gradient(item) for item in objects
        ):
            handler.find_unused_parameters = True
        return self.accelerator.prepare(*objects)

    def add_model(
        self, name: str, model, ema: bool = True, save_extra: Callable[[Path], None] | None = None
    ) -> ModelEMA | None:
        """Register a prepared model to save as ``output_dir/<name>`` (and ``<name>_ema`` with an EMA).

        ``save_extra(folder)`` writes what else belongs in the folder (an image processor, a scheduler).
        """
        unwrapped = self.accelerator.unwrap_model(model)
        if self.args.gradient_checkpointing:
            if hasattr(unwrapped, "activation_checkpointing_enable"):  # transformers >= 5 (the old name warns)
                unwrapped.activation_checkpointing_enable()
            elif hasattr(unwrapped, "gradient_checkpointing_enable"):
                unwrapped.gradient_checkpointing_enable()
            elif hasattr(unwrapped, "enable_gradient_checkpointing"):
                unwrapped.enable_gradient_checkpointing()
        every = getattr(self.args, "ema_update_every", 1)
        average = (
            ModelEMA(unwrapped, self.args.ema_decay, self.args.ema_start, every)
            if ema and self.args.ema_decay > 0
            else None
        )
        self.models[name] = {"model": model, "ema": average, "save_extra": save_extra}
        if average is not None:
            self.stateful[f"ema_{name}"] = average
        return average

    def add_state(self, name: str, obj) -> None:
        """Extra state to checkpoint (``state_dict`` / ``load_state_dict`` with tensors and JSON values)."""
        self.stateful[name] = obj

    def request_stop(self, reason: str) -> None:
        """End ``fit`` after the current step (early stopping): a last checkpoint, then the final folders.
        Every process must make the same request (base it on values they all share)."""
        self.stop_reason = reason

    def clip_gradients(self, parameters) -> float | None:
        if self.args.grad_clip and self.args.grad_clip > 0:
            return float(self.accelerator.clip_grad_norm_(parameters, self.args.grad_clip))
        return None

    def optimizer_step(self, loss: torch.Tensor, optimizer, scheduler, parameters) -> dict:
        """Backward of ``loss``, gradient clipping of ``parameters``, one optimizer and schedule step.

        Returns the logs every step reports: ``lr`` and, when clipping is on, ``grad_norm``.
        """
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm = self.clip_gradients(parameters)
        optimizer.step()
        scheduler.step()
        logs = {"lr": scheduler.get_last_lr()[0]}
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm
        return logs

    # ----------------------------------------------------------------------------------------------
    def dataloader(
        self,
        dataset,
        batch_size: int | None = None,
        start_step: int = 0,
        collate_fn=collate_samples,
        shuffle: bool = True,
    ) -> DataLoader:
        """This process's batches from ``start_step`` on, in the order ``StepBatchSampler`` defines."""
        batch_size = batch_size or self.args.batch_size
        accelerator = self.accelerator
        workers = self.args.num_workers
        if isinstance(dataset, IterableDataset):
            dataset.start_step, dataset.num_processes = start_step, accelerator.num_processes
            dataset.process_index, dataset.batch_size = accelerator.process_index, batch_size
            return DataLoader(
                dataset,
                batch_size=batch_size,
                collate_fn=collate_fn,
                num_workers=min(workers, 1),
                generator=torch.Generator().manual_seed(self.args.seed),
            )
        sampler = StepBatchSampler(
            len(dataset),
            batch_size,
            self.args.seed,
            start_step,
            accelerator.num_processes,
            accelerator.process_index,
            shuffle=shuffle,
        )
        # an own generator: creating the iterator must not draw from the global stream (resume equality)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_fn,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.args.seed),
        )

    def _reduce_logs(self, logs: dict) -> dict[str, float]:
        names = sorted(logs)
        if not names:
            return {}
        values = torch.tensor([float(logs[name]) for name in names], device=self.device, dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(names, values.tolist()))

    def fit(self, train_step: Callable[[dict, int], dict], dataset, collate_fn=collate_samples) -> Path:
        """Run until ``--max-steps`` (or a stop signal); returns the output folder."""
        args, accelerator = self.args, self.accelerator
        manager = CheckpointManager(accelerator, self.output_dir, self.stateful, keep=args.keep_checkpoints)
        if getattr(args, "overwrite", False) and not args.resume:
            self._clear_previous_run()
        checkpoint = self._load_checkpoint(manager)
        if checkpoint is not None:
            self.print(f"resumed from {checkpoint} at step {self.step}")
        else:
            # per-process random streams (noise, masks, label dropout) from here on; checkpoints restore them
            torch.manual_seed(args.seed + 1 + accelerator.process_index)
        # rows past the step this run starts from (all of them for a run before its first checkpoint) are redone
        self.logger.truncate_after(self.step)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            temporary = self.output_dir / (ARGS_FILE + ".tmp")
            temporary.write_text(json.dumps(vars(args), indent=1, default=str))
            os.replace(temporary, self.output_dir / ARGS_FILE)
        loader = self.dataloader(dataset, start_step=self.step, collate_fn=collate_fn)
        batches = iter(loader)
        started, last_log = time.time(), time.time()
        saved_at = self.step
        with StopRequest() as stop:
            while self.step < args.max_steps and self.stop_reason is None:
                batch = move_to_device(next(batches), self.device)
                for entry in self.models.values():
                    entry["model"].train()
                logs = train_step(batch, self.step)
                self.step += 1
                for entry in self.models.values():
                    if entry["ema"] is not None:
                        entry["ema"].update(accelerator.unwrap_model(entry["model"]), self.step)
                if self.step % args.log_every == 0 or self.step == args.max_steps:
                    values = self._reduce_logs(logs)
                    now = time.time()
                    values["seconds_per_step"] = (now - last_log) / max(1, args.log_every)
                    last_log = now
                    self.logger.log(self.step, values)
                    shown = " ".join(f"{key}={value:.4g}" for key, value in values.items())
                    self.print(f"step {self.step}/{args.max_steps} {shown}")
                if stop.requested(accelerator):
                    manager.save(self.step, reason="signal")
                    self.print(f"stopped by signal at step {self.step}; checkpoint saved, continue with --resume")
                    self._finish_plot()
                    raise SystemExit(128 + (stop.signal_number or 15))
                if args.checkpoint_every > 0 and self.step % args.checkpoint_every == 0 and self.step < args.max_steps:
                    manager.save(self.step)
                    saved_at = self.step
        if self.stop_reason is not None:
            self.print(f"stopped at step {self.step}: {self.stop_reason}")
        if saved_at != self.step:
            manager.save(self.step, reason=self.stop_reason or "end")
        self.save_models()
        self._finish_plot()
        self.print(f"finished {self.step} steps in {time.time() - started:.1f}s; models in {self.output_dir}")
        return self.output_dir

    def _load_checkpoint(self, manager: CheckpointManager) -> Path | None:
        """Restore the ``--resume`` checkpoint (sets ``self.step``); with ``latest``, a checkpoint that fails to
        load is named and the previous one tried. None when the run starts from step 0."""
        candidates = manager.candidates(self.args.resume)
        for index, checkpoint in enumerate(candidates):
            try:
                state = manager.load(checkpoint)
            except Exception as error:  # a truncated or corrupt file of any kind
                message = " ".join(str(error).split())[:500]
                if index + 1 == len(candidates):
                    raise ValueError(f"cannot resume from {checkpoint}: {type(error).__name__}: {message}") from error
                self.print(
                    f"not resuming from {checkpoint}: {type(error).__name__}: {message}; trying the previous one"
                )
                continue
            self.step = int(state["step"])
            return checkpoint
        return None

    def _finish_plot(self) -> None:
        if self.accelerator.is_main_process and (self.output_dir / METRICS_FILE).is_file():
            plot_metrics(self.output_dir / METRICS_FILE)

    def save_models(self) -> dict[str, Path]:
        """``save_pretrained`` folders of every registered model (online and EMA) under the output folder."""
        accelerator = self.accelerator
        written = {}
        for name, entry in self.models.items():
            unwrapped = accelerator.unwrap_model(entry["model"])
            state = accelerator.get_state_dict(entry["model"])  # gathered (collective under FSDP)
            versions = [(name, state)]
            if entry["ema"] is not None:
                versions.append((f"{name}_ema", entry["ema"].averaged_state_dict(state)))
            for folder_name, version_state in versions:
                if not accelerator.is_main_process:
                    continue
                folder = self.output_dir / folder_name
                model = fresh_copy_with_state(unwrapped, {key: value.cpu() for key, value in version_state.items()})
                model.save_pretrained(folder)
                if entry["save_extra"] is not None:
                    entry["save_extra"](folder)
                written[folder_name] = folder
        accelerator.wait_for_everyone()
        return written


def load_training_script_defaults(path: str | os.PathLike | None) -> dict:
    """``--config file.json``: option defaults of a training script (keys as the long options, with - or _)."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config {str(path)!r} does not exist")
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"--config {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a training config is a JSON object of option -> value")
    return {key.replace("-", "_"): value for key, value in values.items()}


def parse_with_config(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse ``argv``; values in a ``--config`` JSON file become defaults that the command line overrides."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv if argv is not None else sys.argv[1:])
    defaults = load_training_script_defaults(known.config)
    valid = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - valid)
    if unknown:
        raise ValueError(f"{known.config}: unknown options {unknown}")
    parser.set_defaults(**defaults)
    for action in parser._actions:  # a required option given by the config file is no longer required
        if action.dest in defaults:
            action.required = False
    return parser.parse_args(argv)


__all__ = ["Trainer", "add_training_arguments", "fresh_copy_with_state", "move_to_device", "parse_with_config"]
