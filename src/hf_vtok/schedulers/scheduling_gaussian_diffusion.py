"""ADM Gaussian diffusion (guided-diffusion / DiT) as a diffusers scheduler.

Reproduces ``create_diffusion(str(steps), noise_schedule)`` of the DiT code exactly: the 1000-step
linear or cosine beta schedule, ADM's timestep respacing (``space_timesteps``: evenly strided with
Python rounding, betas recomputed from the kept cumulative alphas), the learned-range variance,
the tables in float64 read out as float32, ancestral (``p_sample``) and DDIM steps.

diffusers' DDPM / DDIM schedulers cannot stand in: they step to ``t - T // n`` (ADM's strided
timesteps such as 0, 4, 8, ..., 995, 999 for 250 steps are not uniform), compute their tables in
float32, and ``DiTPipeline`` drops the learned variance.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "cosine")
VARIANCE_TYPES = ("learned_range", "learned", "fixed_small", "fixed_large")
SAMPLERS = ("ancestral", "ddim")
PREDICTION_TYPES = ("epsilon", "sample")


def named_beta_schedule(name: str, num_train_timesteps: int) -> np.ndarray:
    """ADM's ``get_named_beta_schedule`` (float64)."""
    if name == "linear":
        scale = 1000 / num_train_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_train_timesteps, dtype=np.float64)
    if name == "cosine":

        def alpha_bar(time):
            return math.cos((time + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [
                min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), 0.999)
                for i in range(num_train_timesteps)
            ]
        )
    raise ValueError(f"unknown beta_schedule {name!r}; expected one of {BETA_SCHEDULES}")


