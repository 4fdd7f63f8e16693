"""V²Flow image tokens inside a causal language model (LLaMA first): vocabulary extension, sequences, sampling.

V²Flow's codebook lives in the LLM's input-embedding space: the resampler mixes rows of the frozen LLM
``embed_tokens`` matrix (``V2FlowModel.llm_embed_tokens``) and the cosine-similarity codebook quantizes that
mixture *in the same space*, with no projection between the two (the only projection in V²Flow,
``V2FlowModel.projector``, maps code vectors to the MAR decoder's width and plays no part here). A codebook row is
therefore a direction in the LLM's embedding space, stored with unit norm. ``extend_vocabulary`` adds one token
per codebook row plus begin / end-of-image tokens with the tokenizer's and model's own APIs (``add_tokens``,
``resize_token_embeddings``) and initialises

- the input embedding of image token ``k`` as codebook row ``k`` rescaled to the mean norm of the text rows
  (the codebook keeps only directions; the rescale puts them at the length the LLM's text embeddings have);
- the output (``lm_head``) row of image token ``k``, if the model does not tie them, as the same direction
  at the mean norm of the text output rows, so that an image token's logit measures the hidden state's
  alignment with its codebook row at the scale of the text logits;
- begin / end-of-image (and any rows ``pad_to_multiple_of`` adds) with transformers' mean resizing
  (the mean and covariance of the text rows).

Image sequences are ``[BOS] prompt <begin_of_image> img_0 ... img_{L-1} <end_of_image>``, the image tokens in
V²Flow's raster order; the loss is on the image tokens only. Generation runs ``generate()`` with KV cache and
the logits processors below (classifier-free guidance over a conditional and an unconditional stream, image
tokens only inside the image span, seeded sampling).
"""

import math
from dataclasses import dataclass

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import logging

from ...flow import classifier_free_guidance

logger = logging.get_logger(__name__)

IMAGE_TOKEN_TEMPLATE = "<|v2flow_{}|>"
BEGIN_OF_IMAGE_TOKEN = "<|v2flow_begin_of_image|>"
END_OF_IMAGE_TOKEN = "<|v2flow_end_of_image|>"
IGNORE_INDEX = -100  # label of positions without loss (transformers' cross-entropy ignore index)


