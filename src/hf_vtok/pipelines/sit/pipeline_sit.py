"""Class-conditional SiT generation on a 1D tokenizer (SoftVQ-VAE / MAETok), as the original
``inference/generate_sit.py`` + ``modelling/samplers.py`` do it."""

import torch
from transformers import PreTrainedModel

from ...flow import classifier_free_guidance
from ...models.sit import SiTTransformer1DModel
from ...schedulers import SiTFlowScheduler
from ..pipeline_utils import TokenizerGenerationPipeline


class SiTPipeline(TokenizerGenerationPipeline):
    r"""SiT on the latents of a 1D tokenizer, decoded through that tokenizer.

    Components: ``vae`` (an hf_vtok tokenizer: ``decode(latents).sample`` images in [-1, 1],
    latent normalisation in ``config.scaling_factor`` / ``shift_factor``), ``transformer``
    (``SiTTransformer1DModel``), ``scheduler`` (``SiTFlowScheduler``: ODE Euler / Heun or SDE
    Euler-Maruyama, linear or cosine path). The sampler state is float64 as in the original; the
    transformer runs in its own dtype.

    ```python
    >>> import hf_vtok
    >>> pipe = hf_vtok.SiTPipeline.from_pretrained("sit-xl_maetok-b-128")      # folder or Hub id
    >>> images = pipe(class_labels=[207, 360], num_inference_steps=250, guidance_scale=1.75,
    ...               guidance_interval=(0.0, 0.7), generator=torch.Generator().manual_seed(0)).images
    ```
    """

    def __init__(self, vae: PreTrainedModel, transformer: SiTTransformer1DModel, scheduler: SiTFlowScheduler):
        super().__init__(vae, transformer, scheduler)

    @classmethod
    def default_scheduler(cls, transformer, sampling=None) -> SiTFlowScheduler:
        """The scheduler of a release's ``sampling`` recipe (its ``sampler`` / ``path_type``; default SDE, linear)."""
        sampling = sampling or {}
        return SiTFlowScheduler(sampler=sampling.get("sampler", "sde"), path_type=sampling.get("path_type", "linear"))

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: tuple[str, ...] = ("latents",),
    ):
        r"""Generate one image per class label.

        Args:
            class_labels: class ids (``0 .. num_classes - 1``; also ``[[id], ...]``).
            num_inference_steps: sampler steps (ODE: Euler steps on ``linspace(1, 0)``; SDE: the grid
                ``linspace(1, 0.04, n)`` then a mean-only step to 0).
            guidance_scale: classifier-free guidance scale (1 = off). Guidance is applied on the
                velocity (ODE) or the SDE drift, as the original.
            guidance_interval: ``(low, high)`` flow times (``t = 1`` is noise): guidance applies at steps
                whose start time lies in the interval, the conditional branch alone elsewhere
                (the released recipe uses ``(0.0, 0.7)``).
            generator: random generator(s) for the initial noise and the SDE noise.
            latents: initial noise ``[B, num_tokens, in_channels]`` to start from instead of drawing it.
            output_type: ``"pil"``, ``"np"`` (float [0, 1]), ``"pt"`` or ``"latent"`` (normalised latents).
            callback_on_step_end: ``callback(pipeline, step, timestep, tensors) -> dict`` after each step; the
                ``latents`` it returns replace the pipeline's (diffusers' convention).
            callback_on_step_end_tensor_inputs: the tensors the callback receives (``"latents"``).
        """
        config = self.transformer.config
        labels, guided = self.check_call(class_labels, guidance_scale, num_inference_steps, output_type)
        callback_inputs = self.check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        low, high = (float(value) for value in guidance_interval)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"guidance_interval must satisfy 0 <= low <= high <= 1 (flow time, 1 = noise), got {guidance_interval}"
            )
        shape = (labels.shape[0], config.num_tokens, config.in_channels)
        latents = self.prepare_latents(latents, shape, generator, torch.float64)
        device = self._execution_device
        null_labels = torch.full_like(labels, self.transformer.null_class_label) if guided else None
        dtype = self.transformer.dtype

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self.step_kwargs(generator)
        timesteps = self.scheduler.timesteps
        for index in self.progress_bar(range(len(timesteps))):
            time, interval_start = timesteps[index], float(self.scheduler.interval_start_times[index])
            guide_now = guided and low <= interval_start <= high
            model_input = torch.cat([latents, latents]) if guide_now else latents
            model_labels = torch.cat([labels, null_labels]) if guide_now else labels
            velocity = self.transformer(
                model_input.to(dtype),
                timestep=time.to(torch.float32).expand(model_input.shape[0]),
                class_labels=model_labels,
            ).sample.to(torch.float64)
            if guide_now:
                velocity = classifier_free_guidance(*velocity.chunk(2), guidance_scale)
            latents = self.scheduler.step(velocity, time, latents, **step_kwargs).prev_sample
            latents = self.step_callback(callback_on_step_end, callback_inputs, index, time, latents)

        return self.decode_samples(latents.to(torch.float32), output_type, return_dict)
