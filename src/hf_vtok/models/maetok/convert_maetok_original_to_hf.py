"""Convert a released MAETok checkpoint (``model.safetensors`` + ``config.json``) to hf_vtok.

    hf-vtok convert maetok --preset maetok-b-128 --output maetok-b-128
    hf-vtok convert maetok --checkpoint model.safetensors --config config.json --output out/

The original loads MAETok as its ``AEModel`` (encoder + projections + latent-modulated decoder).
Training-only tensors — auxiliary HOG / DINOv2 / CLIP decoders and heads, REPA / CLIP teachers, the
RoPE grid buffers, the decoder's unused patch embedding and position table — are dropped and listed.
The encoder's mask token is kept (it is a trained parameter; ``MAETokModel`` uses it for masked
training). The result is a ``save_pretrained`` folder. No pickle is executed.
"""

import argparse
import os

import torch

from ...conversion import CheckpointMismatchError
from ..latent_token_vit.convert_latent_token_vit import (
    ConversionReport,
    add_common_arguments,
    convert_original_checkpoint,
    release_converter,
    run_conversion,
)
from ..latent_token_vit.image_processing_latent_token_vit import LatentTokenImageProcessor
from .configuration_maetok import MAETOK_PRESETS, ReleasedTokenizer
from .modeling_maetok import MAETokModel


def maetok_fields(args: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """MAETok config fields of an original ``ModelArgs`` dict; rejects checkpoints with a quantizer."""
    if "quantize.embedding" in state_dict:
        raise CheckpointMismatchError(
            "this checkpoint has a 'quantize.embedding' codebook: it is a SoftVQ-VAE (or VQ) tokenizer, not MAETok "
            "(use `hf-vtok convert softvq`)"
        )
    has_mask_token = "encoder.mask_token" in state_dict
    if has_mask_token != (args["enc_token_drop"] > 0):
        raise CheckpointMismatchError(
            f"config.json has enc_token_drop={args['enc_token_drop']} but the checkpoint "
            f"{'has' if has_mask_token else 'has no'} encoder.mask_token"
        )
    return {
        "mask_ratio_min": args["enc_token_drop"],
        "mask_ratio_max": max(args["enc_token_drop_max"], args["enc_token_drop"]),
    }


def convert_maetok_checkpoint(
    checkpoint: str | os.PathLike | dict[str, torch.Tensor],
    original_config: str | os.PathLike | dict,
    arch_overrides: dict | None = None,
    release: ReleasedTokenizer | str | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> tuple[MAETokModel, ConversionReport]:
    """``MAETokModel`` (eval mode) and a ``ConversionReport`` from original files.

    ``release`` (a preset name or ``ReleasedTokenizer``) additionally checks the sizes of that release.
    """
    return convert_original_checkpoint(
        MAETokModel,
        checkpoint,
        original_config,
        maetok_fields,
        MAETOK_PRESETS,
        arch_overrides,
        release,
        dtype,
        **config_overrides,
    )


convert_release = release_converter(convert_maetok_checkpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, MAETOK_PRESETS)


def run(args: argparse.Namespace) -> str:
    return run_conversion(args, MAETOK_PRESETS, convert_maetok_checkpoint, LatentTokenImageProcessor)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hf-vtok convert maetok", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
