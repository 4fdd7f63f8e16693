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

from ..dit_1d.convert_dit_1d_original_to_hf import (
    GeneratorPreset,
    add_generator_arguments,
    convert_generator_checkpoint,
    run_generator_conversion,
)
from .modeling_sit import SiTTransformer1DModel

# README "SiT Generation": SDE sampler, cosine path, 250 steps, CFG 1.75 on t <= 0.7
_SIT_RECIPE = {
    "sampler": "sde", "path_type": "cosine", "num_inference_steps": 250, "guidance_scale": 1.75,
    "guidance_interval": (0.0, 0.7),
}


def _sit(repo: str, tokenizer: str, size: int = 256) -> GeneratorPreset:
    return GeneratorPreset(repo, tokenizer, size, _SIT_RECIPE)


SIT_PRESETS: dict[str, GeneratorPreset] = {
    "sit-xl_maetok-b-128": _sit("MAETok/sit-xl_maetok-b-128", "maetok-b-128"),
    "sit-xl_maetok-b-128-512": _sit("MAETok/sit-xl_maetok-b-128-512", "maetok-b-128-512", 512),
    "sit-xl_softvq-l-64": _sit("SoftVQVAE/sit-xl_softvq-l-64", "softvq-l-64"),
    "sit-xl_softvq-bl-64": _sit("SoftVQVAE/sit-xl_softvq-bl-64", "softvq-bl-64"),
    "sit-xl_softvq-b-64": _sit("SoftVQVAE/sit-xl_softvq-b-64", "softvq-b-64"),
    "sit-xl_softvq-l-32": _sit("SoftVQVAE/sit-xl_softvq-l-32", "softvq-l-32"),
    "sit-xl_softvq-bl-32": _sit("SoftVQVAE/sit-xl_softvq-bl-32", "softvq-bl-32"),
    "sit-xl_softvq-b-32": _sit("SoftVQVAE/sit-xl_softvq-b-32", "softvq-b-32"),
    "sit-xl_softvq-bl-64-512": _sit("SoftVQVAE/sit-xl_softvq-bl-64-512", "softvq-bl-64-512", 512),
    "sit-xl_softvq-l-32-512": _sit("SoftVQVAE/sit-xl_softvq-l-32-512", "softvq-l-32-512", 512),
}


def convert_sit_checkpoint(checkpoint_path, config_path, inner_key=None, dtype=None) -> SiTTransformer1DModel:
    """``SiTTransformer1DModel`` from a released ``model.safetensors`` + ``config.json``
    (or a training checkpoint with ``inner_key="ema"``)."""
    return convert_generator_checkpoint(SiTTransformer1DModel, "sit", checkpoint_path, config_path, inner_key, dtype)


def _build_sit_pipeline(model, tokenizer, preset):
    from ...flow import SiTFlowScheduler
    from ...pipelines.sit import SiTPipeline

    recipe = (preset.sampling if preset else None) or _SIT_RECIPE
    scheduler = SiTFlowScheduler(sampler=recipe["sampler"], path_type=recipe["path_type"])
    return SiTPipeline.from_components(model, tokenizer, scheduler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_generator_arguments(parser, SIT_PRESETS, "sit")


def run(args: argparse.Namespace) -> str:
    return run_generator_conversion(args, SIT_PRESETS, convert_sit_checkpoint, _build_sit_pipeline, "sit")
