"""Class-conditional generation with the ViTok-v2 DiT, decoded by the ViTok-v2 AE."""

import torch
from diffusers import UniPCMultistepScheduler
from transformers import PreTrainedModel

from ...flow import classifier_free_guidance
from ...models.vitok_dit.modeling_vitok_dit import ViTokDiTTransformerModel
from ...modules import grid_positions
from ...schedulers import vitok_flow_sigmas, vitok_unipc_scheduler
from ..pipeline_utils import TokenizerGenerationPipeline


class ViTokDiTPipeline(TokenizerGenerationPipeline):
    r"""ViTok-v2 DiT + ViTok-v2 AE.

    Components: ``vae`` (``ViTokModel``), ``transformer`` (``ViTokDiTTransformerModel``),
    ``scheduler`` (diffusers ``UniPCMultistepScheduler`` with ``use_flow_sigmas=True``,
    ``prediction_type="flow_prediction"``: bit-identical to the original's ``FlowUniPCMultistepScheduler``
    once it is given the original sigma grid, which this pipeline does; ``vitok_unipc_scheduler()``
    builds it). Velocity convention ``noise - x_0`` (diffusers'); guidance ``u + s (c - u)``.
    Any diffusers flow-matching scheduler (e.g. ``FlowMatchEulerDiscreteScheduler``) can be swapped in.
    """

    fixed_token_count = False

    def __init__(
        self, vae: PreTrainedModel, transformer: ViTokDiTTransformerModel, scheduler: UniPCMultistepScheduler
    ):
        super().__init__(vae, transformer, scheduler)

    @classmethod
    def default_scheduler(cls, transformer, sampling=None) -> UniPCMultistepScheduler:
        """The original's sampler: diffusers UniPC set up as its FlowUniPC (``vitok_unipc_scheduler``)."""
        return vitok_unipc_scheduler()

    def _grid(self, height, width) -> tuple[int, int]:
        patch = self.vae.config.patch_size
        if height is None and width is None:
            side = int(round(self.transformer.config.num_tokens**0.5))
            if side * side != self.transformer.config.num_tokens:
                raise ValueError(
                    f"the transformer's default num_tokens {self.transformer.config.num_tokens} is not a square grid; "
                    "pass height and width"
                )
            return side, side
        if height is None or width is None:
            raise ValueError("give both height and width (pixels), or neither")
        if height <= 0 or width <= 0 or height % patch or width % patch:
            raise ValueError(
                f"height and width must be positive multiples of the tokenizer's patch size {patch}, "
                f"got {height}x{width}"
            )
        return height // patch, width // patch

    def _set_timesteps(self, num_inference_steps, device):
        scheduler = self.scheduler
        if isinstance(scheduler, UniPCMultistepScheduler) and scheduler.config.use_flow_sigmas:
            sigmas = vitok_flow_sigmas(
                num_inference_steps, scheduler.config.flow_shift, scheduler.config.num_train_timesteps
            )
            scheduler.set_timesteps(sigmas=sigmas, device=device)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | list[int] | torch.Tensor,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        height: int | None = None,
        width: int | None = None,
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
            num_inference_steps: scheduler steps (50 in the original training script's sampler).
            guidance_scale: classifier-free guidance scale (the original samples with 4; 1 = off).
            height / width: image size in pixels (multiples of the AE patch size); default: the
                transformer's ``num_tokens`` as a square grid.
            generator / latents: random generator(s), or the initial noise ``[B, rows * cols, in_channels]``.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (``[B, rows * cols, C]`` raster order).
            callback_on_step_end: ``callback(pipeline, step, timestep, tensors) -> dict`` after each step; the
                ``latents`` it returns replace the pipeline's (diffusers' convention).
            callback_on_step_end_tensor_inputs: the tensors the callback receives (``"latents"``).
        """
        config = self.transformer.config
        labels, guided = self.check_call(class_labels, guidance_scale, num_inference_steps, output_type)
        callback_inputs = self.check_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        rows, cols = self._grid(height, width)
        latents = self.prepare_latents(
            latents, (labels.shape[0], rows * cols, config.in_channels), generator, torch.float32
        )
        device = self._execution_device
        row_idx, col_idx = grid_positions(rows, cols, device=device)
        row_idx, col_idx = row_idx[0], col_idx[0]
        null_labels = torch.full_like(labels, self.transformer.null_class_label)
        model_labels = torch.cat([null_labels, labels]) if guided else labels
        dtype = self.transformer.dtype

        self._set_timesteps(num_inference_steps, device)
        step_kwargs = self.step_kwargs(generator)
        for index, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = torch.cat([latents, latents]) if guided else latents
            velocity = self.transformer(
                model_input.to(dtype),
                timestep=timestep.expand(model_input.shape[0]),
                class_labels=model_labels,
                row_idx=row_idx,
                col_idx=col_idx,
            ).sample.float()
            if guided:
                unconditional, conditional = velocity.chunk(2)
                velocity = classifier_free_guidance(conditional, unconditional, guidance_scale)
            latents = self.scheduler.step(velocity, timestep, latents, **step_kwargs).prev_sample
            latents = self.step_callback(callback_on_step_end, callback_inputs, index, timestep, latents)

        return self.decode_samples(latents, output_type, return_dict, grid_shape=(rows, cols))
