"""Convert a released MAETok checkpoint (``model.safetensors`` + ``config.json``) to hf_vtok.

    hf-vtok convert maetok --preset maetok-b-128 --output maetok-b-128
    hf-vtok convert maetok --checkpoint model.safetensors --config config.json --output out/

The original loads MAETok as its ``AEModel`` (encoder + projections + latent-modulated decoder).
Training-only tensors — auxiliary HOG / DINOv2 / CLIP decoders and heads, REPA / CLIP teachers, the
RoPE grid buffers, the decoder's unused patch embedding and position table — are dropped and listed.
The encoder's mask token is kept (it is a trained parameter; ``MAETokModel`` uses it for masked
training). The result is a ``save_pretrained`` folder. No pickle is executed.
"""

import torch

from ...conversion import CheckpointMismatchError
from ..latent_token_vit.convert_latent_token_vit import LatentTokenConverter
from .modeling_maetok import MAETokModel


class MAETokConverter(LatentTokenConverter):
    family = "maetok"
    model_class = MAETokModel

    def family_fields(self, args: dict, state_dict: dict[str, torch.Tensor]) -> dict:
        """MAETok config fields of an original ``ModelArgs`` dict; rejects checkpoints with a quantizer."""
        if "quantize.embedding" in state_dict:
            raise CheckpointMismatchError(
                "this checkpoint has a 'quantize.embedding' codebook: it is a SoftVQ-VAE (or VQ) tokenizer, "
                "not MAETok "
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


CONVERTER = MAETokConverter()
# ``convert_maetok_checkpoint(checkpoint, original_config, arch_overrides=None, release=None, dtype=None)``
# -> ``(MAETokModel, ConversionReport)``
convert_maetok_checkpoint = CONVERTER.convert_checkpoint
