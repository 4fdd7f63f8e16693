"""Convert a FlowMo checkpoint (the trainer's ``.pth``: flowmo_lo / flowmo_hi or your own run) to hf_vtok.

    hf-vtok convert flowmo --preset flowmo-lo --output flowmo-lo
    hf-vtok convert flowmo --checkpoint results/run/checkpoints/00100000.pth --config run_config.yaml --output out/
    hf-vtok convert flowmo --checkpoint flowmo_hi.pth --preset flowmo-hi --online-weights --output flowmo-hi-online

The checkpoint is a ``torch.save`` dict with ``model_ema_state_dict`` (used by default, as the
original evaluation does) and ``model_state_dict`` (``--online-weights``); it is read with
``torch.load(weights_only=True)``, so no pickle is executed. The configuration comes from a
preset and/or the run's resolved OmegaConf yaml (base.yaml merged with the run's overrides),
plus ``--override key=value`` dotlist entries. The original hard-codes its width table
(``DIT_ZOO["dit_b_4"]``); ``--width-table`` replaces it for runs that changed it.

Encoder weights the original never uses in its forward are dropped: the encoder's ``time_in``,
every ``img_mod`` / ``txt_mod``, both final layers' ``adaLN_modulation`` and ``final_layer_img``.
"""

import argparse
import ast
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights
from huggingface_hub.errors import StrictDataclassError
from transformers.utils import logging

from ...conversion import (
    Conversion,
    Converter,
    load_original_state_dict,
    load_state_dict_strictly,
    rename_keys,
    strip_prefixes,
)
from .configuration_flowmo import FLOWMO_PRESETS, TIMESTEP_SAMPLINGS, FlowMoConfig
from .image_processing_flowmo import FlowMoImageProcessor
from .modeling_flowmo import FlowMoModel

logger = logging.get_logger(__name__)

STATE_DICT_KEYS = {"ema": "model_ema_state_dict", "online": "model_state_dict"}
WRAPPER_PREFIXES = ("_orig_mod.", "module.")

# parameters of the original encoder that its forward never reads (t = None, code from the txt head)
ENCODER_UNUSED = re.compile(
    r"^encoder\.(time_in\.|double_blocks\.\d+\.(img|txt)_mod\.|final_layer_(img|txt)\.adaLN_modulation\.|final_layer_img\.)"
)

# original key -> hf_vtok key (applied in order)
KEY_RULES = [
    (r"\.img_in\.", ".image_embed."),
    (r"\.txt_in\.", ".code_embed."),
    (r"\.time_in\.in_layer\.", ".time_embedding.linear_1."),
    (r"\.time_in\.out_layer\.", ".time_embedding.linear_2."),
    (r"\.double_blocks\.(\d+)\.", r".blocks.\1."),
    (r"\.final_layer_img\.", ".image_head."),
    (r"\.final_layer_txt\.", ".code_head."),
    (r"\.adaLN_modulation\.1\.", ".modulation.linear."),
    (r"\.(img|txt)_mod\.lin\.", r".\1_modulation.linear."),
    (r"\.(img|txt)_attn\.qkv\.", r".\1_attention.qkv_proj."),
    (r"\.(img|txt)_attn\.proj\.", r".\1_attention.out_proj."),
    (r"\.(img|txt)_attn\.norm\.query_norm\.scale$", r".\1_attention.q_norm.weight"),
    (r"\.(img|txt)_attn\.norm\.key_norm\.scale$", r".\1_attention.k_norm.weight"),
    (r"\.(img|txt)_mlp\.0\.", r".\1_mlp.fc1."),
    (r"\.(img|txt)_mlp\.2\.", r".\1_mlp.fc2."),
    (r"\.img_", ".image_"),
    (r"\.txt_", ".code_"),
]

# original config key (dotted) -> FlowMoConfig field
CONFIG_KEYS = {
    "data.image_size": "image_size",
    "model.patch_size": "patch_size",
    "model.code_length": "code_length",
    "model.context_dim": "context_dim",
    "model.codebook_size_for_entropy": "bits_per_token",
    "model.quantization_type": "quantization_type",
    "model.mup_width": "mup_width",
    "model.enc_mup_width": "enc_mup_width",
    "model.enc_depth": "encoder_depth",
    "model.dec_depth": "decoder_depth",
    "model.enable_mup": "enable_mup",
    "model.entropy_loss_weight": "entropy_loss_weight",
    "model.commit_loss_weight": "commit_loss_weight",
    "eval.sampling.sample_steps": "num_inference_steps",
    "eval.sampling.schedule": "sampling_schedule",
    "eval.sampling.cfg": "guidance_scale",
}
# width table entry (DIT_ZOO layout) -> FlowMoConfig field
WIDTH_TABLE_KEYS = {
    "hidden_size": "base_hidden_size",
    "num_heads": "num_attention_heads",
    "axes_dim": "base_axes_dim",
    "mlp_ratio": "mlp_ratio",
    "qkv_bias": "qkv_bias",
    "theta": "rope_theta",
}


