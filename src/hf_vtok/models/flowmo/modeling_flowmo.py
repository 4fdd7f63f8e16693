"""FlowMo: a transformer tokenizer whose decoder is a rectified flow (Sargent et al., ICCV 2025).

The encoder reads image patches together with ``code_length`` query tokens (a Flux-style
double-stream transformer, no timestep) and returns the query stream as the code. The code is
quantized (LFQ, a diagonal Gaussian, or nothing) and conditions the decoder, a second
double-stream transformer that predicts the flow velocity ``v ~ noise - image`` of the noisy
image at flow time ``t`` (``x_t = (1 - t) x + t noise``; t = 1 is noise, the diffusers sign
convention). Decoding integrates the flow from noise with Euler steps and interval CFG
(``sampling_flowmo.py``); the training losses are in ``training_objective_flowmo.py``.
"""

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)
from transformers.modeling_layers import GradientCheckpointingLayer

from ...modeling_outputs import (
    SequenceLatentDistribution,
    VisualTokenizerDecoderOutput,
    VisualTokenizerEncoderOutput,
    VisualTokenizerOutput,
)
from ...modeling_utils import VisualTokenizerPreTrainedModel
from ...modules import (
    GELUMLP,
    AdaLNModulation,
    Attention,
    FP32LayerNorm,
    gated_residual,
    joint_attention,
    modulate,
    patchify,
    rope_tables,
    sinusoidal_timesteps,
    unpatchify,
)
from ...quantizers import DiagonalGaussianBottleneck, LookupFreeQuantizer
from .configuration_flowmo import FlowMoConfig
from .sampling_flowmo import flowmo_sample, guidance_interval_in_flow_time, guidance_steps, sampler_time_grid
from .training_objective_flowmo import flowmo_training_losses, sample_posttrain_timesteps, sample_training_timesteps

TIMESTEP_EMBEDDING_DIM = 256  # sinusoidal features of 1000 * t, [cos | sin]
TIME_FACTOR = 1000.0
PATCH_LAYOUT = "channels_last"  # patch vectors are (ph, pw, c)
_FROM_CONFIG = object()


# --------------------------------------------------------------------------------------------------
# outputs
@dataclass
class FlowMoEncoderOutput(VisualTokenizerEncoderOutput):
    r"""Result of ``FlowMoModel.encode``.

    Args:
        latents: the code the decoder is conditioned on, ``[B, code_length, context_dim]``: ±1 for
            LFQ (straight-through gradients), the posterior sample (or mean) for ``kl``.
        image_tokens: LFQ token ids ``[B, code_length * context_dim / bits_per_token]`` (original layout
            and bit order), ``None`` for the continuous variants.
        prequant_latents: the encoder output before quantization (``[B, code_length, 2 * context_dim]`` for ``kl``).
        quantizer_loss: weighted quantizer loss (LFQ entropy + commitment, or the KL); 0 when not computed.
        quantizer_losses: its unweighted terms when computed.
        latent_dist: the posterior (diffusers' ``DiagonalGaussianDistribution`` in the latents'
            ``[B, code_length, context_dim]`` layout: ``latent_dist.sample(generator)`` / ``latent_dist.mode()`` are
            what ``decode`` takes): the ``kl`` variant's Gaussian, a point mass at ``latents`` for the others.
        hidden_states / code_hidden_states: image / code stream after the embedding and after each block.
        orig_height / orig_width: ``[B]`` size of the encoded images: ``decode(encoder_output)`` decodes at it (the
            code itself does not say it) and refuses another ``height`` / ``width`` / ``noise`` size.
    """

    prequant_latents: torch.FloatTensor | None = None
    quantizer_loss: torch.FloatTensor | None = None
    quantizer_losses: dict[str, torch.Tensor] | None = None
    latent_dist: SequenceLatentDistribution | None = None
    code_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    orig_height: torch.LongTensor | None = None
    orig_width: torch.LongTensor | None = None


@dataclass
class FlowMoDecoderOutput(VisualTokenizerDecoderOutput):
    r"""``sample``: the reconstruction ``[B, 3, H, W]`` in [-1, 1] (the last Euler state, clipped).

    ``trajectory``: ``[num_steps, B, 3, H, W]``, the unclipped state after each step (when asked);
    ``guidance_steps``: ``[num_steps]`` bool, the steps on which classifier-free guidance ran
    (``[B, num_steps]`` for per-sample time grids).
    """

    trajectory: torch.FloatTensor | None = None
    guidance_steps: torch.BoolTensor | None = None


@dataclass
class FlowMoVelocityOutput(VisualTokenizerDecoderOutput):
    r"""One decoder evaluation: ``sample`` is the velocity ``[B, 3, H, W]`` (``~ noise - image``).

    ``code_output``: the decoder's code-stream head ``[B, code_length, context_dim + 1]`` (unused by
    sampling; when asked). ``hidden_states`` / ``code_hidden_states``: per-block states (when asked).
    """

    code_output: torch.FloatTensor | None = None
    code_hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def velocity(self) -> torch.FloatTensor | None:
        return self.sample


