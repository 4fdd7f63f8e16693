"""Convert a released ViTok-v2 checkpoint (``encoder.safetensors`` + ``decoder.safetensors``) to hf_vtok.

    hf-vtok convert vitok --preset 350M-f16x64 --output vitok-350M-f16x64
    hf-vtok convert vitok --encoder encoder.safetensors --decoder decoder.safetensors \\
        --variant Ld4-Ld24/1x16x64 --output out/

The result is a ``save_pretrained`` folder (config.json, model.safetensors,
preprocessor_config.json) that ``AutoModel`` / ``AutoImageProcessor`` load once ``hf_vtok`` is
imported. No pickle is executed: safetensors, or ``torch.load(weights_only=True)`` for ``.pt``.
"""

import argparse
import math
import os
import re

import torch
from accelerate import init_empty_weights

from ...conversion import (
    CheckpointMismatchError,
    Conversion,
    Converter,
    load_original_state_dict,
    load_state_dict_strictly,
    rename_original_keys,
)
from ...modules.mlp import rounded_hidden_size
from .configuration_vitok import ViTokConfig
from .image_processing_vitok import ViTokImageProcessor
from .modeling_vitok import ViTokModel

# original key -> hf_vtok key (applied in order)
KEY_RULES = [
    (r"^encoder\.(\d+)\.", r"encoder_blocks.\1."),  # internal (pre-release) block naming
    (r"^decoder\.(\d+)\.", r"decoder_blocks.\1."),
    (r"^patch_embed\.", "encoder.patch_embed."),
    (r"^to_code\.", "encoder.latent_proj."),
    (r"^encoder_blocks\.(\d+)\.", r"encoder.layers.\1."),
    (r"^decoder_embed\.", "decoder.latent_embed."),
    (r"^to_pixels\.", "decoder.patch_proj."),
    (r"^decoder_blocks\.(\d+)\.", r"decoder.layers.\1."),
    (r"\.norm1\.", ".norm."),
    (r"\.attn\.norm_q\.", ".attention.q_norm."),
    (r"\.attn\.norm_k\.", ".attention.k_norm."),
    (r"\.attn\.", ".attention."),
    (r"\.ffn\.", ".mlp."),
]


