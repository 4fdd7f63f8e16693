"""Convert a released DiT-XL generator of SoftVQ-VAE (``SoftVQVAE/dit-xl_*``: config.json + model.safetensors).

    hf-vtok convert dit --preset dit-xl_softvq-l-64 --output dit-xl_softvq-l-64
    hf-vtok convert dit --checkpoint model.safetensors --config config.json --output out/
    hf-vtok convert dit --preset dit-xl_softvq-l-64 --pipeline --output dit-xl_softvq-l-64-pipeline
    hf-vtok convert dit --preset dit-xl_softvq-l-64 --tokenizer softvq-l-64/ --output pipeline/

The result is a diffusers folder (config.json + diffusion_pytorch_model.safetensors) for
``DiTTransformer1DModel``; with ``--pipeline`` (the preset's own tokenizer, downloaded and
converted), ``--tokenizer-preset NAME`` or ``--tokenizer FOLDER`` (an hf_vtok tokenizer folder or
Hub id) a complete ``DiT1DPipeline`` folder is written instead. The SiT converter (``hf-vtok convert sit``) shares
this module: both originals use the same key layout. No pickle is executed.
"""

import argparse

from accelerate import init_empty_weights

from ...conversion import (
    CheckpointMismatchError,
    Conversion,
    Converter,
    load_original_json,
    load_original_state_dict,
    load_state_dict_strictly,
    rename_original_keys,
)
from ...registry import family_presets
from .modeling_dit_1d import DiTTransformer1DModel

# The released DiT-XL generators (entries of hf_vtok.registry) by preset name.
DIT_PRESETS = family_presets("dit")

# original key -> hf_vtok key; SiT and DiT share the layout
KEY_RULES = [
    (r"^x_embedder\.", "proj_in."),
    (r"^t_embedder\.mlp\.0\.", "time_embedding.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "time_embedding.linear_2."),
    (r"^y_embedder\.embedding_table\.", "class_embedding.embedding_table."),
    (r"\.attn\.qkv\.", ".attn.qkv_proj."),
    (r"\.attn\.proj\.", ".attn.out_proj."),
    (r"\.adaLN_modulation\.1\.", ".modulation."),
]
# constructor defaults of the original classes, used for keys a config.json leaves out
# (PyTorchModelHubMixin passes only the saved keys)
ORIGINAL_DEFAULTS = {
    "sit": {
        "input_size": 32,
        "patch_size": 2,
        "in_channels": 4,
        "hidden_size": 1152,
        "decoder_hidden_size": 768,
        "depth": 28,
        "num_heads": 16,
        "mlp_ratio": 4.0,
        "class_dropout_prob": 0.1,
        "num_classes": 1000,
        "vae_1d": False,
        "qk_norm": False,
    },
    "dit": {
        "input_size": 32,
        "patch_size": 2,
        "in_channels": 128,
        "hidden_size": 1152,
        "depth": 28,
        "num_heads": 16,
        "mlp_ratio": 4.0,
        "class_dropout_prob": 0.1,
        "num_classes": 1000,
        "learn_sigma": True,
        "vae_1d": False,
    },
}
# keys of the released config.json files that do not change the network
IGNORED_KEYS = {"license", "repo_url", "tags", "use_cfg", "path_type", "fused_attn", "flash_attn"}


def transformer_config_from_original(original: dict, kind: str) -> dict:
    """``__init__`` arguments of the hf_vtok transformer from an original SiT / DiT ``config.json``."""
    if kind not in ORIGINAL_DEFAULTS:
        raise ValueError(f"unknown generator kind {kind!r}; expected 'sit' or 'dit'")
    known = set(ORIGINAL_DEFAULTS[kind]) | IGNORED_KEYS
    unknown = sorted(set(original) - known)
    if unknown:
        raise ValueError(f"original {kind.upper()} config has keys hf_vtok does not know: {unknown}")
    values = {**ORIGINAL_DEFAULTS[kind], **original}
    if not values["vae_1d"]:
        raise ValueError(
            f"only 1D-token {kind.upper()} checkpoints (vae_1d=true, every release) are supported; this config has "
            "vae_1d=false (a 2D patch model)"
        )
    fields = {
        "in_channels": int(values["in_channels"]),
        "num_tokens": int(values["input_size"]),
        "hidden_size": int(values["hidden_size"]),
        "num_layers": int(values["depth"]),
        "num_attention_heads": int(values["num_heads"]),
        "mlp_ratio": float(values["mlp_ratio"]),
        "num_classes": int(values["num_classes"]),
        "class_dropout_prob": float(values["class_dropout_prob"]),
    }
    if kind == "sit":
        if int(values["decoder_hidden_size"]) != fields["hidden_size"]:
            raise ValueError(
                f"decoder_hidden_size {values['decoder_hidden_size']} differs from hidden_size "
                f"{fields['hidden_size']}: "
                "the original SiT cannot run such a model either"
            )
        fields["qk_norm"] = bool(values["qk_norm"])
    else:
        fields["learn_sigma"] = bool(values["learn_sigma"])
    return fields


def convert_generator_checkpoint(model_class, kind, checkpoint_path, config_path, inner_key=None, dtype=None):
    """Build ``model_class`` (SiT / DiT transformer) from an original checkpoint and its config.json."""
    config = transformer_config_from_original(load_original_json(config_path), kind)
    state_dict = rename_original_keys(load_original_state_dict(checkpoint_path, inner_key=inner_key), KEY_RULES)
    with init_empty_weights(include_buffers=False):
        model = model_class(**config)
    try:
        load_state_dict_strictly(model, state_dict, source=str(checkpoint_path))
    except CheckpointMismatchError as error:
        raise CheckpointMismatchError(f"{error}\n(config: {config_path})") from None
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


class GeneratorConverter(Converter):
    """The converter of SiT / DiT releases (``model.safetensors`` + ``config.json``, one key layout)."""

    model_class: type
    original_kind: str  # "sit" or "dit": which original constructor defaults apply
    files = {
        "checkpoint": "original model.safetensors (or a .pt training checkpoint)",
        "config": "original config.json",
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--inner-key", help="entry of a training checkpoint holding the weights, e.g. ema")

    def options(self, args: argparse.Namespace) -> dict:
        return {"inner_key": args.inner_key}

    def convert_checkpoint(self, checkpoint_path, config_path, inner_key=None, dtype=None):
        """The transformer from a released ``model.safetensors`` + ``config.json`` (or a training checkpoint
        with ``inner_key="ema"``)."""
        return convert_generator_checkpoint(
            self.model_class, self.original_kind, checkpoint_path, config_path, inner_key, dtype
        )

    def convert(self, files, *, dtype=None, preset=None, release=None, inner_key: str | None = None) -> Conversion:
        self.require(files, "checkpoint", "config")
        return Conversion(self.convert_checkpoint(files["checkpoint"], files["config"], inner_key, dtype))


class DiTConverter(GeneratorConverter):
    family = "dit"
    model_class = DiTTransformer1DModel
    original_kind = "dit"


CONVERTER = DiTConverter()
# ``convert_dit_checkpoint(checkpoint_path, config_path, inner_key=None, dtype=None) -> DiTTransformer1DModel``
convert_dit_checkpoint = CONVERTER.convert_checkpoint