@dataclass
class FlowMoOutput(VisualTokenizerOutput):
    r"""Result of ``FlowMoModel.forward``.

    Reconstruction mode: ``sample`` is the decoded image. Training mode (``return_loss=True``):
    ``loss`` = diffusion loss + quantizer loss, ``losses`` holds every term, ``sample`` is the
    one-step prediction ``x_t - t * v`` (unclipped; what the original's perceptual loss compares),
    with the ``velocity``, ``timesteps`` and ``noise`` used, and with post-training the image sampled
    through the differentiable sampler chain (``posttrain_sample``, unclipped).
    """

    velocity: torch.FloatTensor | None = None
    timesteps: torch.FloatTensor | None = None
    noise: torch.FloatTensor | None = None
    prequant_latents: torch.FloatTensor | None = None
    posttrain_sample: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------
# helpers
def flowmo_position_ids(code_length: int, rows: int, cols: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE positions: code token ``i`` is ``(i, i, i)``, the patch at ``(r, c)`` is ``(0, r, c)`` (float32)."""
    code_ids = torch.arange(code_length, device=device, dtype=torch.float32)[:, None].expand(code_length, 3)
    row_ids = torch.arange(rows, device=device, dtype=torch.float32).repeat_interleave(cols)
    col_ids = torch.arange(cols, device=device, dtype=torch.float32).repeat(rows)
    image_ids = torch.stack((torch.zeros_like(row_ids), row_ids, col_ids), dim=-1)
    return code_ids, image_ids


# --------------------------------------------------------------------------------------------------
# layers
class FlowMoBlock(GradientCheckpointingLayer):
    """Double-stream (MMDiT) block: image and code streams with their own weights, joint attention.

    Each stream: ``x += gate1 * attn(modulate(LN(x)))``, ``x += gate2 * MLP(modulate(LN(x)))`` with
    (shift, scale, gate) x 2 from the timestep vector. Without a timestep (the encoder) there is no
    modulation: plain pre-LN residual blocks.
    """

    def __init__(self, config: FlowMoConfig, hidden_size: int, conditioned: bool):
        super().__init__()
        head_dim = hidden_size // config.num_attention_heads
        attention_scale = 8.0 / head_dim if config.enable_mup else None
        mlp_hidden = int(hidden_size * config.mlp_ratio)
        for stream in ("image", "code"):
            # gates (chunks 2 and 5) start at zero, so a fresh block is the identity
            modulation = AdaLNModulation(hidden_size, 6, zero_init_chunks=(2, 5)) if conditioned else None
            setattr(self, f"{stream}_modulation", modulation)
            setattr(self, f"{stream}_norm1", FP32LayerNorm(hidden_size, eps=config.norm_eps, elementwise_affine=False))
            setattr(self, f"{stream}_norm2", FP32LayerNorm(hidden_size, eps=config.norm_eps, elementwise_affine=False))
            attention = Attention(
                hidden_size,
                config.num_attention_heads,
                qkv_bias=config.qkv_bias,
                out_bias=True,
                qk_norm=True,
                norm_eps=config.norm_eps,
                scale=attention_scale,
                rope_layout="interleaved",
                rope_dtype=torch.float32,
            )
            setattr(self, f"{stream}_attention", attention)
            setattr(self, f"{stream}_mlp", GELUMLP(hidden_size, mlp_hidden, approximate="tanh"))

    def modulations(self, conditioning: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """The (shift, scale, gate) x 2 chunks of the image and the code stream for ``conditioning [B, hidden]``."""
        return self.image_modulation(conditioning), self.code_modulation(conditioning)

    @staticmethod
    def _attention_input(norm, states, modulation):
        normed = norm(states)
        return normed if modulation is None else modulate(normed, modulation[0], modulation[1])

    @staticmethod
    def _residuals(states, attended, modulation, norm, mlp):
        if modulation is None:
            states = states + attended
            return states + mlp(norm(states))
        _, _, gate1, shift2, scale2, gate2 = modulation
        states = gated_residual(states, gate1, attended)
        return gated_residual(states, gate2, mlp(modulate(norm(states), shift2, scale2)))

    def forward(
        self,
        image_states: torch.Tensor,
        code_states: torch.Tensor,
        conditioning: torch.Tensor | None = None,
        code_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        update_image: bool = True,
        update_code: bool = True,
        modulation: tuple | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``update_image`` / ``update_code`` False skip a stream's residual updates (last block, unused head);
        ``modulation`` is ``modulations(conditioning)`` computed beforehand (then ``conditioning`` is not read)."""
        image_mod, code_mod = (None, None) if modulation is None else modulation
        if conditioning is not None and modulation is None:
            image_mod, code_mod = self.modulations(conditioning)
        code_attended, image_attended = joint_attention(
            (self.code_attention, self.image_attention),
            (
                self._attention_input(self.code_norm1, code_states, code_mod),
                self._attention_input(self.image_norm1, image_states, image_mod),
            ),
            (code_rotary, image_rotary),
        )
        if update_image:
            image_states = self._residuals(image_states, image_attended, image_mod, self.image_norm2, self.image_mlp)
        if update_code:
            code_states = self._residuals(code_states, code_attended, code_mod, self.code_norm2, self.code_mlp)
        return image_states, code_states


class FlowMoFinalLayer(nn.Module):
    """Output head: (adaLN ``modulate(LN(x))`` when conditioned), then LN again and a Linear.

    The second LayerNorm runs unconditionally, as in the original (it normalises the modulated states).
    """

    def __init__(self, config: FlowMoConfig, hidden_size: int, out_features: int, conditioned: bool):
        super().__init__()
        self.norm = FP32LayerNorm(hidden_size, eps=config.norm_eps, elementwise_affine=False)
        self.modulation = AdaLNModulation(hidden_size, 2) if conditioned else None
        self.linear = nn.Linear(hidden_size, out_features)

    def forward(
        self, hidden_states: torch.Tensor, conditioning: torch.Tensor | None = None, modulation: tuple | None = None
    ) -> torch.Tensor:
        """``modulation``: ``self.modulation(conditioning)`` computed beforehand (``conditioning`` is then unused)."""
        if modulation is None and conditioning is not None:
            modulation = self.modulation(conditioning)
        if modulation is not None:
            shift, scale = modulation
            hidden_states = modulate(self.norm(hidden_states), shift, scale)
        return self.linear(self.norm(hidden_states))


class FlowMoTransformer(nn.Module):
    """One Flux-style stack (the original ``Flux``): patch and code embeddings, double-stream blocks, heads.

    The encoder is built without a timestep embedding, modulations or image head (the original
    has them but never uses them); the decoder has all of them.
    """

    def __init__(self, config: FlowMoConfig, role: str):
        super().__init__()
        conditioned = role == "decoder"
        hidden_size = config.stack_hidden_size(role)
        code_dim = config.context_dim + 1 if conditioned else config.encoder_code_dim
        self.hidden_size = hidden_size
        self.axes_dim = config.stack_axes_dim(role)
        self.rope_theta = config.rope_theta
        self.image_embed = nn.Linear(config.pixels_per_token, hidden_size)
        self.code_embed = nn.Linear(code_dim, hidden_size)
        self.time_proj = self.time_embedding = None  # the encoder has no timestep
        if conditioned:
            self.time_proj = sinusoidal_timesteps(TIMESTEP_EMBEDDING_DIM)
            self.time_embedding = TimestepEmbedding(TIMESTEP_EMBEDDING_DIM, hidden_size)
        self.blocks = nn.ModuleList(
            FlowMoBlock(config, hidden_size, conditioned)
            for _ in range(config.decoder_depth if conditioned else config.encoder_depth)
        )
        self.image_head = FlowMoFinalLayer(config, hidden_size, config.pixels_per_token, True) if conditioned else None
        self.code_head = FlowMoFinalLayer(config, hidden_size, code_dim, conditioned)

    def rotary_tables(self, code_ids: torch.Tensor, image_ids: torch.Tensor):
        """cos/sin tables for the code and image positions; angles in float64 as the original computes them."""
        return tuple(
            rope_tables(ids, self.axes_dim, self.rope_theta, angle_dtype=torch.float64)
            for ids in (code_ids, image_ids)
        )

    def timestep_features(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sinusoidal features ``[B, 256]`` of ``1000 * t``, ordered [cos | sin] (decoder only)."""
        return self.time_proj(TIME_FACTOR * timesteps.float())

    def embed_time(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The adaLN conditioning vector ``[B, hidden]`` of flow times ``[B]``."""
        features = self.timestep_features(timesteps)
        return self.time_embedding(features.to(self.time_embedding.linear_1.weight.dtype))

    def forward(
        self,
        image_states: torch.Tensor,
        code_states: torch.Tensor,
        rotary,
        conditioning: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_image: bool = True,
        return_code: bool = True,
        modulations: tuple | None = None,
    ):
        """Embedded streams -> (image head output, code head output, image states, code states).

        Heads not asked for return ``None``; the last block then skips that stream's updates. ``modulations``:
        ``self.modulations(conditioning)`` computed beforehand, in place of ``conditioning``.
        """
        block_modulations, image_head_modulation, code_head_modulation = modulations or (
            (None,) * len(self.blocks),
            None,
            None,
        )
        code_rotary, image_rotary = rotary
        image_history = (image_states,) if output_hidden_states else None
        code_history = (code_states,) if output_hidden_states else None
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            keep_all = index < last or output_hidden_states
            image_states, code_states = block(
                image_states,
                code_states,
                conditioning,
                code_rotary,
                image_rotary,
                update_image=keep_all or return_image,
                update_code=keep_all or return_code,
                modulation=block_modulations[index],
            )
            if output_hidden_states:
                image_history += (image_states,)
                code_history += (code_states,)
        image_out = self.image_head(image_states, conditioning, image_head_modulation) if return_image else None
        code_out = self.code_head(code_states, conditioning, code_head_modulation) if return_code else None
        return image_out, code_out, image_history, code_history

    def modulations(self, conditioning: torch.Tensor) -> tuple:
        """Every adaLN chunk of ``conditioning [B, hidden]`` (blocks, image head, code head), as ``forward`` computes
        them: sliced per sample, they give that sample exactly what the batched ``forward`` gives it."""
        heads = tuple(
            head.modulation(conditioning) if head is not None and head.modulation is not None else None
            for head in (self.image_head, self.code_head)
        )
        return (tuple(block.modulations(conditioning) for block in self.blocks), *heads)


# --------------------------------------------------------------------------------------------------
class FlowMoModel(VisualTokenizerPreTrainedModel):
    r"""FlowMo tokenizer: ``encode`` images to a 1-D code (and LFQ token ids), ``decode`` them with the
    rectified-flow sampler, ``forward`` for reconstruction or the training losses.

    ```python
    >>> import hf_vtok
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> processor = AutoImageProcessor.from_pretrained(path)      # resize 256 + center crop, [-1, 1]
    >>> model = AutoModel.from_pretrained(path).eval()
    >>> pixel_values = processor(images, return_tensors="pt").pixel_values
    >>> encoded = model.encode(pixel_values)                     # latents [B, 256, 18], image_tokens [B, 512]
    >>> generator = torch.Generator().manual_seed(0)
    >>> decoded = model.decode(image_tokens=encoded.image_tokens, generator=generator)
    >>> images = processor.postprocess(decoded.sample)            # PIL images
    ```

    Decoding is stochastic (it starts from Gaussian noise): pass ``generator`` or ``noise`` for
    reproducible results. Inputs are ``[B, 3, H, W]`` in [-1, 1] with H and W multiples of the
    patch size; the released models are trained at ``config.image_size``.
    """

    config: FlowMoConfig
    _no_split_modules = ["FlowMoBlock"]
    _input_embeddings = "encoder.image_embed"

    def __init__(self, config: FlowMoConfig):
        super().__init__(config)
        self.encoder = FlowMoTransformer(config, "encoder")
        self.decoder = FlowMoTransformer(config, "decoder")
        if config.quantization_type == "lfq":
            self.quantizer = LookupFreeQuantizer(config.bits_per_token, entropy_temperature=config.entropy_temperature)
        elif config.quantization_type == "kl":
            self.quantizer = DiagonalGaussianBottleneck(channel_dim=-1)
        else:
            self.quantizer = None
        self._freeze_parameters_without_gradient()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)  # loading makes new, trainable parameters
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze_parameters_without_gradient()
        return loaded

    def _freeze_parameters_without_gradient(self) -> None:
        for name in self.parameters_without_gradient():
            self.get_parameter(name).requires_grad_(False)

    def parameters_without_gradient(self) -> list[str]:
        """Names of the parameters no loss reaches, kept as the original has them (their weights are in its
        checkpoints): the encoder is read out from its code stream only, so its last block's image-stream update
        (attention output projection, MLP) is never used; the decoder is read out from its image stream only, so
        its last block's code-stream update and its code head serve only ``velocity(output_code=True)``.

        They are built frozen (``requires_grad=False``): DDP then needs no ``find_unused_parameters`` and
        transformers' gradient tests count them as intentionally frozen. Unfreezing them (e.g.
        ``model.requires_grad_(True)``) brings back DDP's unused-parameter error.
        """
        names = []
        for stack, stream in ((self.encoder, "image"), (self.decoder, "code")):
            prefix = "encoder" if stack is self.encoder else "decoder"
            last = len(stack.blocks) - 1
            for module in (f"{stream}_attention.out_proj", f"{stream}_mlp"):
                names += [
                    f"{prefix}.blocks.{last}.{module}.{name}"
                    for name, _ in stack.blocks[last].get_submodule(module).named_parameters()
                ]
        names += [f"decoder.code_head.{name}" for name, _ in self.decoder.code_head.named_parameters()]
        return names

    # ----------------------------------------------------------------------------------------------
    # layout helpers
    def _check_pixels(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        config = self.config
        if (
            not isinstance(pixel_values, torch.Tensor)
            or pixel_values.dim() != 4
            or pixel_values.shape[1] != config.num_channels
        ):
            shape = (
                tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            )
            raise ValueError(f"{name} must be an image batch [B, {config.num_channels}, H, W] in [-1, 1], got {shape}")
        height, width = pixel_values.shape[-2:]
        if height % config.patch_size or width % config.patch_size:
            raise ValueError(
                f"{name} is {height}x{width} (HxW), not a multiple of the patch size {config.patch_size}; "
                f"resize it (FlowMoImageProcessor resizes and center-crops to {config.image_size}x{config.image_size})"
            )

    def _rotary(self, stack: FlowMoTransformer, height: int, width: int, device):
        patch = self.config.patch_size
        code_ids, image_ids = flowmo_position_ids(self.config.code_length, height // patch, width // patch, device)
        return stack.rotary_tables(code_ids, image_ids)

    def _group_token_bits(self, code: torch.Tensor) -> torch.Tensor:
        """``[B, T, C]`` -> ``[B, T * C/bits, bits]``: token ``t*fh + h`` takes channels ``j*fh + h`` (strided)."""
        batch, length, channels = code.shape
        bits = self.config.bits_per_token
        grouped = code.unflatten(-1, (bits, channels // bits)).transpose(-1, -2)
        return grouped.reshape(batch, length * channels // bits, bits)  # sizes given: an empty batch has no -1

    def _ungroup_token_bits(self, token_bits: torch.Tensor) -> torch.Tensor:
        """Inverse of ``_group_token_bits``."""
        batch, bits = token_bits.shape[0], self.config.bits_per_token
        per_position = self.config.context_dim // bits
        grouped = token_bits.reshape(batch, token_bits.shape[1] // per_position, per_position, bits)
        return grouped.transpose(-1, -2).reshape(batch, grouped.shape[1], self.config.context_dim)

    def tokens_to_latents(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """LFQ token ids ``[B, code_length * context_dim / bits]`` -> the ±1 code ``[B, code_length, context_dim]``."""
        config = self.config
        if config.quantization_type != "lfq":
            raise ValueError(
                f"image_tokens exist only for quantization_type='lfq'; this model uses {config.quantization_type!r}"
            )
        if image_tokens.dim() != 2 or image_tokens.shape[1] != config.tokens_per_image:
            raise ValueError(
                f"image_tokens must be [B, {config.tokens_per_image}] (code_length {config.code_length} x "
                f"{config.context_dim // config.bits_per_token} tokens per position), got {tuple(image_tokens.shape)}"
            )
        codes = self.quantizer.indices_to_codes(image_tokens, dtype=self.dtype)
        return self._ungroup_token_bits(codes)

    def latents_to_tokens(self, latents: torch.Tensor) -> torch.LongTensor:
        """Code ``[B, code_length, context_dim]`` -> LFQ token ids (by sign)."""
        if self.config.quantization_type != "lfq":
            raise ValueError(
                f"token ids exist only for quantization_type='lfq', not {self.config.quantization_type!r}"
            )
        self._check_latents(latents)
        tokens = self.quantizer.codes_to_indices(self._group_token_bits(latents))
        return tokens.reshape(latents.shape[0], self.config.tokens_per_image)

    def _check_latents(self, latents: torch.Tensor) -> None:
        config = self.config
        expected = (config.code_length, config.context_dim)
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(
                f"latents must be [B, {expected[0]}, {expected[1]}] (code_length, context_dim), got {shape}"
            )

    def conditioning(self, latents: torch.Tensor) -> torch.Tensor:
        """Decoder code input: the code plus a ones "mask" channel, ``[B, code_length, context_dim + 1]``.

        The null (unconditional) input of classifier-free guidance is all zeros, mask included.
        """
        return torch.cat([latents, torch.ones_like(latents[..., :1])], dim=-1)

    # ----------------------------------------------------------------------------------------------
    # encoder
    def _quantize(self, code, return_loss, sample_posterior, generator, latent_noise):
        config = self.config
        zero = code.new_zeros(())
        if config.quantization_type == "lfq":
            result = self.quantizer(self._group_token_bits(code), return_losses=return_loss)
            latents = self._ungroup_token_bits(result.quantized)
            tokens = result.indices.reshape(code.shape[0], self.config.tokens_per_image)
            if not return_loss:
                return latents, tokens, zero, None, None
            losses = {
                "per_sample_entropy": result.per_sample_entropy,
                "codebook_entropy": result.codebook_entropy,
                "entropy_loss": result.entropy_loss,
                "commitment_loss": result.commitment_loss,
            }
            weighted = (
                config.entropy_loss_weight * result.entropy_loss + config.commit_loss_weight * result.commitment_loss
            )
            return latents, tokens, weighted, losses, None
        if config.quantization_type == "kl":
            # the original computes the KL (unweighted) and samples the posterior in every mode
            result = self.quantizer(
                code, sample=sample_posterior, generator=generator, noise=latent_noise, return_kl=True
            )
            kl = result.kl.mean()
            return result.latents, None, kl, {"kl_loss": kl}, SequenceLatentDistribution(result.latent_dist)
        return code, None, zero, None, None

    def encode(
        self,
        pixel_values: torch.Tensor,
        return_loss: bool | None = None,
        sample_posterior: bool = True,
        generator: torch.Generator | None = None,
        latent_noise: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> FlowMoEncoderOutput | tuple:
        r"""Encode images ``[B, 3, H, W]`` in [-1, 1] to the quantized code and, for LFQ, token ids.

        ``return_loss`` (default: in training mode) computes the LFQ entropy / commitment terms, as
        the original does only in training mode; the ``kl`` variant always has its KL.
        ``sample_posterior`` / ``generator`` / ``latent_noise`` (``[B, code_length, context_dim]``)
        control the ``kl`` posterior sample (the original samples it at evaluation too).
        """
        self._check_pixels(pixel_values)
        self._check_input_values(pixel_values)
        config = self.config
        return_loss = self.training if return_loss is None else return_loss
        height, width = pixel_values.shape[-2:]
        rotary = self._rotary(self.encoder, height, width, pixel_values.device)

        def encoder_states(pixels):
            dtype = self.encoder.image_embed.weight.dtype
            image_states = self.encoder.image_embed(patchify(pixels.to(dtype), config.patch_size, PATCH_LAYOUT))
            # the code queries all start at the embedding of zeros; only their RoPE positions differ
            queries = pixels.new_zeros(pixels.shape[0], config.code_length, config.encoder_code_dim, dtype=dtype)
            return self.encoder(
                image_states,
                self.encoder.code_embed(queries),
                rotary,
                None,
                output_hidden_states,
                return_image=False,
                return_code=True,
            )[1:]

        code, image_history, code_history = self._batch_sliced(encoder_states, pixel_values)
        latents, tokens, quantizer_loss, quantizer_losses, latent_dist = self._quantize(
            code, return_loss, sample_posterior, generator, latent_noise
        )
        if latent_dist is None:  # a deterministic code (diffusers' retrieve_latents reads latent_dist first)
            latent_dist = SequenceLatentDistribution.point_mass(latents)
        output = FlowMoEncoderOutput(
            latents=latents,
            image_tokens=tokens,
            hidden_states=image_history,
            prequant_latents=code,
            quantizer_loss=quantizer_loss,
            quantizer_losses=quantizer_losses,
            latent_dist=latent_dist,
            code_hidden_states=code_history,
            orig_height=torch.full((pixel_values.shape[0],), height, dtype=torch.long, device=pixel_values.device),
            orig_width=torch.full((pixel_values.shape[0],), width, dtype=torch.long, device=pixel_values.device),
        )
        return output if return_dict else output.to_tuple()

    # ----------------------------------------------------------------------------------------------
    # decoder
    def _decoder_velocity(self, sample, timesteps, code_states, rotary, output_hidden_states=False, output_code=False):
        config = self.config
        height, width = sample.shape[-2:]
        dtype = self.decoder.image_embed.weight.dtype
        conditioning = self.decoder.embed_time(timesteps)
        # sliced, the per-sample vectors (time embedding, adaLN chunks) are still computed for the whole batch: a
        # one-row matmul rounds differently from the batched one
        modulations = self.decoder.modulations(conditioning) if self.use_slicing else None

        def run_decoder(sample, code_states, modulations):
            image_states = self.decoder.image_embed(patchify(sample.to(dtype), config.patch_size, PATCH_LAYOUT))
            return self.decoder(
                image_states,
                code_states,
                rotary,
                conditioning if modulations is None else None,
                output_hidden_states,
                return_image=True,
                return_code=output_code,
                modulations=modulations,
            )

        image_out, code_out, image_history, code_history = self._batch_sliced(
            run_decoder, sample, code_states, modulations
        )
        grid = (height // config.patch_size, width // config.patch_size)
        velocity = unpatchify(image_out, grid, config.patch_size, config.num_channels, PATCH_LAYOUT)
        return velocity, code_out, image_history, code_history

    def _flow_times(self, timesteps, batch, device) -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps, device=device, dtype=torch.float32)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch)
        if tuple(timesteps.shape) != (batch,):
            raise ValueError(
                f"timesteps must be a scalar or [B={batch}] flow times in [0, 1], got {tuple(timesteps.shape)}"
            )
        return timesteps

    def velocity(
        self,
        sample: torch.Tensor,
        timesteps: torch.Tensor | float,
        latents: torch.Tensor | None = None,
        conditioning: torch.Tensor | None = None,
        output_code: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> FlowMoVelocityOutput | tuple:
        r"""One decoder evaluation: the velocity of the noisy image ``sample`` at flow time ``timesteps``.

        Give the code as ``latents`` ``[B, code_length, context_dim]`` (the mask channel is added) or
        the full decoder input ``conditioning`` ``[B, code_length, context_dim + 1]`` (zeros = null code).
        """
        self._check_pixels(sample, "sample")
        config = self.config
        if (latents is None) == (conditioning is None):
            raise ValueError("give exactly one of latents or conditioning")
        if conditioning is None:
            self._check_latents(latents)
            conditioning = self.conditioning(latents)
        expected = (sample.shape[0], config.code_length, config.context_dim + 1)
        if tuple(conditioning.shape) != expected:
            raise ValueError(
                f"conditioning must be {list(expected)} (code plus mask channel), got {tuple(conditioning.shape)}"
            )
        timesteps = self._flow_times(timesteps, sample.shape[0], sample.device)
        code_states = self.decoder.code_embed(conditioning.to(self.decoder.code_embed.weight.dtype))
        rotary = self._rotary(self.decoder, *sample.shape[-2:], sample.device)
        velocity, code_out, image_history, code_history = self._decoder_velocity(
            sample, timesteps, code_states, rotary, output_hidden_states, output_code
        )
        output = FlowMoVelocityOutput(
            sample=velocity, hidden_states=image_history, code_output=code_out, code_hidden_states=code_history
        )
        return output if return_dict else output.to_tuple()

    def _initial_noise(self, noise, batch, height, width, generator, device) -> torch.Tensor:
        """The sampler's start ``[B, 3, H, W]`` (float32): ``noise`` checked, or drawn at ``height x width``
        (default ``config.image_size``) with ``generator``."""
        config = self.config
        if noise is None:
            height = height or config.image_size
            width = width or config.image_size
            noise = randn_tensor(
                (batch, config.num_channels, height, width), generator=generator, device=device, dtype=torch.float32
            )
        else:
            expected = (batch, config.num_channels) + (
                (height, width) if height and width else tuple(noise.shape[-2:])
            )
            if tuple(noise.shape) != expected:
                raise ValueError(f"noise must be {list(expected)}, got {tuple(noise.shape)}")
            noise = noise.to(device=device, dtype=torch.float32)
        self._check_pixels(noise, "noise")
        return noise

    @staticmethod
    def _encoded_size(encoded: FlowMoEncoderOutput, height, width, noise) -> tuple[int | None, int | None]:
        """``(height, width)`` of a decode of ``encoded``: the encoded images' size, which a given ``height`` /
        ``width`` / ``noise`` must match (decoding at another size silently changes the image)."""
        if encoded.orig_height is None or encoded.orig_width is None or encoded.orig_height.numel() == 0:
            return height, width
        size = (int(encoded.orig_height[0]), int(encoded.orig_width[0]))
        asked = (
            height or (noise.shape[-2] if noise is not None else size[0]),
            width or (noise.shape[-1] if noise is not None else size[1]),
        )
        if asked != size:
            raise ValueError(
                f"these latents were encoded from {size[0]}x{size[1]} (HxW) images but the decode asks for "
                f"{asked[0]}x{asked[1]} (height / width / noise); pass the latents tensor (encoded.latents) to decode "
                "them at another size"
            )
        return size

    def decode(
        self,
        latents: torch.Tensor | FlowMoEncoderOutput | None = None,
        image_tokens: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval=_FROM_CONFIG,
        sampling_schedule: str | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        output_trajectory: bool = False,
        clip_sample: bool = True,
        checkpoint_steps: bool = False,
        return_dict: bool = True,
    ) -> FlowMoDecoderOutput | tuple:
        r"""Decode a code (``latents`` or LFQ ``image_tokens``) to images with the original sampler.

        The size is ``height`` x ``width``, else the ``noise``'s, else that of the images an encoder output
        (``latents=model.encode(...)``) was encoded from, else ``config.image_size``: a latents tensor does not
        record the size it was encoded at. Starting from ``noise`` (``[B, 3, H, W]``; drawn with ``generator``
        when not given), every
        step ``i`` evaluates ``v = decoder(z, t_i, code)``; inside the guidance interval also the
        null code and ``v = v_null + guidance_scale * (v - v_null)``; then ``z -= dt_i * v``. The
        result is the last state clipped to [-1, 1]. Defaults come from the config
        (``num_inference_steps``, ``sampling_schedule``, ``guidance_scale``, ``guidance_interval``;
        ``guidance_interval=None`` guides every step, ``guidance_scale=1`` never). ``timesteps``
        replaces the schedule by a custom grid ``[N+1]`` or per-sample grids ``[B, N+1]`` (flow times
        from 1 down; step ``i`` goes from ``t_i`` to ``t_(i+1)``). The loop is differentiable:
        ``clip_sample=False`` returns the last state unclipped (the original post-training loss reads it),
        and ``checkpoint_steps=True`` recomputes each step's decoder call in the backward pass instead of
        keeping its activations (the original's ``decode_checkpointed``; combine it with
        ``activation_checkpointing_enable()`` to keep only block inputs during that recomputation).
        """
        config = self.config
        if isinstance(latents, FlowMoEncoderOutput):
            height, width = self._encoded_size(latents, height, width, noise)
            latents = latents.latents
        if (latents is None) == (image_tokens is None):
            raise ValueError("decode needs exactly one of latents or image_tokens")
        if image_tokens is not None:
            latents = self.tokens_to_latents(image_tokens)
        self._check_latents(latents)
        batch, device = latents.shape[0], latents.device
        num_inference_steps = num_inference_steps or config.num_inference_steps
        sampling_schedule = sampling_schedule or config.sampling_schedule
        guidance_scale = config.guidance_scale if guidance_scale is None else guidance_scale
        interval = guidance_interval_in_flow_time(
            config.guidance_interval if guidance_interval is _FROM_CONFIG else guidance_interval
        )
        noise = self._initial_noise(noise, batch, height, width, generator, device)
        times, steps = sampler_time_grid(timesteps, num_inference_steps, sampling_schedule, batch, device)
        guided = guidance_steps(times, guidance_scale, interval)

        # everything that depends on neither t nor z is computed once
        rotary = self._rotary(self.decoder, *noise.shape[-2:], device)
        conditioning = self.conditioning(latents).to(self.decoder.code_embed.weight.dtype)
        code_states = self.decoder.code_embed(conditioning)
        null_code_states = self.decoder.code_embed(torch.zeros_like(conditioning)) if bool(guided.any()) else None

        def step_velocity(sample, flow_times, states):
            return self._decoder_velocity(sample, flow_times, states, rotary)[0].float()

        state, trajectory = flowmo_sample(
            step_velocity,
            noise,
            code_states,
            null_code_states,
            times,
            steps,
            guided,
            guidance_scale,
            checkpoint_steps=checkpoint_steps,
            output_trajectory=output_trajectory,
        )
        output = FlowMoDecoderOutput(
            sample=state.clip(-1, 1) if clip_sample else state,
            trajectory=torch.stack(trajectory) if output_trajectory else None,
            guidance_steps=guided.to(device),
        )
        return output if return_dict else output.to_tuple()

    # ----------------------------------------------------------------------------------------------
    # training
    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Training flow times ``[B]`` from ``config.timestep_sampling`` (t = 1 is noise)."""
        return sample_training_timesteps(self.config.timestep_sampling, batch, generator, device or self.device)

    def sample_posttrain_timesteps(
        self, batch: int, num_steps: int, generator: torch.Generator | None = None, device=None
    ) -> torch.Tensor:
        """Random per-sample sampler grids ``[B, num_steps + 1]`` of post-training, from 1 down to 0."""
        return sample_posttrain_timesteps(batch, num_steps, generator, device or self.device)

    def forward(
        self,
        pixel_values: torch.Tensor,
        return_loss: bool | None = None,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        condition_dropout: bool | None = None,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        posttrain_steps: int | None = None,
        posttrain_timesteps: torch.Tensor | None = None,
        posttrain_noise: torch.Tensor | None = None,
        checkpoint_posttrain_steps: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
    ) -> FlowMoOutput | tuple:
        r"""Reconstruct ``pixel_values`` (encode + sampler), or with ``return_loss=True`` (default: in training
        mode) compute the original training losses for one flow time per image. ``hidden_states``: the encoder's
        image-stream states when asked (the decoder runs once per sampler step; ``velocity(...,
        output_hidden_states=True)`` gives one evaluation's states).

        Training mode draws ``timesteps`` (``config.timestep_sampling``) and ``noise`` unless given,
        builds ``x_t = (1 - t) x + t noise``, drops the whole code to the null code with probability
        ``config.cfg_dropout_prob`` (``condition_dropout``, default: in training mode), and returns
        ``loss = mean((noise - v - x)^2) + quantizer_loss`` with every term in ``losses``. The
        original's perceptual term (LPIPS-VGG on ``sample = x_t - t v``) is left to the trainer.
        In reconstruction mode ``noise`` / ``generator`` seed the sampler.

        Post-training (the original ``posttrain_sample``): with ``posttrain_steps=K`` (or an explicit
        ``posttrain_timesteps`` grid ``[B, K+1]``) the training mode also samples the image from
        ``posttrain_noise`` with K Euler steps on random per-sample grids (``sample_posttrain_timesteps``),
        conditioned on the code before dropout, without guidance, keeping the graph through every step
        (``checkpoint_posttrain_steps`` recomputes each step's decoder call in the backward pass). The
        unclipped result is ``posttrain_sample``, for the trainer's sample-level perceptual loss.
        """
        self._check_pixels(pixel_values)
        return_loss = self.training if return_loss is None else return_loss
        output_hidden_states = self._output_hidden_states(output_hidden_states)
        if not return_loss:
            encoded = self.encode(pixel_values, generator=generator, output_hidden_states=output_hidden_states)
            decoded = self.decode(
                encoded.latents,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=generator,
                noise=noise,
                height=pixel_values.shape[-2],
                width=pixel_values.shape[-1],
            )
            output = FlowMoOutput(
                sample=decoded.sample,
                latents=encoded.latents,
                image_tokens=encoded.image_tokens,
                prequant_latents=encoded.prequant_latents,
                hidden_states=encoded.hidden_states,
            )
            return output if return_dict else output.to_tuple()

        # encode checks the input (a uint8 batch must not become float first); it casts to the weights' dtype itself
        encoded = self.encode(
            pixel_values, return_loss=True, generator=generator, output_hidden_states=output_hidden_states
        )
        pixel_values = pixel_values.float()
        if timesteps is not None:
            timesteps = self._flow_times(timesteps, pixel_values.shape[0], pixel_values.device)
        terms = flowmo_training_losses(
            self,
            pixel_values,
            encoded,
            timesteps=timesteps,
            noise=noise,
            condition_dropout=condition_dropout,
            generator=generator,
            posttrain_steps=posttrain_steps,
            posttrain_timesteps=posttrain_timesteps,
            posttrain_noise=posttrain_noise,
            checkpoint_posttrain_steps=checkpoint_posttrain_steps,
        )
        output = FlowMoOutput(
            latents=encoded.latents,
            image_tokens=encoded.image_tokens,
            prequant_latents=encoded.prequant_latents,
            hidden_states=encoded.hidden_states,
            **terms,
        )
        return output if return_dict else output.to_tuple()
