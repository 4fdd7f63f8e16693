"""Class-conditional DiT generation with ADM diffusion on a 1D tokenizer (SoftVQ-VAE), as the original
``inference/generate_dit.py`` does it."""

import torch
from transformers import PreTrainedModel

from ...flow import classifier_free_guidance
from ...models.dit_1d import DiTTransformer1DModel
from ...schedulers import GaussianDiffusionScheduler
from ..pipeline_utils import TokenizerGenerationPipeline


class DiT1DPipeline(TokenizerGenerationPipeline):
    r"""ADM-style DiT on the latents of a 1D tokenizer, decoded through that tokenizer.

    Components: ``vae`` (hf_vtok tokenizer), ``transformer`` (``DiTTransformer1DModel``),
    ``scheduler`` (``GaussianDiffusionScheduler``: ancestral or DDIM, learned-range variance).
    Named ``DiT1DPipeline`` so that its ``model_index.json`` is never mistaken for diffusers' own
    ``DiTPipeline`` (2D latents of an ``AutoencoderKL``).

    With guidance the original runs the whole chain on the doubled batch ``[z, z]`` (guidance on the
    eps channels only, the variance channels of both halves passed through) and keeps the first
    half; this pipeline does the same, so the random stream of ancestral sampling matches it.
    """

    def __init__(
        self, vae: PreTrainedModel, transformer: DiTTransformer1DModel, scheduler: GaussianDiffusionScheduler
    ):
        super().__init__(vae, transformer, scheduler)

    def check_components(self) -> None:
        super().check_components()
        if self.scheduler.learns_variance != bool(self.transformer.config.learn_sigma):
            raise ValueError(
                f"scheduler variance_type {self.scheduler.config.variance_type!r} does not fit a transformer with "
                f"learn_sigma={self.transformer.config.learn_sigma}"
            )

    @classmethod
    def default_scheduler(cls, transformer, sampling=None) -> GaussianDiffusionScheduler:
        """The released recipe: cosine schedule, ancestral sampling, no clipping (``sampling`` sets only call
        arguments)."""
        variance = "learned_range" if transformer.config.learn_sigma else "fixed_small"
        return GaussianDiffusionScheduler(beta_schedule="cosine", variance_type=variance)

    def guided_model_output(
        self, latents: torch.Tensor, timestep: torch.Tensor, class_labels: torch.LongTensor, guidance_scale: float
    ) -> torch.Tensor:
        """The original ``forward_with_cfg`` on the doubled batch ``latents = [x, x']``, ``class_labels = [y, null]``.

        The model sees ``[x, x]`` (first half twice); the eps channels are guided
        ``u + s (c - u)`` and duplicated, the variance channels of both halves are kept.
        """
        half = latents[: latents.shape[0] // 2]
        output = self.transformer(torch.cat([half, half]), timestep=timestep, class_labels=class_labels).sample.to(
            torch.float32
        )
        channels = self.transformer.config.in_channels
        eps, rest = output[..., :channels], output[..., channels:]
        guided_eps = classifier_free_guidance(*eps.chunk(2), guidance_scale)
        return torch.cat([torch.cat([guided_eps, guided_eps]), rest], dim=-1)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
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
            num_inference_steps: respaced diffusion steps (ADM ``space_timesteps``).
            guidance_scale: classifier-free guidance scale on the eps prediction (1 = off).
            generator: random generator(s) for the initial noise and the ancestral / DDIM noise.
            latents: initial noise ``[B, num_tokens, in_channels]`` to start from.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            callback_on_step_end: ``callback(pipeline, step, timestep, tensors) -> dict`` after each step; the
                ``latents`` it returns replace the pipeline's (diffusers' convention).
            callback_on_step_end_tensor_inputs: the tensors the callback receives (``"latents"``).
                The callback sees the first half of the doubled chain (the images).
        """
        config = self.transformer.config
        labels, guided = self.check_call(class_labels, guidance_scale, num_inference_steps, output_type)
        callback_inputs = self.check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        if num_inference_steps > self.scheduler.config.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps {num_inference_steps} exceeds the {self.scheduler.config.num_train_timesteps} "
                "training timesteps"
            )
        batch = labels.shape[0]
        latents = self.prepare_latents(
            latents, (batch, config.num_tokens, config.in_channels), generator, torch.float32
        )
        device = self._execution_device
        if guided:
            latents = torch.cat([latents, latents])
            labels = torch.cat([labels, torch.full_like(labels, self.transformer.null_class_label)])

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # per-image generators draw the noise of both halves of the doubled chain (the second is never used)
        step_generator = generator + generator if guided and isinstance(generator, list) else generator
        step_kwargs = self.step_kwargs(step_generator)
        for index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            timesteps = timestep.expand(latents.shape[0])
            if guided:
                output = self.guided_model_output(latents, timesteps, labels, guidance_scale)
            else:
                output = self.transformer(latents, timestep=timesteps, class_labels=labels).sample.to(torch.float32)
            latents = self.scheduler.step(output, timestep, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                images = self.step_callback(callback_on_step_end, callback_inputs, index, timestep, latents[:batch])
                latents = torch.cat([images, latents[batch:]])

        return self.decode_samples(latents[:batch], output_type, return_dict)