def space_timesteps(num_train_timesteps: int, section_counts: int | str | list[int]) -> list[int]:
    """ADM's respacing: the kept timesteps (sorted) of ``num_train_timesteps``.

    ``section_counts``: a step count (``250``), comma-separated counts per equal section (``"10,15,20"``),
    or ``"ddimN"`` (a constant integer stride giving exactly N steps).
    """
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        desired = int(section_counts[len("ddim") :])
        for stride in range(1, num_train_timesteps):
            if len(range(0, num_train_timesteps, stride)) == desired:
                return list(range(0, num_train_timesteps, stride))
        raise ValueError(f"cannot create exactly {desired} steps out of {num_train_timesteps} with an integer stride")
    if isinstance(section_counts, int):
        section_counts = [section_counts]
    elif isinstance(section_counts, str):
        try:
            section_counts = [int(count) for count in section_counts.split(",")]
        except ValueError:
            raise ValueError(
                f"malformed timestep respacing {section_counts!r}: expected '250', '10,15,20' or 'ddim50'"
            ) from None
    size_per, extra = divmod(num_train_timesteps, len(section_counts))
    start, kept = 0, []
    for index, count in enumerate(section_counts):
        size = size_per + (1 if index < extra else 0)
        if count <= 0 or size < count:
            raise ValueError(f"cannot divide a section of {size} timesteps into {count} steps")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):  # accumulated float stride + Python round, exactly as ADM
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass
class GaussianDiffusionSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next (less noisy) kept timestep; ``pred_original_sample``: predicted x_0."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class GaussianDiffusionScheduler(SchedulerMixin, ConfigMixin):
    """ADM Gaussian diffusion sampling (``DiT1DPipeline``'s scheduler).

    Args:
        num_train_timesteps: length of the training chain (1000).
        beta_schedule: ``"linear"`` (1e-4..0.02) or ``"cosine"`` (Nichol & Dhariwal, betas capped at 0.999).
        variance_type: ``"learned_range"`` (the model's extra channels interpolate the log variance
            between the posterior and beta; DiT's ``learn_sigma``), ``"learned"``, ``"fixed_small"``,
            ``"fixed_large"``.
        prediction_type: ``"epsilon"`` or ``"sample"`` (x_0).
        clip_sample: clip the predicted x_0 to [-1, 1] (ADM's ``clip_denoised``; the DiT generation script uses False).
        sampler: ``"ancestral"`` (``p_sample``: one normal draw per step, also on the last step where it
            is multiplied by 0, so the random stream matches the original) or ``"ddim"``.
        eta: DDIM noise scale (0 = deterministic; for eta > 0 one draw per step, as the original).

    ``set_timesteps(num_inference_steps)`` respaces like ``create_diffusion(str(num_inference_steps))``
    (``timestep_respacing`` gives other ADM strings, e.g. ``"ddim50"``); ``timesteps`` holds the kept
    original timesteps, which is what the model is fed. Model outputs with ``2 * C`` channels on the
    last dimension are ``[eps | variance values]``.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        variance_type: str = "learned_range",
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        sampler: str = "ancestral",
        eta: float = 0.0,
    ):
        for name, value, allowed in (
            ("beta_schedule", beta_schedule, BETA_SCHEDULES),
            ("variance_type", variance_type, VARIANCE_TYPES),
            ("prediction_type", prediction_type, PREDICTION_TYPES),
            ("sampler", sampler, SAMPLERS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.train_betas = named_beta_schedule(beta_schedule, num_train_timesteps)
        self.train_alphas_cumprod = np.cumprod(1.0 - self.train_betas)
        self.set_timesteps(num_train_timesteps)

    @property
    def learns_variance(self) -> bool:
        return self.config.variance_type in ("learned", "learned_range")

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timestep_respacing: str | list[int] | None = None,
    ) -> None:
        """Keep ``num_inference_steps`` evenly strided timesteps (or an ADM respacing string) and respace the betas."""
        spec = timestep_respacing if timestep_respacing is not None else num_inference_steps
        if spec is None:
            raise ValueError("set_timesteps needs num_inference_steps or timestep_respacing")
        kept = space_timesteps(self.config.num_train_timesteps, spec)
        betas, last = [], 1.0
        for index in kept:
            alpha_cumprod = self.train_alphas_cumprod[index]
            betas.append(1.0 - alpha_cumprod / last)
            last = alpha_cumprod
        self._build_tables(np.array(betas, dtype=np.float64))
        self.kept_timesteps = kept
        self._spaced_index = {timestep: index for index, timestep in enumerate(kept)}
        self.num_inference_steps = len(kept)
        self.timesteps = torch.tensor(kept[::-1], dtype=torch.int64, device=device)

    def _build_tables(self, betas: np.ndarray) -> None:
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        if len(betas) > 1:  # the posterior variance is 0 at the first step: clip its log with the next one
            posterior_log_variance = np.log(np.append(posterior_variance[1], posterior_variance[1:]))
        else:
            posterior_log_variance = np.log(np.maximum(posterior_variance, 1e-20))
        fixed_large = np.append(posterior_variance[1], betas[1:]) if len(betas) > 1 else betas
        self.betas = betas
        self.alphas_cumprod = alphas_cumprod
        self._device_tables = {}
        self._tables = {
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_log_variance,
            "log_betas": np.log(betas),
            "fixed_large_variance": fixed_large,
            "fixed_large_log_variance": np.log(fixed_large),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
        }

    # ----------------------------------------------------------------------------------------------
    def _indices(self, timestep, batch: int, device) -> torch.Tensor:
        """Spaced indices ``[B]`` of a scalar or per-sample timestep (original timestep values)."""
        values = torch.as_tensor(timestep).reshape(-1).tolist()
        if len(values) == 1:
            values = values * batch
        if len(values) != batch:
            raise ValueError(f"timestep holds {len(values)} values for a batch of {batch}")
        try:
            return torch.tensor([self._spaced_index[int(value)] for value in values], device=device)
        except KeyError as error:
            raise ValueError(
                f"timestep {error.args[0]} is not one of the kept timesteps {self.kept_timesteps[:8]}...; "
                "call set_timesteps first and step through scheduler.timesteps"
            ) from None

    def _extract(self, name: str, indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table values at ``indices`` as float32 ``[B, 1, ...]`` (ADM's ``_extract_into_tensor``)."""
        key = (name, like.device)
        if key not in self._device_tables:
            self._device_tables[key] = torch.from_numpy(self._tables[name]).to(like.device)
        values = self._device_tables[key][indices].float()
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    def split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """``(prediction, variance values or None)`` from the model output (channels on the last dimension)."""
        channels = sample.shape[-1]
        if self.learns_variance:
            if model_output.shape[-1] != 2 * channels:
                raise ValueError(
                    f"variance_type {self.config.variance_type!r} needs model outputs with 2 x {channels} channels "
                    f"(last dimension), got shape {tuple(model_output.shape)}"
                )
            return model_output[..., :channels], model_output[..., channels:]
        if model_output.shape[-1] != channels:
            raise ValueError(
                f"model output shape {tuple(model_output.shape)} does not match the sample {tuple(sample.shape)}"
            )
        return model_output, None

    def model_mean_variance(
        self, model_output: torch.Tensor, timestep, sample: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """ADM's ``p_mean_variance``: ``mean``, ``log_variance`` and ``pred_original_sample`` of p(x_{t-1} | x_t)."""
        indices = self._indices(timestep, sample.shape[0], sample.device)
        prediction, variance_values = self.split_model_output(model_output, sample)
        variance_type = self.config.variance_type
        if variance_type == "learned_range":
            min_log = self._extract("posterior_log_variance_clipped", indices, sample)
            max_log = self._extract("log_betas", indices, sample)
            fraction = (variance_values + 1) / 2  # model values in [-1, 1] span [min, max]
            log_variance = fraction * max_log + (1 - fraction) * min_log
        elif variance_type == "learned":
            log_variance = variance_values
        else:
            name = "fixed_large_log_variance" if variance_type == "fixed_large" else "posterior_log_variance_clipped"
            log_variance = self._extract(name, indices, sample) + torch.zeros_like(sample)
        if self.config.prediction_type == "sample":
            pred_original = prediction
        else:
            pred_original = (
                self._extract("sqrt_recip_alphas_cumprod", indices, sample) * sample
                - self._extract("sqrt_recipm1_alphas_cumprod", indices, sample) * prediction
            )
        if self.config.clip_sample:
            pred_original = pred_original.clamp(-1, 1)
        mean = (
            self._extract("posterior_mean_coef1", indices, sample) * pred_original
            + self._extract("posterior_mean_coef2", indices, sample) * sample
        )
        return {"mean": mean, "log_variance": log_variance, "pred_original_sample": pred_original, "indices": indices}

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> GaussianDiffusionSchedulerOutput | tuple:
        """One reverse step from ``timestep`` (a value of ``self.timesteps``).

        ``noise`` replaces the normal draw of this step (same shape as ``sample``).
        """
        model_output = model_output.to(sample.dtype)
        out = self.model_mean_variance(model_output, timestep, sample)
        indices, pred_original = out["indices"], out["pred_original_sample"]
        nonzero = (indices != 0).float().reshape(-1, *([1] * (sample.dim() - 1)))  # no noise into x_0

        def draw():
            if noise is not None:
                if noise.shape != sample.shape:
                    raise ValueError(f"noise has shape {tuple(noise.shape)}, the sample {tuple(sample.shape)}")
                return noise.to(sample.device, sample.dtype)
            return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=sample.dtype)

        if self.config.sampler == "ancestral":
            prev_sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * draw()
        else:
            eps = (
                self._extract("sqrt_recip_alphas_cumprod", indices, sample) * sample - pred_original
            ) / self._extract("sqrt_recipm1_alphas_cumprod", indices, sample)
            alpha_bar = self._extract("alphas_cumprod", indices, sample)
            alpha_bar_prev = self._extract("alphas_cumprod_prev", indices, sample)
            eta = self.config.eta
            sigma = (
                eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
            )
            prev_sample = pred_original * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
            if eta > 0:
                prev_sample = prev_sample + nonzero * sigma * draw()
        if not return_dict:
            return (prev_sample, pred_original)
        return GaussianDiffusionSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``q(x_t | x_0)`` on the training chain (``timesteps`` in 0..num_train_timesteps-1)."""
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        timesteps = timesteps.long().to(original_samples.device)

        def extract(table):
            return torch.from_numpy(table).to(original_samples.device)[timesteps].float().reshape(shape)

        alphas_cumprod = self.train_alphas_cumprod
        return extract(np.sqrt(alphas_cumprod)) * original_samples + extract(np.sqrt(1.0 - alphas_cumprod)) * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps
