"""MAETok (Chen et al., 2025): a 1D latent-token ViT autoencoder trained with mask modelling.

At inference MAETok is a plain autoencoder (the original ``AEModel``): the latents are the encoder
projection, with no quantization and no posterior. Training adds token masking in the encoder and
shallow auxiliary decoders predicting HOG / DINOv2 / SigLIP features of the masked patches; see
``feature_targets_maetok`` for how the targets are computed and the choices made where the
reference code is silent:

- token masking follows the original encoder (``timm_vit_models.py``): masked patch embeddings are
  replaced by the learned ``mask_token`` *before* the class token and position embedding; one mask
  ratio per batch from a normal (mean ``mask_ratio_max``, std ``mask_ratio_std``) truncated to
  ``[mask_ratio_min, mask_ratio_max]``, ``ceil(N * ratio)`` patches per image chosen uniformly;
- the auxiliary decoders are ``LatentTokenViTDecoder``s like the pixel decoder (own latent projection,
  RoPE, latent-modulated blocks, class token) with a linear feature head instead of the pixel head;
- losses, averaged over masked patches (all patches when nothing is masked or with
  ``auxiliary_loss_on_masked_only=False``): mean squared error for HOG, negative cosine similarity for
  the DINOv2 / SigLIP features; returned unweighted in ``losses`` (the trainer weighs them).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel  # noqa: F401  (diffusers looks this name up in component modules)

from ..latent_token_vit.modeling_latent_token_vit import (
    LatentTokenEncoderOutput,
    LatentTokenViTDecoder,
    LatentTokenViTEncoder,
    LatentTokenViTOutput,
    LatentTokenViTPreTrainedModel,
)
from .configuration_maetok import MAETokConfig


def sample_mask_ratio(minimum: float, maximum: float, std: float, generator: torch.Generator | None = None) -> float:
    """One draw of a normal with mean ``maximum`` and std ``std`` truncated to ``[minimum, maximum]`` (inverse CDF)."""
    if minimum == maximum:
        return float(maximum)
    low = torch.special.ndtr(torch.tensor((minimum - maximum) / std, dtype=torch.float64))
    high = torch.tensor(0.5, dtype=torch.float64)  # CDF at the mean = upper bound
    uniform = torch.rand((), generator=generator, dtype=torch.float64)
    return float(maximum + std * torch.special.ndtri(low + uniform * (high - low)))


class MAETokModel(LatentTokenViTPreTrainedModel):
    r"""MAETok tokenizer: images in [-1, 1] -> ``num_latent_tokens`` continuous latent tokens -> images.

    ```python
    >>> import hf_vtok
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> processor = AutoImageProcessor.from_pretrained("maetok-b-128")     # a converted folder
    >>> model = AutoModel.from_pretrained("maetok-b-128").eval()
    >>> pixel_values = processor(images, return_tensors="pt").pixel_values  # [B, 3, 256, 256]
    >>> latents = model.encode(pixel_values).latents    # [B, 128, 32]
    >>> images = model.decode(latents).sample           # [B, 3, 256, 256]
    ```
    """

    config: MAETokConfig

    def __init__(self, config: MAETokConfig):
        super().__init__(config)
        self.encoder = LatentTokenViTEncoder(config, with_mask_token=config.mask_ratio_min > 0)
        self.decoder = LatentTokenViTDecoder.from_config(config)
        self.auxiliary_decoders = (
            nn.ModuleDict({name: self._auxiliary_decoder(config, name) for name in config.auxiliary_targets})
            if config.auxiliary_targets
            else None
        )
        self.post_init()

    @staticmethod
    def _auxiliary_decoder(config: MAETokConfig, target: str) -> LatentTokenViTDecoder:
        """A shallow latent-modulated decoder with a class token predicting ``target`` features per patch."""
        return LatentTokenViTDecoder.from_config(
            config,
            hidden_size=config.auxiliary_hidden_size,
            num_layers=config.auxiliary_num_layers,
            num_heads=config.auxiliary_num_heads,
            output_dim=config.auxiliary_feature_dim(target),
            cls_token=True,
            latent_modulation=True,
            layer_scale_init=None,
            drop_path_rate=0.0,
        )

    # ----------------------------------------------------------------------------------------------
    def sample_token_mask(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.BoolTensor:
        """A training mask ``[B, N]`` (True = replace the patch by the mask token); see ``MAETokConfig``."""
        config = self.config
        rows, cols = config.encoder_grid_size
        num_patches = rows * cols
        ratio = sample_mask_ratio(config.mask_ratio_min, config.mask_ratio_max, config.mask_ratio_std, generator)
        num_masked = min(math.ceil(num_patches * ratio), num_patches)
        order = torch.rand(batch_size, num_patches, generator=generator).argsort(dim=1)
        mask = order < num_masked
        return mask.to(device if device is not None else self.device)

    def encode(
        self,
        pixel_values: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
    ) -> LatentTokenEncoderOutput | tuple:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> latent tokens ``[B, L, C]`` (deterministic, unquantized).

        ``token_mask [B, N]`` (True = masked) replaces those patches by the mask token (training).
        """
        pixel_values = self._check_pixel_values(pixel_values, interpolate_pos_encoding)
        if token_mask is not None:
            rows = pixel_values.shape[-2] // self.config.encoder_patch_size
            cols = pixel_values.shape[-1] // self.config.encoder_patch_size
            if tuple(token_mask.shape) != (pixel_values.shape[0], rows * cols):
                raise ValueError(
                    f"token_mask must be [B, N] = {(pixel_values.shape[0], rows * cols)} for these images, "
                    f"got {tuple(token_mask.shape)}"
                )
            token_mask = token_mask.to(device=pixel_values.device, dtype=torch.bool)
        latents, last_hidden_state, hidden_states = self._encoder_states(
            pixel_values, token_mask, interpolate_pos_encoding, output_hidden_states
        )
        output = LatentTokenEncoderOutput(
            latents=latents, hidden_states=hidden_states, last_hidden_state=last_hidden_state, token_mask=token_mask
        )
        return output if return_dict else output.to_tuple()

    def predict_auxiliary_features(self, latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-patch features ``{target: [B, N, D]}`` of every auxiliary decoder."""
        if self.auxiliary_decoders is None:
            raise ValueError("this MAETokModel has no auxiliary decoders (config.auxiliary_targets is empty)")
        latents = self._check_latents(latents)
        return {name: decoder(latents)[0] for name, decoder in self.auxiliary_decoders.items()}

    def auxiliary_losses(
        self,
        latents: torch.Tensor,
        targets: dict[str, torch.Tensor],
        token_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """MSE (HOG) / negative cosine (DINOv2, SigLIP) between predicted and target features, per target."""
        predictions = self.predict_auxiliary_features(latents)
        unknown = sorted(set(targets) - set(predictions))
        if unknown:
            raise ValueError(f"feature targets {unknown} have no auxiliary decoder (built: {sorted(predictions)})")
        weights = None
        if token_mask is not None and self.config.auxiliary_loss_on_masked_only and bool(token_mask.any()):
            weights = token_mask.float()
        losses = {}
        for name, target in targets.items():
            prediction = predictions[name]
            if target.shape != prediction.shape:
                raise ValueError(
                    f"{name} targets are {tuple(target.shape)} but the decoder predicts {tuple(prediction.shape)}: "
                    "the teacher's patch grid and width must match the decoder's "
                    "(config.decoder_patch_size, *_feature_dim)"
                )
            target = target.to(prediction.dtype)
            if name == "hog":
                per_patch = F.mse_loss(prediction, target, reduction="none").mean(dim=-1)
            else:
                per_patch = -F.cosine_similarity(prediction, target, dim=-1)
            if weights is None:
                losses[name] = per_patch.mean()
            elif weights.shape != per_patch.shape:
                raise ValueError(
                    f"the token mask {tuple(weights.shape)} (encoder grid) does not match the {name} predictions "
                    f"{tuple(per_patch.shape)} (decoder grid); masked-only losses need equal encoder and decoder "
                    "patch sizes"
                )
            else:
                losses[name] = (per_patch * weights).sum() / weights.sum()
        return losses

    def forward(
        self,
        pixel_values: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        mask_tokens: bool | None = None,
        feature_targets=None,
        generator: torch.Generator | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool = True,
    ) -> LatentTokenViTOutput | tuple:
        """Encode then decode at the input size (``hidden_states`` / ``decoder_hidden_states`` when asked).

        ``mask_tokens`` (default: ``self.training`` when the encoder has a mask token) samples a token mask
        unless ``token_mask`` is given. ``feature_targets`` — a ``MAETokFeatureTargets`` (called on
        ``pixel_values``) or a dict ``{target: [B, N, D]}`` — adds the auxiliary losses to ``losses``.
        Reconstruction / perceptual / GAN losses belong to the trainer.
        """
        if mask_tokens is None:
            mask_tokens = self.training and self.encoder.mask_token is not None
        if token_mask is None and mask_tokens:
            if self.encoder.mask_token is None:
                raise ValueError("mask_tokens=True but this model has no mask token (config.mask_ratio_min is 0)")
            token_mask = self.sample_token_mask(pixel_values.shape[0], generator, pixel_values.device)
        output_hidden_states = self._output_hidden_states(output_hidden_states)
        encoded = self.encode(pixel_values, token_mask, interpolate_pos_encoding, output_hidden_states)
        decoded = self._reconstruct(encoded.latents, pixel_values, interpolate_pos_encoding, output_hidden_states)
        losses = None
        if feature_targets is not None:
            targets = feature_targets if isinstance(feature_targets, dict) else feature_targets(pixel_values)
            losses = self.auxiliary_losses(encoded.latents, targets, encoded.token_mask)
        return self._forward_output(encoded, decoded, losses, return_dict, token_mask=encoded.token_mask)
