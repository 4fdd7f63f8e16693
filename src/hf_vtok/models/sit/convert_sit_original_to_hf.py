"""Convert a released SiT-XL generator of SoftVQ-VAE / MAETok (``*/sit-xl_*``: config.json + model.safetensors).

    hf-vtok convert sit --preset sit-xl_maetok-b-128 --output sit-xl_maetok-b-128
    hf-vtok convert sit --checkpoint model.safetensors --config config.json --output out/
    hf-vtok convert sit --preset sit-xl_maetok-b-128 --pipeline --output sit-xl_maetok-b-128-pipeline
    hf-vtok convert sit --preset sit-xl_softvq-l-64 --tokenizer softvq-l-64/ --output pipeline/

The result is a diffusers folder for ``SiTTransformer1DModel``; with ``--pipeline`` (the preset's
own tokenizer, downloaded and converted), ``--tokenizer-preset NAME`` or ``--tokenizer FOLDER``
(an hf_vtok tokenizer folder or Hub id) a complete ``SiTPipeline`` folder with the released
sampling recipe in its scheduler (SDE, cosine path). Same key layout as the DiT (``hf_vtok.models.dit_1d``).
"""

import argparse

from ...pretrained import SIT_RECIPE, family_presets
from ..dit_1d.convert_dit_1d_original_to_hf import (
    add_generator_arguments,
    convert_generator_checkpoint,
    generator_release_converter,
    run_generator_conversion,
)
from .modeling_sit import SiTTransformer1DModel

# The released SiT-XL generators (entries of hf_vtok.pretrained) by preset name.
SIT_PRESETS = family_presets("sit")


def convert_sit_checkpoint(checkpoint_path, config_path, inner_key=None, dtype=None) -> SiTTransformer1DModel:
    """``SiTTransformer1DModel`` from a released ``model.safetensors`` + ``config.json``
    (or a training checkpoint with ``inner_key="ema"``)."""
    return convert_generator_checkpoint(SiTTransformer1DModel, "sit", checkpoint_path, config_path, inner_key, dtype)


def build_pipeline(model, tokenizer, preset=None):
    """``SiTPipeline`` with the preset's sampler (the released recipe without one): the registry's pipeline hook."""
    from ...flow import SiTFlowScheduler
    from ...pipelines.sit import SiTPipeline

    recipe = (preset.sampling if preset else None) or SIT_RECIPE
    scheduler = SiTFlowScheduler(sampler=recipe["sampler"], path_type=recipe["path_type"])
    return SiTPipeline.from_components(model, tokenizer, scheduler)


convert_release = generator_release_converter(convert_sit_checkpoint)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generator_arguments(parser, SIT_PRESETS, "sit")


def run(args: argparse.Namespace) -> str:
    return run_generator_conversion(args, SIT_PRESETS, convert_sit_checkpoint, build_pipeline, "sit")
