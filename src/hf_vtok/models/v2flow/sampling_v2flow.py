"""V²Flow's masked-autoregressive sampler (the original's ``sample_tokens`` after tokenization).

Each of ``num_ar_steps`` steps runs the MAR encoder/decoder on the tokens known so far, reveals the tokens at
the *end* of each sample's random order until a cosine schedule's count stays unknown, and samples every
revealed token with the per-token flow head (``linear_flow``: DPM-Solver++; ``CondOT``: an ODE solve).
``V2FlowSamplingMixin`` gives ``V2FlowModel`` these methods, as transformers' ``GenerationMixin`` gives a causal
LM ``generate``.
"""

import math
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from ...flow import flow_dpm_solver_sample, flow_ode_sample
from ...modeling_outputs import VisualTokenizerDecoderOutput
from ...modules import unpatchify
from .configuration_v2flow import GUIDANCE_SCHEDULES

ADAPTIVE_ODE_METHODS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_STEP_ODE_METHODS = ("euler", "midpoint", "heun2", "heun3", "rk4", "explicit_adams", "implicit_adams")


@dataclass
class V2FlowDecodeStep(ModelOutput):
    r"""What one masked-AR step did (``decode(..., return_intermediates=True)``).

    Args:
        mask: tokens still unknown after the step ``[B, L]`` (1 = unknown; after the last step this is
            the original's unused ``mask_by_order`` value).
        predicted: tokens sampled in the step ``[B, L]`` (bool).
        decoder_hidden_states: MAR decoder output ``[B, L, W]``, or ``[2B, L, W]`` with guidance
            (conditional rows first, then rows conditioned on the unconditional embedding).
        flow_condition: decoder states of the sampled tokens, ordered sample-major then by position
            (both guidance halves when guided).
        flow_noise: the start noise of the sampled tokens ``[n, C]``.
        flow_samples: flow-head samples as computed, ``[2n, C]`` with guidance (the first half is kept,
            as in the original), ``[n, C]`` otherwise.
    """

    mask: torch.FloatTensor | None = None
    predicted: torch.BoolTensor | None = None
    decoder_hidden_states: torch.FloatTensor | None = None
    flow_condition: torch.FloatTensor | None = None
    flow_noise: torch.FloatTensor | None = None
    flow_samples: torch.FloatTensor | None = None


@dataclass
class V2FlowDecoderOutput(VisualTokenizerDecoderOutput):
    r"""``sample``: decoded DC-AE latents ``[B, C, h, w]`` in model space (divide by
    ``config.scaling_factor`` before DC-AE decoding); ``orders``: the random reveal order ``[B, L]``;
    ``steps``: per-step details when asked."""

    orders: torch.LongTensor | None = None
    steps: tuple[V2FlowDecodeStep, ...] | None = None


def unknown_after_step(step: int, num_steps: int, num_tokens: int, num_unknown: int) -> int:
    """Tokens left unknown after masked-AR ``step`` (0-based) of ``num_steps``: the cosine schedule
    ``floor(L cos(pi/2 (step + 1) / num_steps))``, clamped so that a step reveals at least one of the
    ``num_unknown`` tokens and keeps one (the last step reveals every token left whatever this says)."""
    count = math.floor(num_tokens * math.cos(math.pi / 2.0 * (step + 1) / num_steps))
    return max(1, min(num_unknown - 1, count))


def _checked_orders(orders: torch.Tensor, batch: int, length: int, device) -> torch.LongTensor:
    orders = orders.to(device=device, dtype=torch.long)
    expected = torch.arange(length, device=device).expand(batch, -1)
    if tuple(orders.shape) != (batch, length) or not torch.equal(orders.sort(dim=-1).values, expected):
        raise ValueError(f"orders must be one permutation of 0..{length - 1} per sample, [B, L] = {(batch, length)}")
    return orders


def _ode_step_size(method: str, num_inference_steps: int | None) -> float | None:
    """The fixed step of a CondOT solve with ``num_inference_steps`` (None: the adaptive solver decides)."""
    if num_inference_steps is None:
        return None
    if method in ADAPTIVE_ODE_METHODS:
        raise ValueError(
            f"num_inference_steps sets the steps of a fixed-step ODE method, but ode_method={method!r} is "
            f"adaptive (atol/rtol steer it); pick one of {FIXED_STEP_ODE_METHODS}"
        )
    return 1.0 / num_inference_steps


