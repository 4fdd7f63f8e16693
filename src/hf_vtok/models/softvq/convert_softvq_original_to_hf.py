"""Convert a released SoftVQ-VAE checkpoint (``model.safetensors`` + ``config.json``) to hf_vtok.

    hf-vtok convert softvq --preset softvq-l-64 --output softvq-l-64
    hf-vtok convert softvq --checkpoint model.safetensors --config config.json --output out/

The released ``config.json`` files were written by an older ``ModelArgs`` (no RoPE / cls-token /
position keys, a retired ``repa_layer_indices``): missing keys take the original defaults, unknown
keys are ignored, as the original loader does. ``quantize.codebook_used`` (usage statistics) and the
decoder's unused patch embedding are dropped and listed. The result is a ``save_pretrained`` folder
(config.json, model.safetensors, preprocessor_config.json). No pickle is executed.
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
from .configuration_softvq import SOFTVQ_PRESETS, ReleasedTokenizer
from .modeling_softvq import SoftVQModel


def softvq_fields(args: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """SoftVQ config fields of an original ``ModelArgs`` dict; rejects checkpoints without a soft quantizer."""
    if "quantize.embedding" not in state_dict:
        raise CheckpointMismatchError(
            "this checkpoint has no 'quantize.embedding' codebook: it is not a SoftVQ-VAE (a MAETok / AEModel "
            "checkpoint? use `hf-vtok convert maetok`)"
        )
    codebook = state_dict["quantize.embedding"]
    if tuple(codebook.shape) != (args["num_codebooks"], args["codebook_size"], args["codebook_embed_dim"]):
        raise CheckpointMismatchError(
            f"quantize.embedding is {tuple(codebook.shape)} but config.json gives num_codebooks={args['num_codebooks']}, "
            f"codebook_size={args['codebook_size']}, codebook_embed_dim={args['codebook_embed_dim']}"
        )
    return {
        "codebook_size": args["codebook_size"],
        "num_codebooks": args["num_codebooks"],
        "temperature": args["tau"],
        "codebook_l2_norm": bool(args["codebook_l2_norm"]),
        "entropy_loss_ratio": args["entropy_loss_ratio"],
    }


def convert_softvq_checkpoint(
    checkpoint: str | os.PathLike | dict[str, torch.Tensor],
    original_config: str | os.PathLike | dict,
    arch_overrides: dict | None = None,
    release: ReleasedTokenizer | str | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> tuple[SoftVQModel, ConversionReport]:
    """``SoftVQModel`` (eval mode) and a ``ConversionReport`` from original files.

    ``release`` (a preset name or ``ReleasedTokenizer``) additionally checks the sizes of that release.
    """
    return convert_original_checkpoint(
        SoftVQModel,
        checkpoint,
        original_config,
        softvq_fields,
        SOFTVQ_PRESETS,
        arch_overrides,
        release,
        dtype,
        **config_overrides,
    )


convert_release = release_converter(convert_softvq_checkpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, SOFTVQ_PRESETS)


def run(args: argparse.Namespace) -> str:
    return run_conversion(args, SOFTVQ_PRESETS, convert_softvq_checkpoint, LatentTokenImageProcessor)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hf-vtok convert softvq", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
