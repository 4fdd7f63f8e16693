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

from ...registry import SIT_RECIPE, family_presets
from ..dit_1d.convert_dit_1d_original_to_hf import GeneratorConverter
from .modeling_sit import SiTTransformer1DModel

# The released SiT-XL generators (entries of hf_vtok.registry) by preset name.
SIT_PRESETS = family_presets("sit")


class SiTConverter(GeneratorConverter):
    family = "sit"
    model_class = SiTTransformer1DModel
    original_kind = "sit"
    default_sampling = SIT_RECIPE  # a pipeline built without a preset gets the released sampler


CONVERTER = SiTConverter()
# ``convert_sit_checkpoint(checkpoint_path, config_path, inner_key=None, dtype=None) -> SiTTransformer1DModel``
convert_sit_checkpoint = CONVERTER.convert_checkpoint