class V2FlowSamplingMixin:
    """The detokenizer's sampling loop of ``V2FlowModel``. Uses the model's ``config``, ``masked_transformer``,
    ``flow_head`` and ``unconditional_embedding`` (the condition of classifier-free guidance's unconditional
    branch)."""

    def random_orders(self, batch_size: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """A random permutation of the token positions per sample ``[B, L]``."""
        scores = torch.rand(batch_size, self.config.num_tokens, generator=generator, device=device)
        return scores.argsort(dim=-1)

    def sample_flow_tokens(
        self,
        condition: torch.Tensor,
        noise: torch.Tensor,
        guidance_scale: float | torch.Tensor = 1.0,
        flow_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        ode_method: str | None = None,
    ) -> torch.Tensor:
        r"""Sample one latent token per row of ``noise [n, C]`` with the flow head.

        ``condition`` is ``[n, W]``, or ``[2n, W]`` (conditional rows, then unconditional rows) for MAR
        guidance with ``guidance_scale``; the result then has ``2n`` rows, as the original computes
        them, of which the first ``n`` are the samples. ``linear_flow``: DPM-Solver++ with its fixed
        inner guidance (``flow_guidance_scale``) against the unconditional embedding; with MAR guidance
        both halves are sampled from the same noise (the second, conditioned on the unconditional MAR
        pass, is discarded; ``guidance_scale`` is not used). ``CondOT``: an ODE solve of the
        (MAR-guided) velocity; guided, both halves are equal.
        """
        config, head = self.config, self.flow_head
        count = noise.shape[0]
        if condition.shape[0] not in (count, 2 * count):
            raise ValueError(
                f"condition has {condition.shape[0]} rows for {count} noise rows; expected {count} (one per row) "
                f"or {2 * count} (conditional rows, then unconditional rows)"
            )
        guided = condition.shape[0] == 2 * count
        projected = head.project_condition(condition)  # once for every solver step

        if config.flow_method == "linear_flow":
            start = torch.cat([noise, noise]) if guided else noise
            unconditional = head.project_condition(self.unconditional_embedding.expand(start.shape[0], -1))

            def velocity_model(sample, timestep, row_condition):
                return head(sample, timestep, projected_condition=row_condition).float()

            return flow_dpm_solver_sample(
                velocity_model,
                start,
                projected,
                unconditional,
                guidance_scale=config.flow_guidance_scale if flow_guidance_scale is None else flow_guidance_scale,
                num_steps=num_inference_steps or config.flow_num_inference_steps,
                shift=config.flow_shift,
                time_scale=float(config.num_train_timesteps),
            )

        if guided:
            # the state keeps both halves (equal) as the original does: the adaptive solver's error norms
            # and hence its steps then match it bit for bit
            start = torch.cat([noise, noise])

            def velocity(sample, timestep):
                guided_velocity = head.guided_velocity(
                    sample[:count], timestep, None, guidance_scale, projected_condition=projected
                )
                return torch.cat([guided_velocity, guided_velocity])
        else:
            start = noise

            def velocity(sample, timestep):
                return head(sample, timestep.reshape(()), projected_condition=projected).float()

        method = ode_method or config.ode_method
        step_size = _ode_step_size(method, num_inference_steps)
        time_grid = torch.linspace(0, 1, config.ode_time_grid_size, device=noise.device)
        return flow_ode_sample(
            velocity, start, time_grid, method=method, atol=config.ode_atol, rtol=config.ode_rtol, step_size=step_size
        )

    @torch.no_grad()
    def sample_latent_tokens(
        self,
        conditions: torch.Tensor,
        num_ar_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_schedule: str | None = None,
        flow_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        ode_method: str | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        orders: torch.Tensor | None = None,
        return_intermediates: bool = False,
    ) -> V2FlowDecoderOutput:
        r"""The masked-AR loop on per-token conditions ``[B, L, W]`` -> DC-AE latents ``[B, C, h, w]``.

        Args:
            num_ar_steps: masked-AR steps (default ``config.num_ar_steps``).
            guidance_scale / guidance_schedule: MAR classifier-free guidance (see ``V2FlowConfig``).
            flow_guidance_scale: linear_flow's inner guidance (default 4.5).
            num_inference_steps: flow-head steps: DPM-Solver++ steps for linear_flow (default 20); for
                CondOT the steps of a fixed-step ``ode_method`` (the default dopri5 is adaptive).
            ode_method: CondOT's torchdiffeq method (default ``config.ode_method``).
            generator: draws the reveal orders and the flow noise.
            noise: start values of the flow per token ``[B, L, C]`` (raster order) instead of drawing them.
            orders: reveal orders ``[B, L]`` (tokens are revealed from the *end* of each order).
            return_intermediates: also return every step's details (``steps``).
        """
        config = self.config
        batch, length, channels = conditions.shape[0], config.num_tokens, config.token_dim
        device = conditions.device
        num_ar_steps = config.num_ar_steps if num_ar_steps is None else num_ar_steps
        if num_ar_steps < 1:
            raise ValueError(f"num_ar_steps must be >= 1, got {num_ar_steps}")
        guidance = config.resolved_guidance_scale(guidance_scale)
        schedule = guidance_schedule or config.guidance_schedule
        if schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
        if noise is not None and tuple(noise.shape) != (batch, length, channels):
            raise ValueError(
                f"noise must hold one start value per token, [B, L, C] = {(batch, length, channels)}, "
                f"got {tuple(noise.shape)}"
            )
        if orders is None:
            orders = self.random_orders(batch, generator, device)
        else:
            orders = _checked_orders(orders, batch, length, device)

        guided = guidance != 1.0
        unknown = torch.ones(batch, length, dtype=torch.bool, device=device)
        tokens = torch.zeros(batch, length, channels, dtype=torch.float32, device=device)
        unconditional = self.unconditional_embedding.to(conditions.dtype).expand(batch, length, -1)
        steps = []
        num_unknown = length  # per row; counted here, not read from a row (an empty batch has none)
        for step in range(num_ar_steps):
            if guided:
                hidden_states = self.masked_transformer(
                    torch.cat([tokens, tokens]), torch.cat([unknown, unknown]), torch.cat([conditions, unconditional])
                )
            else:
                hidden_states = self.masked_transformer(tokens, unknown, conditions)

            still_unknown = unknown_after_step(step, num_ar_steps, length, num_unknown)
            num_unknown = still_unknown
            next_unknown = torch.zeros_like(unknown).scatter(1, orders[:, :still_unknown], True)
            predicted = unknown.clone() if step == num_ar_steps - 1 else unknown & ~next_unknown
            unknown = next_unknown

            condition = hidden_states[torch.cat([predicted, predicted]) if guided else predicted]
            count = int(predicted.sum())
            if noise is not None:
                step_noise = noise[predicted].to(device=device, dtype=torch.float32)
            else:
                step_noise = torch.randn(count, channels, generator=generator, device=device, dtype=torch.float32)
            if schedule == "linear":  # float32 tensor arithmetic, as the original
                revealed = length - torch.tensor(float(still_unknown), device=device)
                step_guidance = 1 + (guidance - 1) * revealed / length
            else:
                step_guidance = guidance
            computed = step_noise
            if count:
                computed = self.sample_flow_tokens(
                    condition, step_noise, step_guidance, flow_guidance_scale, num_inference_steps, ode_method
                )
                tokens = tokens.clone()
                tokens[predicted] = computed[:count]
            if return_intermediates:
                steps.append(
                    V2FlowDecodeStep(
                        mask=unknown.float(),
                        predicted=predicted,
                        decoder_hidden_states=hidden_states,
                        flow_condition=condition,
                        flow_noise=step_noise,
                        flow_samples=computed,
                    )
                )
        sample = unpatchify(tokens, (config.grid_size, config.grid_size), config.patch_size, config.latent_channels)
        return V2FlowDecoderOutput(sample=sample, orders=orders, steps=tuple(steps) if return_intermediates else None)
