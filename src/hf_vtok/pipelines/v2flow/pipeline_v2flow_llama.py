"""Prompt -> V²Flow image tokens from a causal LM with the V²Flow vocabulary -> images (V²Flow + DC-AE)."""

import math

import torch
from diffusers import AutoencoderDC, ImagePipelineOutput
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ...models.v2flow import V2FlowModel
from ...models.v2flow.language_model import (
    ClassifierFreeGuidanceLogitsProcessor,
    ImageSpanLogitsProcessor,
    SeededSamplingLogitsProcessor,
    V2FlowVocabulary,
    left_padded_batch,
    prompt_ids,
)
from .pipeline_v2flow import V2FlowPipeline


class V2FlowLlamaPipeline(V2FlowPipeline):
    r"""Text-to-image (or class-conditional, with class names as prompts) generation with a causal language
    model whose vocabulary was extended by ``hf_vtok.models.v2flow.language_model.extend_vocabulary``.

    ``__call__``: each prompt becomes ``[BOS] prompt <begin_of_image>``; ``language_model.generate()`` (KV cache)
    appends ``tokenizer.config.num_tokens`` image tokens, sampled with the logits processors of
    ``language_model.py`` (only image tokens inside the image span; classifier-free guidance over a conditional
    and an unconditional stream, ``u + s (c - u)``, the unconditional prompt being ``negative_prompt``, ``""`` by
    default; temperature, top-k, top-p; a ``torch.Generator`` for reproducibility). The ids then go through the
    V²Flow decoder and the DC-AE (``V2FlowPipeline.decode_tokens``).

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

    def _pad_token_id(self) -> int:
        pad = self.text_tokenizer.pad_token_id
        return pad if pad is not None else self.vocabulary.end_of_image_token_id

    def logits_processors(
        self,
        guidance_scale: float,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
    ) -> LogitsProcessorList:
        """Guidance (two streams when ``guidance_scale != 1``), the image-span mask, the warpers, seeded sampling."""
        guided = guidance_scale != 1.0
        processors = [ClassifierFreeGuidanceLogitsProcessor(guidance_scale)] if guided else []
        processors.append(ImageSpanLogitsProcessor(self.vocabulary, self.num_image_tokens))
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k:
            processors.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
        processors.append(SeededSamplingLogitsProcessor(generator, paired=guided))
        return LogitsProcessorList(processors)

    @torch.no_grad()
    def generate_image_tokens(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        max_prompt_tokens: int | None = None,
    ) -> torch.LongTensor:
        """Prompts -> V²Flow code ids ``[B, num_tokens]`` (see ``__call__``)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(text, str) for text in prompts):
            raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None: off), got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        guided = guidance_scale != 1.0
        streams = prompts + negatives if guided else prompts
        sequences = [prompt_ids(self.text_tokenizer, text, self.vocabulary, max_prompt_tokens) for text in streams]
        input_ids, attention_mask = left_padded_batch(sequences, self._pad_token_id())
        device = self.language_model.device
        length = self.num_image_tokens
        generation_config = GenerationConfig(
            do_sample=False,  # SeededSamplingLogitsProcessor samples; greedy picks its choice
            max_new_tokens=length,
            min_new_tokens=length,
            use_cache=use_cache,
            pad_token_id=self._pad_token_id(),
            bos_token_id=self.text_tokenizer.bos_token_id,
            eos_token_id=None,
        )
        output = self.language_model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=generation_config,
            logits_processor=self.logits_processors(guidance_scale, temperature, top_k, top_p, generator),
        )
        return self.vocabulary.ids_to_codes(output[: len(prompts), -length:])

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] = "",
        guidance_scale: float = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        max_prompt_tokens: int | None = None,
        num_ar_steps: int | None = None,
        decoder_guidance_scale: float | None = None,
        num_inference_steps: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate one image per prompt.

        Args:
            prompt: text prompts (class-conditional models: the class names they were trained with).
            negative_prompt: the unconditional stream's prompt(s) for guidance (``""``: no text).
            guidance_scale: classifier-free guidance of the language model (1: one stream, no guidance).
            temperature, top_k, top_p: sampling of the image tokens (top_k 0 / None and top_p None / 1: off).
            generator: draws the image tokens and then the V²Flow decoder's noise.
            use_cache: ``generate()``'s KV cache (False recomputes the whole prefix per token).
            max_prompt_tokens: cut longer prompts to this many text tokens.
            num_ar_steps, decoder_guidance_scale, num_inference_steps: the V²Flow decoder's settings.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (DC-AE latents).
        """
        codes = self.generate_image_tokens(
            prompt, negative_prompt, guidance_scale, temperature, top_k, top_p, generator, use_cache, max_prompt_tokens
        )
        images = self.decode_tokens(
            codes,
            output_type=output_type,
            num_ar_steps=num_ar_steps,
            guidance_scale=decoder_guidance_scale,
            num_inference_steps=num_inference_steps,
            generator=generator,
        )
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


__all__ = ["V2FlowLlamaPipeline"]
