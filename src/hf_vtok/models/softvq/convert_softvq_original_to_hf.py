"""Convert a released SoftVQ-VAE checkpoint (``model.safetensors`` + ``config.json``) to hf_vtok.

    hf-vtok convert softvq --preset softvq-l-64 --output softvq-l-64
    hf-vtok convert softvq --checkpoint model.safetensors --config config.json --output out/

The released ``config.json`` files were written by an older ``ModelArgs`` (no RoPE / cls-token /
position keys, a retired ``repa_layer_indices``): missing keys take the original defaults, unknown
keys are ignored, as the original loader does. ``quantize.codebook_used`` (usage statistics) and the
decoder's unused patch embedding are dropped and listed. The result is a ``save_pretrained`` folder
(config.json, model.safetensors, preprocessor_config.json). No pickle is executed.
"""

import torch

from ...conversion import CheckpointMismatchError
from ..latent_token_vit.convert_latent_token_vit import LatentTokenConverter
from .modeling_softvq import SoftVQModel


class SoftVQConverter(LatentTokenConverter):
    family = "softvq"
    model_class = SoftVQModel

    def family_fields(self, args: dict, state_dict: dict[str, torch.Tensor]) -> dict:
        """SoftVQ config fields of an original ``ModelArgs`` dict; rejects checkpoints without a soft quantizer."""
        if "quantize.embedding" not in state_dict:
            raise CheckpointMismatchError(
                "this checkpoint has no 'quantize.embedding' codebook: it is not a SoftVQ-VAE (a MAETok / AEModel "
                "checkpoint? use `hf-vtok convert maetok`)"
            )
        codebook = state_dict["quantize.embedding"]
        if tuple(codebook.shape) != (args["num_codebooks"], args["codebook_size"], args["codebook_embed_dim"]):
            raise CheckpointMismatchError(
                f"quantize.embedding is {tuple(codebook.shape)} but config.json gives "
                f"num_codebooks={args['num_codebooks']}, "
                f"codebook_size={args['codebook_size']}, codebook_embed_dim={args['codebook_embed_dim']}"
            )
        return {
            "codebook_size": args["codebook_size"],
            "num_codebooks": args["num_codebooks"],
            "temperature": args["tau"],
            "codebook_l2_norm": bool(args["codebook_l2_norm"]),
            "entropy_loss_ratio": args["entropy_loss_ratio"],
        }


CONVERTER = SoftVQConverter()
# ``convert_softvq_checkpoint(checkpoint, original_config, arch_overrides=None, release=None, dtype=None)``
# -> ``(SoftVQModel, ConversionReport)``
convert_softvq_checkpoint = CONVERTER.convert_checkpoint