def _lookup(tree: Mapping, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def load_original_config(path: str | os.PathLike) -> dict:
    """Read an original (resolved OmegaConf) yaml config as a plain dict."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} does not exist")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{str(path)!r} is not valid yaml: {error}") from error
    if not isinstance(tree, Mapping) or "model" not in tree:
        raise ValueError(f"{str(path)!r} is not a FlowMo config (no top-level 'model' section)")
    return dict(tree)


def apply_overrides(tree: Mapping, overrides: list[str]) -> dict:
    """OmegaConf-style dotlist ``["model.context_dim=56", ...]`` applied to a nested dict (values parsed as yaml)."""
    import copy

    import yaml

    tree = copy.deepcopy(dict(tree))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. model.context_dim=56)")
        dotted, value = item.split("=", 1)
        *parents, leaf = dotted.strip().split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(
                f"override {item!r}: the value is not valid yaml ({' '.join(str(error).split())})"
            ) from None
    return tree


def config_from_original(original: Mapping, width_table: Mapping | None = None, **overrides) -> FlowMoConfig:
    """``FlowMoConfig`` from an original config tree; keys it lacks keep base.yaml's defaults.

    ``width_table`` (``hidden_size``, ``num_heads``, ``axes_dim``, ``mlp_ratio``, ``qkv_bias``, ``theta``)
    replaces the hard-coded ``DIT_ZOO["dit_b_4"]`` for a run that changed it.
    """
    fields: dict = {}
    for dotted, field in CONFIG_KEYS.items():
        try:
            fields[field] = _lookup(original, dotted)
        except KeyError:
            continue
    try:
        fields["cfg_dropout_prob"] = 0.1 if _lookup(original, "model.enable_cfg") else 0.0
    except KeyError:
        pass
    try:
        interval = _lookup(original, "eval.sampling.cfg_interval")
        fields["guidance_interval"] = None if interval is None else tuple(ast.literal_eval(str(interval)))
    except KeyError:
        pass
    try:
        schedule = _lookup(original, "opt.schedule")
        if schedule in TIMESTEP_SAMPLINGS:
            fields["timestep_sampling"] = schedule
        else:
            logger.warning(f"training time schedule {schedule!r} has no FlowMoConfig equivalent; keeping the default")
    except KeyError:
        pass
    if width_table is not None:
        unknown = sorted(set(width_table) - set(WIDTH_TABLE_KEYS))
        if unknown:
            raise ValueError(f"unknown width-table entries {unknown}; expected some of {sorted(WIDTH_TABLE_KEYS)}")
        fields.update({WIDTH_TABLE_KEYS[key]: value for key, value in width_table.items()})
    fields.update(overrides)
    try:
        return FlowMoConfig(**fields)
    except (StrictDataclassError, TypeError, ValueError) as error:  # a wrong type or value of a config key
        raise ValueError(f"the original config (with --override) is not a valid FlowMo config: {error}") from None


def convert_flowmo_state_dict(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original ``FlowMo.state_dict()`` names -> ``FlowMoModel`` names, dropping the unused encoder parts."""
    state_dict = strip_prefixes(original, WRAPPER_PREFIXES)
    kept = {key: value for key, value in state_dict.items() if not ENCODER_UNUSED.match(key)}
    return rename_keys(kept, KEY_RULES)


def convert_flowmo_checkpoint(
    checkpoint_path: str | os.PathLike,
    config: FlowMoConfig | None = None,
    original_config: Mapping | str | os.PathLike | None = None,
    width_table: Mapping | None = None,
    weights: str = "ema",
    state_dict_key: str | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> FlowMoModel:
    """Build a ``FlowMoModel`` from a trainer checkpoint.

    The configuration is ``config`` if given, else read from ``original_config`` (a yaml path or a
    parsed tree) with ``width_table`` / ``config_overrides``, else base.yaml's defaults (FlowMo-Lo).
    ``weights="ema"`` loads ``model_ema_state_dict`` (the original's evaluation default),
    ``"online"`` loads ``model_state_dict``; ``state_dict_key`` names another entry ("" for a file
    that is a bare state dict). A checkpoint that does not fit raises ``CheckpointMismatchError``
    naming every missing, unexpected or mis-shaped key.
    """
    if state_dict_key is None:
        if weights not in STATE_DICT_KEYS:
            raise ValueError(f"weights must be one of {sorted(STATE_DICT_KEYS)}, got {weights!r}")
        state_dict_key = STATE_DICT_KEYS[weights]
    if config is None:  # before the (possibly large) checkpoint is read: a bad config fails at once
        if isinstance(original_config, (str, os.PathLike)):
            original_config = load_original_config(original_config)
        config = config_from_original(original_config or {}, width_table, **config_overrides)
    elif config_overrides or width_table is not None:
        raise ValueError("give config overrides through original_config / width_table, or a finished config, not both")
    original = load_original_state_dict(checkpoint_path, inner_key=state_dict_key or None)
    state_dict = convert_flowmo_state_dict(original)
    with init_empty_weights():
        model = FlowMoModel(config)
    load_state_dict_strictly(model, state_dict, source=f"{checkpoint_path} [{state_dict_key or 'state dict'}]")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def preset_original_config(preset: str) -> dict:
    """The original config of a preset: base.yaml plus the README's overrides."""
    return apply_overrides(
        {"model": {}}, [f"{_dotted(field)}={value}" for field, value in FLOWMO_PRESETS[preset].items()]
    )


def _read_width_table(spec: str, original: Mapping | None) -> Mapping:
    """``--width-table``: a yaml file, or a dotted key of the ``--config`` yaml holding the table."""
    if Path(spec).is_file():
        import yaml

        table = yaml.safe_load(Path(spec).read_text())
    else:
        if original is None:
            raise ValueError(f"--width-table {spec!r} is neither a file nor usable as a key without --config")
        try:
            table = _lookup(original, spec)
        except KeyError as error:
            raise ValueError(f"--width-table: the config has no entry {spec!r}") from error
    if not isinstance(table, Mapping):
        raise ValueError(f"--width-table {spec!r} is not a mapping (hidden_size, num_heads, axes_dim, ...)")
    return table


def _dotted(field: str) -> str:
    """FlowMoConfig field -> original dotted key."""
    for dotted, name in CONFIG_KEYS.items():
        if name == field:
            return dotted
    raise KeyError(field)


def _merge(base: Mapping, update: Mapping) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
            else value
        )
    return merged


class FlowMoConverter(Converter):
    """``hf-vtok convert flowmo``: the original trainer's ``.pth`` (a release or your own run)."""

    family = "flowmo"
    files = {
        "checkpoint": "trainer .pth with model_ema_state_dict / model_state_dict",
        "config": "the run's resolved original yaml config (base.yaml + overrides)",
    }
    weight_files = ("checkpoint",)  # --config alone merges over a released preset's config
    checkpoint_entries = ("model_ema_state_dict", "model_state_dict")
    presets = tuple(sorted(FLOWMO_PRESETS))  # configurations; the released ones also download

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--override",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="original dotlist override, e.g. model.context_dim=56 (repeatable)",
        )
        parser.add_argument("--width-table", help="yaml file or dotted --config key replacing DIT_ZOO['dit_b_4']")
        parser.add_argument(
            "--online-weights", action="store_true", help="convert model_state_dict instead of the EMA weights"
        )
        parser.add_argument("--state-dict-key", help="checkpoint entry to convert ('' for a bare state dict)")

    def options(self, args: argparse.Namespace) -> dict:
        return {
            "overrides": args.override,
            "width_table": args.width_table,
            "weights": "online" if args.online_weights else "ema",
            "state_dict_key": args.state_dict_key,
        }

    def convert(
        self,
        files,
        *,
        dtype=None,
        preset=None,
        release=None,
        original_config=None,
        overrides=(),
        width_table=None,
        **options,
    ) -> Conversion:
        """``original_config`` (a parsed tree) replaces the preset's (base.yaml + the preset's overrides) and the
        ``config`` file; ``overrides`` (dotlist) and ``width_table`` (a mapping, a yaml file or a dotted config
        key) apply on top."""
        self.require(files, "checkpoint")
        preset = preset or (release.name if release else None)
        if original_config is None:
            original_config = preset_original_config(preset) if preset else {"model": {}}
            if files.get("config"):
                original_config = _merge(original_config, load_original_config(files["config"]))
        original_config = apply_overrides(original_config, list(overrides))
        if isinstance(width_table, str):
            width_table = _read_width_table(width_table, original_config)
        model = convert_flowmo_checkpoint(
            files["checkpoint"], original_config=original_config, width_table=width_table, dtype=dtype, **options
        )
        return Conversion(model, FlowMoImageProcessor(image_size=model.config.image_size))


CONVERTER = FlowMoConverter()
