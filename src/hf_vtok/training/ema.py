"""Exponential moving average of model weights, kept in float32.

``ema = decay * ema + (1 - decay) * online`` after every optimizer step from ``start_step`` on (before
it the average tracks the online weights exactly), as the originals do: a constant decay (0.9999) and
an optional start step (ViTok's DiT starts at step 5000). With ``update_every = n`` the average is
updated after steps 1, n + 1, 2n + 1, ... with ``decay ** n`` (FlowMo's ``SimpleEMA``: every 10 steps,
the same decay per step). Buffers are copied, not averaged. Works on sharded (FSDP2 ``DTensor``)
parameters: the average is kept per shard and gathered when saved.
"""

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, start_step: int = 0, update_every: int = 1):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be a positive number of steps, got {update_every}")
        self.decay, self.start_step, self.update_every = decay, start_step, update_every
        self.names = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
        parameters = dict(model.named_parameters())
        self.shadow = [parameters[name].detach().float().clone() for name in self.names]
        self.num_updates = 0

    def _online(self, model: nn.Module) -> list[torch.Tensor]:
        parameters = dict(model.named_parameters())
        missing = [name for name in self.names if name not in parameters]
        if missing:
            raise ValueError(f"the model lacks parameters the EMA tracks: {missing[:5]}")
        return [parameters[name].detach() for name in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (1-based)."""
        if (step - 1) % self.update_every:
            return
        online = [tensor.float() for tensor in self._online(model)]
        weight = 1.0 if step <= self.start_step else 1.0 - self.decay**self.update_every
        torch._foreach_lerp_(self.shadow, online, weight)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for target, average in zip(self._online(model), self.shadow):
            target.copy_(average.to(target.dtype))

    def averaged_state_dict(self, full_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``full_state_dict`` (the online model's, gathered) with the tracked weights replaced by their averages,
        each in the dtype the online state has (collective under FSDP2: every process must call it)."""
        averaged = dict(full_state_dict)
        for name, average in zip(self.names, self.shadow):
            average = average.full_tensor() if hasattr(average, "full_tensor") else average
            if name in averaged:
                averaged[name] = average.detach().to("cpu", averaged[name].dtype)
        return averaged

    def state_dict(self) -> dict:
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
            "shadow": dict(zip(self.names, self.shadow)),
        }

    def load_state_dict(self, state: dict) -> None:
        shadow = state.get("shadow", {})
        missing = [name for name in self.names if name not in shadow]
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tracked parameters, e.g. {missing[:3]}")
        for index, name in enumerate(self.names):
            current, value = self.shadow[index], shadow[name]
            if tuple(value.shape) != tuple(current.shape):
                raise ValueError(f"EMA tensor {name} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
            value = value.to(current.device, current.dtype)
            if hasattr(current, "device_mesh"):  # sharded average: keep this process's shard of the full tensor
                from torch.distributed.tensor import distribute_tensor

                value = distribute_tensor(value, current.device_mesh, current.placements)
            current.copy_(value)
        self.num_updates = int(state.get("num_updates", 0))


__all__ = ["ModelEMA"]