@dataclass(frozen=True)
class V2FlowVocabulary:
    """Where the V²Flow tokens sit in a language model's vocabulary: V²Flow image token ``k`` (codebook row ``k``)
    has the language-model id ``image_token_offset + k``."""

    image_token_offset: int
    num_image_tokens: int
    begin_of_image_token_id: int
    end_of_image_token_id: int

    @property
    def image_token_ids(self) -> range:
        return range(self.image_token_offset, self.image_token_offset + self.num_image_tokens)

    @property
    def added_token_ids(self) -> list[int]:
        """Every id the extension added (image tokens, then begin / end-of-image)."""
        return [*self.image_token_ids, self.begin_of_image_token_id, self.end_of_image_token_id]

    def is_image_token(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.image_token_offset) & (ids < self.image_token_offset + self.num_image_tokens)

    def image_tokens_to_ids(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """V²Flow image tokens ``[..., L]`` (ids in ``[0, num_image_tokens)``) -> language-model ids."""
        image_tokens = torch.as_tensor(image_tokens)
        if image_tokens.numel() and (int(image_tokens.min()) < 0 or int(image_tokens.max()) >= self.num_image_tokens):
            raise ValueError(
                f"V2Flow image tokens must be in [0, {self.num_image_tokens}), got "
                f"{int(image_tokens.min())}..{int(image_tokens.max())}"
            )
        return image_tokens.long() + self.image_token_offset

    def ids_to_image_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Language-model ids of image tokens -> V²Flow image tokens (an error names any other id)."""
        ids = torch.as_tensor(ids)
        outside = ~self.is_image_token(ids)
        if bool(outside.any()):
            raise ValueError(
                f"ids {sorted(set(ids[outside].tolist()))[:5]} are not V2Flow image tokens "
                f"({self.image_token_offset}..{self.image_token_offset + self.num_image_tokens - 1})"
            )
        return ids.long() - self.image_token_offset

    @classmethod
    def from_tokenizer(cls, tokenizer, num_image_tokens: int) -> "V2FlowVocabulary":
        """The layout of a tokenizer extended by ``extend_vocabulary`` (an error if it was not)."""
        names = [IMAGE_TOKEN_TEMPLATE.format(index) for index in range(num_image_tokens)]
        names += [BEGIN_OF_IMAGE_TOKEN, END_OF_IMAGE_TOKEN]
        vocabulary = tokenizer.get_vocab()
        missing = [name for name in names if name not in vocabulary]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {len(missing)} of the {len(names)} V2Flow tokens (e.g. {missing[0]!r}): "
                "extend it with hf_vtok.pipelines.v2flow.language_model.extend_vocabulary "
                "(or the codebook size differs)"
            )
        ids = [vocabulary[name] for name in names]
        offset = ids[0]
        if ids[:num_image_tokens] != list(range(offset, offset + num_image_tokens)):
            raise ValueError("the tokenizer's V2Flow image tokens do not have consecutive ids")
        return cls(offset, num_image_tokens, ids[-2], ids[-1])


def _mean_row_norm(weight: torch.Tensor) -> float:
    return float(weight.detach().float().norm(dim=-1).mean())


@torch.no_grad()
def extend_vocabulary(
    language_model,
    tokenizer,
    image_tokenizer,
    pad_to_multiple_of: int | None = None,
) -> V2FlowVocabulary:
    r"""Add the V²Flow visual vocabulary of ``image_tokenizer`` (a ``V2FlowModel`` with an LLM vocabulary) to
    ``language_model`` (a transformers causal LM) and its ``tokenizer``, in place.

    The existing rows (every text token's input and output embedding) are left bit-identical. New ids follow
    the tokenizer's current length: ``codebook_size`` image tokens ``<|v2flow_k|>`` (consecutive ids), then
    ``<|v2flow_begin_of_image|>`` and ``<|v2flow_end_of_image|>``, all added as special tokens. See the module
    docstring for the initialisation. ``pad_to_multiple_of`` goes to ``resize_token_embeddings``.
    The model and tokenizer save and load with ``save_pretrained`` / ``from_pretrained`` as usual; recover the
    layout with ``V2FlowVocabulary.from_tokenizer(tokenizer, codebook_size)``.
    """
    config = image_tokenizer.config
    if not config.use_llm_vocabulary or image_tokenizer.llm_embed_tokens is None:
        raise ValueError(
            "the V2Flow model has no LLM vocabulary (config.use_llm_vocabulary=False): its codebook is not in an "
            "LLM's embedding space, so it cannot initialise language-model tokens"
        )
    input_embeddings = language_model.get_input_embeddings()
    width = input_embeddings.weight.shape[1]
    codebook = image_tokenizer.quantizer.codebook.detach().float()
    if codebook.shape[1] != width:
        raise ValueError(
            f"the V2Flow codebook has {codebook.shape[1]}-d codes (config.llm_embed_dim={config.llm_embed_dim}) but "
            f"the language model's input embeddings are {width}-d: the codebook lives in another LLM's embedding space"
        )
    names = [IMAGE_TOKEN_TEMPLATE.format(index) for index in range(config.codebook_size)]
    present = [name for name in (*names, BEGIN_OF_IMAGE_TOKEN, END_OF_IMAGE_TOKEN) if name in tokenizer.get_vocab()]
    if present:
        raise ValueError(f"the tokenizer already has V2Flow tokens (e.g. {present[0]!r}): it was extended before")

    num_text_tokens = len(tokenizer)
    if num_text_tokens > input_embeddings.weight.shape[0]:
        raise ValueError(
            f"the tokenizer has {num_text_tokens} tokens but the model only {input_embeddings.weight.shape[0]} "
            "embedding rows"
        )
    text_rows = input_embeddings.weight[:num_text_tokens]
    # V2Flow's buffer is the LLM checkpoint's whole embed_tokens matrix (padding rows included)
    reference = image_tokenizer.llm_embed_tokens
    aligned = reference.shape == input_embeddings.weight.shape and torch.allclose(
        input_embeddings.weight.float(), reference.float(), rtol=1e-2, atol=1e-3
    )
    if not aligned:
        logger.warning(
            "the language model's input embeddings are not the LLM vocabulary the V2Flow tokenizer was trained "
            f"with (V2FlowModel.llm_embed_tokens, {tuple(reference.shape)}): the image-token embeddings will not be "
            "aligned with its text tokens"
        )

    tokenizer.add_tokens(names, special_tokens=True)
    tokenizer.add_tokens([BEGIN_OF_IMAGE_TOKEN, END_OF_IMAGE_TOKEN], special_tokens=True)
    vocabulary = V2FlowVocabulary.from_tokenizer(tokenizer, config.codebook_size)

    output_embeddings = language_model.get_output_embeddings()
    input_norm = _mean_row_norm(text_rows)
    output_norm = _mean_row_norm(output_embeddings.weight[:num_text_tokens]) if output_embeddings is not None else None
    # rows past the tokenizer's length (a padded vocabulary) are unused: new ids may take them
    rows_needed = max(len(tokenizer), input_embeddings.weight.shape[0])
    language_model.resize_token_embeddings(rows_needed, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=True)

    image_rows = slice(vocabulary.image_token_offset, vocabulary.image_token_offset + config.codebook_size)
    input_weight = language_model.get_input_embeddings().weight
    input_weight[image_rows] = (codebook * input_norm).to(input_weight.dtype)
    output_embeddings = language_model.get_output_embeddings()
    if output_embeddings is not None and output_embeddings.weight.data_ptr() != input_weight.data_ptr():
        output_weight = output_embeddings.weight
        output_weight[image_rows] = (codebook * output_norm).to(output_weight.dtype)
        if getattr(output_embeddings, "bias", None) is not None:
            output_embeddings.bias[image_rows] = 0
    return vocabulary


# --------------------------------------------------------------------------------------------------
# sequences


def prompt_ids(
    tokenizer, prompt: str, vocabulary: V2FlowVocabulary, max_prompt_tokens: int | None = None
) -> list[int]:
    """``[BOS] prompt <begin_of_image>``: the prefix an image follows (``""`` is the unconditional prompt).
    The prompt's own tokens are cut to ``max_prompt_tokens``."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompts are strings, got {type(prompt).__name__}")
    text = tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    if max_prompt_tokens is not None:
        text = text[:max_prompt_tokens]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return [*bos, *text, vocabulary.begin_of_image_token_id]


def image_sequence(
    tokenizer,
    prompt: str,
    image_tokens: torch.Tensor,
    vocabulary: V2FlowVocabulary,
    length: int,
    max_prompt_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """One training example: ``input_ids``, ``attention_mask`` and ``labels`` of
    ``prompt_ids + image tokens + <end_of_image>``, right-padded to ``length``; labels only on image tokens."""
    prefix = prompt_ids(tokenizer, prompt, vocabulary, max_prompt_tokens)
    image = vocabulary.image_tokens_to_ids(image_tokens.reshape(-1)).tolist()
    ids = [*prefix, *image, vocabulary.end_of_image_token_id]
    if len(ids) > length:
        raise ValueError(f"a sequence of {len(ids)} tokens does not fit length {length}: raise it or cut the prompts")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else vocabulary.end_of_image_token_id
    padding = length - len(ids)
    labels = [IGNORE_INDEX] * len(prefix) + image + [IGNORE_INDEX] * (1 + padding)
    return {
        "input_ids": torch.tensor(ids + [pad] * padding),
        "attention_mask": torch.tensor([1] * len(ids) + [0] * padding),
        "labels": torch.tensor(labels),
    }


def left_padded_batch(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of prompts of different lengths, padded on the left for
    ``generate()``."""
    longest = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, longest - len(sequence) :] = torch.tensor(sequence)
        mask[row, longest - len(sequence) :] = 1
    return ids, mask


# --------------------------------------------------------------------------------------------------
# logits processors


class ImageSpanLogitsProcessor(LogitsProcessor):
    """Inside an image span only image tokens may come: after a row's last ``<begin_of_image>`` (with no
    ``<end_of_image>`` since) and before ``num_tokens_per_image`` image tokens, every other id is masked; once
    the image is complete only ``<end_of_image>`` is allowed. Rows outside a span are unchanged (text)."""

    def __init__(self, vocabulary: V2FlowVocabulary, num_tokens_per_image: int):
        if num_tokens_per_image <= 0:
            raise ValueError(f"num_tokens_per_image must be positive, got {num_tokens_per_image}")
        self.vocabulary, self.num_tokens_per_image = vocabulary, num_tokens_per_image

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocabulary, length = self.vocabulary, input_ids.shape[1]
        begins = input_ids == vocabulary.begin_of_image_token_id
        positions = torch.arange(length, device=input_ids.device)
        last_begin = torch.where(begins, positions, -1).amax(dim=1)  # -1: no span
        after_begin = positions[None] > last_begin[:, None]
        closed = ((input_ids == vocabulary.end_of_image_token_id) & after_begin).any(dim=1)
        generated = (vocabulary.is_image_token(input_ids) & after_begin).sum(dim=1)
        in_span = (last_begin >= 0) & ~closed
        if not bool(in_span.any()):
            return scores
        ids = torch.arange(scores.shape[1], device=scores.device)
        allow_image = vocabulary.is_image_token(ids)[None] & (generated < self.num_tokens_per_image)[:, None]
        allow_end = (ids == vocabulary.end_of_image_token_id)[None] & (generated >= self.num_tokens_per_image)[:, None]
        blocked = in_span[:, None] & ~(allow_image | allow_end)
        return scores.masked_fill(blocked, -float("inf"))


class ClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance for autoregression over two streams in one KV-cached batch: rows ``[:B]`` are
    conditioned on the prompts, rows ``[B:]`` on the unconditional prompt, and both get the guided scores
    ``u + s (c - u)`` (so that, sampled together by ``SeededSamplingLogitsProcessor(paired=True)``, both
    streams continue with the same token). ``guidance_scale == 1`` returns the conditional scores exactly."""

    def __init__(self, guidance_scale: float):
        self.guidance_scale = float(guidance_scale)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] % 2:
            raise ValueError(f"guided batches hold conditional then unconditional rows; got {scores.shape[0]} rows")
        conditional, unconditional = scores.float().chunk(2)
        if self.guidance_scale == 1.0:
            guided = conditional
        else:
            guided = classifier_free_guidance(conditional, unconditional, self.guidance_scale)
        return torch.cat([guided, guided]).to(scores.dtype)


class SeededSamplingLogitsProcessor(LogitsProcessor):
    """Draws the next token from ``softmax(scores)`` with a ``torch.Generator`` and returns scores that are 0
    for it and -inf elsewhere, so that greedy ``generate(do_sample=False)`` emits it. ``generate()`` samples
    from the global random stream and takes no generator; this processor, last in the list, makes sampling
    reproducible per call. ``paired=True`` (guidance): rows ``[B:]`` take the tokens drawn for rows ``[:B]``."""

    def __init__(self, generator: torch.Generator | None = None, paired: bool = False):
        self.generator, self.paired = generator, paired

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        drawn_scores = scores[: scores.shape[0] // 2] if self.paired else scores
        probabilities = drawn_scores.float().softmax(dim=-1)
        device = self.generator.device if self.generator is not None else probabilities.device
        tokens = torch.multinomial(probabilities.to(device), 1, generator=self.generator).to(scores.device)
        if self.paired:
            tokens = torch.cat([tokens, tokens])
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, tokens, 0.0)


# --------------------------------------------------------------------------------------------------
# generation


@dataclass(frozen=True)
class ImageTokenSampling:
    """How a language model samples V²Flow image tokens: the one definition of these options (and their checks)
    that ``generate_image_tokens`` and ``V2FlowLlamaPipeline`` take.

    Args:
        guidance_scale: classifier-free guidance over a conditional and an unconditional stream (1: one stream).
        temperature, top_k, top_p: sampling of the image tokens (top_k 0 / None and top_p None / 1: off).
        use_cache: ``generate()``'s KV cache (False recomputes the whole prefix per token).
        max_prompt_tokens: cut longer prompts to this many text tokens.
    """

    guidance_scale: float = 1.0
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    use_cache: bool = True
    max_prompt_tokens: int | None = None

    def __post_init__(self):
        if not math.isfinite(self.guidance_scale) or self.guidance_scale < 0:
            raise ValueError(
                f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {self.guidance_scale}"
            )
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None: off), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def guided(self) -> bool:
        """Whether an unconditional stream runs beside the conditional one."""
        return self.guidance_scale != 1.0


def image_logits_processors(
    vocabulary: V2FlowVocabulary,
    num_image_tokens: int,
    sampling: ImageTokenSampling,
    generator: torch.Generator | None = None,
) -> LogitsProcessorList:
    """Guidance (over two streams when guided; it must come before the mask, where -inf would make
    ``u + s (c - u)`` NaN), the image-span mask, temperature / top-k / top-p, then seeded sampling."""
    processors = [ClassifierFreeGuidanceLogitsProcessor(sampling.guidance_scale)] if sampling.guided else []
    processors.append(ImageSpanLogitsProcessor(vocabulary, num_image_tokens))
    if sampling.temperature != 1.0:
        processors.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k:
        processors.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p is not None and sampling.top_p < 1.0:
        processors.append(TopPLogitsWarper(sampling.top_p))
    processors.append(SeededSamplingLogitsProcessor(generator, paired=sampling.guided))
    return LogitsProcessorList(processors)


@torch.no_grad()
def generate_image_tokens(
    language_model,
    text_tokenizer,
    vocabulary: V2FlowVocabulary,
    num_image_tokens: int,
    prompt: str | list[str],
    negative_prompt: str | list[str] = "",
    sampling: ImageTokenSampling | None = None,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Prompts -> V²Flow image tokens ``[B, num_image_tokens]`` with ``language_model.generate()``.

    Each prompt becomes ``[BOS] prompt <begin_of_image>``, left-padded; with guidance the unconditional stream
    (``negative_prompt``) runs as extra batch rows in the same KV-cached ``generate()`` call. ``generate()``
    runs greedily over the scores of ``SeededSamplingLogitsProcessor``, which draws with ``generator``.
    ``sampling``: the options (default ``ImageTokenSampling()``)."""
    sampling = ImageTokenSampling() if sampling is None else sampling
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(text, str) for text in prompts):
        raise ValueError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != len(prompts):
        raise ValueError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    streams = prompts + negatives if sampling.guided else prompts
    sequences = [prompt_ids(text_tokenizer, text, vocabulary, sampling.max_prompt_tokens) for text in streams]
    pad = text_tokenizer.pad_token_id if text_tokenizer.pad_token_id is not None else vocabulary.end_of_image_token_id
    input_ids, attention_mask = left_padded_batch(sequences, pad)
    device = language_model.device
    generation_config = GenerationConfig(
        do_sample=False,  # SeededSamplingLogitsProcessor samples; greedy takes its choice
        max_new_tokens=num_image_tokens,
        min_new_tokens=num_image_tokens,
        use_cache=sampling.use_cache,
        pad_token_id=pad,
        bos_token_id=text_tokenizer.bos_token_id,
        eos_token_id=None,
    )
    output = language_model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        generation_config=generation_config,
        logits_processor=image_logits_processors(vocabulary, num_image_tokens, sampling, generator),
    )
    return vocabulary.ids_to_image_tokens(output[: len(prompts), -num_image_tokens:])


__all__ = [
    "BEGIN_OF_IMAGE_TOKEN",
    "END_OF_IMAGE_TOKEN",
    "IGNORE_INDEX",
    "IMAGE_TOKEN_TEMPLATE",
    "ClassifierFreeGuidanceLogitsProcessor",
    "ImageSpanLogitsProcessor",
    "ImageTokenSampling",
    "SeededSamplingLogitsProcessor",
    "V2FlowVocabulary",
    "extend_vocabulary",
    "generate_image_tokens",
    "image_logits_processors",
    "image_sequence",
    "left_padded_batch",
    "prompt_ids",
]