def infer_vitok_config(state_dict: dict[str, torch.Tensor], **overrides) -> ViTokConfig:
    """Read every architecture number off a converted (hf_vtok-named) state dict; each half's MLP ratio from its
    own SwiGLU width (``mlp_ratio_decoder`` is set where the encoder's ratio would size the decoder otherwise)."""
    fields: dict = {}
    ratios: dict[str, tuple[float, int, int]] = {}  # role -> (ratio, width, SwiGLU hidden size)
    has_encoder = "encoder.patch_embed.weight" in state_dict
    has_decoder = "decoder.patch_proj.weight" in state_dict
    if not (has_encoder or has_decoder):
        raise CheckpointMismatchError(
            "cannot find 'patch_embed.weight' or 'to_pixels.weight': not a ViTok-v2 encoder/decoder checkpoint"
        )
    for role, embed_key, latent_key in (
        ("encoder", "encoder.patch_embed.weight", "encoder.latent_proj.weight"),
        ("decoder", "decoder.patch_proj.weight", "decoder.latent_embed.weight"),
    ):
        if f"{role}.layers.0.norm.weight" not in state_dict and embed_key not in state_dict:
            continue
        width = state_dict[f"{role}.layers.0.norm.weight"].shape[0]
        head_dim = state_dict[f"{role}.layers.0.attention.q_norm.weight"].shape[0]
        hidden = state_dict[f"{role}.layers.0.mlp.fc2.weight"].shape[1]
        depth = 1 + max(int(m.group(1)) for key in state_dict if (m := re.match(rf"{role}\.layers\.(\d+)\.", key)))
        fields.update(
            {f"{role}_hidden_size": width, f"{role}_num_layers": depth, f"{role}_num_heads": width // head_dim}
        )
        ratios[role] = (hidden / width, width, hidden)
        pixels = state_dict[embed_key].shape[1 if role == "encoder" else 0]
        latent = state_dict[latent_key].shape[0 if role == "encoder" else 1]
        patch = math.isqrt(pixels // 3)
        if 3 * patch * patch != pixels:
            raise CheckpointMismatchError(f"{embed_key} has {pixels} pixels per token, not 3 * patch**2")
        fields.update(patch_size=patch, latent_channels=latent)
    first = ratios.get("encoder", ratios.get("decoder"))
    fields["mlp_ratio"] = first[0]
    if "encoder" in ratios and "decoder" in ratios:
        _, width, hidden = ratios["decoder"]
        if (
            rounded_hidden_size(width, first[0], overrides.get("mlp_multiple_of", ViTokConfig.mlp_multiple_of))
            != hidden
        ):
            fields["mlp_ratio_decoder"] = ratios["decoder"][0]
    if not has_encoder:  # mirror the decoder so the config stays valid
        fields.update({f"encoder_{k}": fields[f"decoder_{k}"] for k in ("hidden_size", "num_layers", "num_heads")})
    if not has_decoder:
        fields.update({f"decoder_{k}": fields[f"encoder_{k}"] for k in ("hidden_size", "num_layers", "num_heads")})
    fields.update(
        has_encoder=has_encoder, has_decoder=has_decoder, use_layer_scale=any("layer_scale" in k for k in state_dict)
    )
    fields.update(overrides)
    return ViTokConfig(**fields)


def convert_vitok_checkpoint(
    encoder_path: str | os.PathLike | None = None,
    decoder_path: str | os.PathLike | None = None,
    variant: str | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> ViTokModel:
    """Build a ``ViTokModel`` from original weight files.

    Give ``encoder_path`` and/or ``decoder_path`` (the released layout; one alone gives an
    encoder-only / decoder-only model) or one ``checkpoint_path`` holding both halves (the
    training export). ``variant`` is a variant string or preset name; without it the architecture
    is read off the tensor shapes. A checkpoint that does not fit raises ``CheckpointMismatchError``
    listing every missing, unexpected or mis-shaped key.
    """
    paths = [path for path in (encoder_path, decoder_path, checkpoint_path) if path is not None]
    if not paths:
        raise ValueError("give encoder_path and/or decoder_path, or checkpoint_path")
    original: dict[str, torch.Tensor] = {}
    for path in paths:
        for key, value in load_original_state_dict(path).items():
            if key in original:
                raise CheckpointMismatchError(f"key {key!r} appears in more than one of {paths}")
            original[key] = value
    state_dict = rename_original_keys(original, KEY_RULES)
    halves = {
        "has_encoder": any(key.startswith("encoder.") for key in state_dict),
        "has_decoder": any(key.startswith("decoder.") for key in state_dict),
    }
    if variant is not None:
        config = ViTokConfig.from_variant(variant, **halves, **config_overrides)
    else:
        config = infer_vitok_config(state_dict, **config_overrides)
    with init_empty_weights():
        model = ViTokModel(config)
    load_state_dict_strictly(model, state_dict, source=" + ".join(str(path) for path in paths))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


class ViTokConverter(Converter):
    """``hf-vtok convert vitok``: released ``encoder.safetensors`` + ``decoder.safetensors`` (or a training export)."""

    family = "vitok"
    files = {
        "encoder": "original encoder.safetensors",
        "decoder": "original decoder.safetensors",
        "checkpoint": "one file with both halves (training export model.safetensors)",
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--variant", help="variant string, e.g. Ld4-Ld24/1x16x64 (default: from the preset or the shapes)"
        )
        parser.add_argument(
            "--mask-padding", action="store_true", help="mask padding tokens in attention (see config)"
        )
        parser.add_argument("--max-num-patches", type=int, default=256, help="processor token budget")
        parser.add_argument("--pp", help="original pre-processing string to build the processor from instead")

    def options(self, args: argparse.Namespace) -> dict:
        return {
            "variant": args.variant,
            "mask_padding": args.mask_padding,
            "max_num_patches": args.max_num_patches,
            "pp": args.pp,
        }

    def convert(
        self,
        files,
        *,
        dtype=None,
        preset=None,
        release=None,
        variant: str | None = None,
        max_num_patches: int = 256,
        pp: str | None = None,
        **config_overrides,
    ) -> Conversion:
        if not any(files.get(role) for role in self.files):
            self.require(files, "encoder", "decoder")
        model = convert_vitok_checkpoint(
            encoder_path=files.get("encoder"),
            decoder_path=files.get("decoder"),
            checkpoint_path=files.get("checkpoint"),
            variant=variant or (release.config.get("variant") if release else None) or preset,
            dtype=dtype,
            **config_overrides,
        )
        if pp:
            processor = ViTokImageProcessor.from_original_pp(pp)
            if processor.patch_size != model.config.patch_size:
                raise ValueError(f"--pp uses patch size {processor.patch_size}, the model {model.config.patch_size}")
        else:
            processor = ViTokImageProcessor(patch_size=model.config.patch_size, max_num_patches=max_num_patches)
        return Conversion(model, processor)


CONVERTER = ViTokConverter()
