"""Convert a ViTok-v2 DiT checkpoint (``dit-branch``: the flat ``DiT.state_dict()`` safetensors) to hf_vtok.

    hf-vtok convert vitok-dit --checkpoint dit.safetensors --variant L/256 --output vitok-dit-L
    hf-vtok convert vitok-dit --checkpoint dit.safetensors --tokenizer vitok-350M-f16x16/ --output pipeline/

Every size is read off the tensors (width, depth, heads from the QK-norm size, latent channels,
classes, class / register tokens); ``--variant`` cross-checks them and sets the default token
count. Settings the weights do not show (sliding window, RoPE base) are flags. The output is a
diffusers folder for ``ViTokDiTTransformerModel`` or, with ``--tokenizer`` (an hf_vtok ViTok AE
folder), a complete ``ViTokDiTPipeline`` folder. No ViTok DiT checkpoint is published; this reads
what the original training script exports.
"""

import argparse
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
from .configuration_vitok_dit import parse_vitok_dit_variant
from .modeling_vitok_dit import ViTokDiTTransformerModel

KEY_RULES = [
    (r"^input_proj\.", "proj_in."),
    (r"^reg_token$", "register_tokens"),
    (r"^time_embedder\.0\.", "time_embedding.linear_1."),
    (r"^time_embedder\.2\.", "time_embedding.linear_2."),
    (r"^class_embedder\.", "class_embedding."),
    (r"^mod_proj\.1\.", "modulation_proj."),
    (r"^head_mod_proj\.1\.", "head_modulation_proj."),
    (r"\.attn\.norm_q\.", ".attn.q_norm."),
    (r"\.attn\.norm_k\.", ".attn.k_norm."),
]


def infer_vitok_dit_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """Architecture read off a converted state dict."""
    required = ("proj_in.weight", "class_embedding.weight", "blocks.0.attn.q_norm.weight", "blocks.0.mlp.fc2.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise CheckpointMismatchError(f"not a ViTok DiT checkpoint: no {missing} (after renaming)")
    hidden, in_channels = state_dict["proj_in.weight"].shape
    head_dim = state_dict["blocks.0.attn.q_norm.weight"].shape[0]
    depth = 1 + max(int(match.group(1)) for key in state_dict if (match := re.match(r"blocks\.(\d+)\.", key)))
    return {
        "in_channels": int(in_channels),
        "hidden_size": int(hidden),
        "num_layers": depth,
        "num_attention_heads": int(hidden // head_dim),
        "num_classes": int(state_dict["class_embedding.weight"].shape[0] - 1),
        "class_token": "cls_token" in state_dict,
        "num_register_tokens": int(state_dict["register_tokens"].shape[1]) if "register_tokens" in state_dict else 0,
        "use_layer_scale": "blocks.0.layer_scale.gamma" in state_dict,
    }


def convert_vitok_dit_checkpoint(
    checkpoint_path: str | os.PathLike,
    variant: str | None = None,
    inner_key: str | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> ViTokDiTTransformerModel:
    """``ViTokDiTTransformerModel`` from an original DiT state dict (safetensors, or ``.pt`` with ``inner_key``).

    ``variant`` (``"L/256"``) must agree with the weights; ``config_overrides`` set what they cannot show
    (``sliding_window``, ``rope_theta``, ``num_tokens``, ...).
    """
    state_dict = rename_original_keys(load_original_state_dict(checkpoint_path, inner_key=inner_key), KEY_RULES)
    config = infer_vitok_dit_config(state_dict)
    if variant is not None:
        from_variant = parse_vitok_dit_variant(variant)
        for key in ("hidden_size", "num_layers", "num_attention_heads"):
            if from_variant[key] != config[key]:
                raise CheckpointMismatchError(
                    f"variant {variant!r} says {key}={from_variant[key]} but {checkpoint_path} has {config[key]}"
                )
        config.update(mlp_ratio=from_variant["mlp_ratio"], num_tokens=from_variant["num_tokens"])
    config.update(config_overrides)
    with init_empty_weights():
        model = ViTokDiTTransformerModel(**config)
    load_state_dict_strictly(model, state_dict, source=str(checkpoint_path))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


class ViTokDiTConverter(Converter):
    """``hf-vtok convert vitok-dit``: the flat ``DiT.state_dict()`` the original training script exports."""

    family = "vitok_dit"
    files = {"checkpoint": "original DiT state dict (.safetensors, or .pt with --inner-key)"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--inner-key", help="entry of a training checkpoint holding the weights, e.g. ema")
        parser.add_argument("--variant", help="original DiT variant, e.g. L/256 (checked against the weights)")
        parser.add_argument(
            "--sliding-window", type=int, help="the original's `sw`: 2D window radius on every other block"
        )
        parser.add_argument("--rope-theta", type=float, default=10000.0, help="RoPE base (default 10000)")

    def options(self, args: argparse.Namespace) -> dict:
        return {
            "inner_key": args.inner_key,
            "variant": args.variant,
            "sliding_window": args.sliding_window,
            "rope_theta": args.rope_theta,
        }

    def convert(
        self, files, *, dtype=None, preset=None, release=None, variant=None, inner_key=None, **config_overrides
    ):
        self.require(files, "checkpoint")
        model = convert_vitok_dit_checkpoint(
            files["checkpoint"], variant=variant, inner_key=inner_key, dtype=dtype, **config_overrides
        )
        return Conversion(model)


CONVERTER = ViTokDiTConverter()
