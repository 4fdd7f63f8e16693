"""Prompt -> V²Flow image tokens from a causal LM with the V²Flow vocabulary -> images (V²Flow + DC-AE)."""

import torch
from diffusers import AutoencoderDC, ImagePipelineOutput
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...models.v2flow import V2FlowModel
from .language_model import ImageTokenSampling, V2FlowVocabulary, generate_image_tokens
from .pipeline_v2flow import V2FlowPipeline


class V2FlowLlamaPipeline(V2FlowPipeline):
    r"""Text-to-image (or class-conditional, with class names as prompts) generation with a causal language
    model whose vocabulary was extended by ``hf_vtok.pipelines.v2flow.language_model.extend_vocabulary``.

    ``__call__``: each prompt becomes ``[BOS] prompt <begin_of_image>``; ``language_model.generate()`` (KV cache)
    appends ``tokenizer.config.num_tokens`` image tokens (``language_model.generate_image_tokens``): only image
    tokens inside the image span; classifier-free guidance over a conditional and an unconditional stream,
    ``u + s (c - u)``, the unconditional prompt being ``negative_prompt``, ``""`` by default; temperature,
    top-k, top-p; a ``torch.Generator`` for reproducibility. The ids then go through the V²Flow decoder and the
    DC-AE (``V2FlowPipeline.decode_tokens``).

    Args:
        vae: the DC-AE (``AutoencoderDC``).
        tokenizer: the V²Flow tokenizer (``V2FlowModel``).
        language_model: a transformers causal LM (``LlamaForCausalLM`` first) with the V²Flow vocabulary.
        text_tokenizer: its tokenizer, extended with the same tokens.
    """

    model_cpu_offload_seq = "language_model->tokenizer->vae"

    def __init__(
        self,
        vae: AutoencoderDC,
        tokenizer: V2FlowModel,
        language_model: PreTrainedModel,
        text_tokenizer: PreTrainedTokenizerBase,
    ):
        super().__init__(vae=vae, tokenizer=tokenizer)
        self.vocabulary = V2FlowVocabulary.from_tokenizer(text_tokenizer, tokenizer.config.codebook_size)
        rows = language_model.get_input_embeddings().weight.shape[0]
        if max(self.vocabulary.added_token_ids) >= rows:
            raise ValueError(
                f"the language model has {rows} embedding rows but the text tokenizer's V2Flow tokens go up to id "
                f"{max(self.vocabulary.added_token_ids)}: resize it (extend_vocabulary does)"
            )
        self.register_modules(language_model=language_model, text_tokenizer=text_tokenizer)

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image (the V²Flow tokenizer's ``num_tokens``)."""
        return self.tokenizer.config.num_tokens

    @torch.no_grad()
    def generate_image_tokens(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        generator: torch.Generator | None = None,
        **sampling,
    ) -> torch.LongTensor:
        """Prompts -> V²Flow image tokens ``[B, num_tokens]``; ``sampling``: ``ImageTokenSampling``'s options
        (see ``__call__``)."""
        return generate_image_tokens(
            self.language_model,
            self.text_tokenizer,
            self.vocabulary,
            self.num_image_tokens,
            prompt,
            negative_prompt,
            ImageTokenSampling(**sampling),
            generator,
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        generator: torch.Generator | None = None,
        num_ar_steps: int | None = None,
        decoder_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        **sampling,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one image per prompt.

        Args:
            prompt: text prompts (class-conditional models: the class names they were trained with).
            negative_prompt: the unconditional stream's prompt(s) for guidance (``""``: no text).
            generator: draws the image tokens and then the V²Flow decoder's noise.
            num_ar_steps, decoder_guidance_scale, num_inference_steps: the V²Flow decoder's settings.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (DC-AE latents).
            sampling: how the language model samples, ``ImageTokenSampling``'s options: ``guidance_scale``
                (classifier-free guidance of the language model; 1: one stream), ``temperature``, ``top_k``,
                ``top_p``, ``use_cache``, ``max_prompt_tokens``.
        """
        image_tokens = self.generate_image_tokens(prompt, negative_prompt, generator, **sampling)
        return self._images_output(
            image_tokens,
            output_type,
            return_dict,
            num_ar_steps=num_ar_steps,
            guidance_scale=decoder_guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
        )


__all__ = ["V2FlowLlamaPipeline"]
