"""Converter logic shared by SoftVQ-VAE and MAETok (``Hhhhhhao/continuous_tokenizer`` releases).

A release is a Hub repository written by ``PyTorchModelHubMixin``: ``model.safetensors`` (the
``state_dict`` of the original ``SoftVQModel`` / ``AEModel``) and ``config.json`` (the flat ``ModelArgs``
dataclass, in whatever version of it the authors had: released SoftVQ files lack newer keys and carry
retired ones). Like the original loader, missing keys take the ``ModelArgs`` defaults and unknown keys
are ignored; unlike it, weights are loaded strictly and every dropped tensor is listed.

ViTs are chosen by timm name in the original; width, depth and heads of each name are tabled below.
Width and depth are also read off the weights (a mismatch means a checkpoint of another variant);
heads cannot be, so a checkpoint built with other timm keyword arguments needs ``arch_overrides``
(``{timm_name: {"embed_dim", "depth", "num_heads"}}``, the kwargs merged at ``timm.create_model``).
"""

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights

from ...conversion import (
    WRAPPER_PREFIXES,
    CheckpointMismatchError,
    Conversion,
    Converter,
    load_original_json,
    load_original_state_dict,
    load_state_dict_strictly,
    rename_keys,
    strip_prefixes,
)
from .configuration_latent_token_vit import ReleasedTokenizer, released_tokenizers
from .image_processing_latent_token_vit import LatentTokenImageProcessor

# ModelArgs defaults of the reference snapshot (continuous_tokenizer@7cc3e96, modelling/tokenizer.py)
ORIGINAL_DEFAULTS: dict[str, Any] = {
    "image_size": 256, "base_image_size": 256, "codebook_size": 16384, "codebook_embed_dim": 8,
    "codebook_l2_norm": True, "codebook_show_usage": True, "commit_loss_beta": 0.25, "entropy_loss_ratio": 0.0,
    "vq_loss_ratio": 1.0, "kl_loss_weight": 1e-6, "tau": 0.1, "num_codebooks": 1,
    "encoder_ch_mult": [1, 1, 2, 2, 4], "decoder_ch_mult": [1, 1, 2, 2, 4], "z_channels": 256, "dropout_p": 0.0,
    "enc_type": "cnn", "dec_type": "cnn", "encoder_model": "llamagen_encoder", "decoder_model": "llamagen_decoder",
    "num_latent_tokens": 256, "to_pixel": "linear", "enc_tuning_method": "full", "dec_tuning_method": "full",
    "enc_pretrained": True, "dec_pretrained": False, "enc_patch_size": 16, "dec_patch_size": 16,
    "enc_drop_path_rate": 0.0, "dec_drop_path_rate": 0.0, "enc_token_drop": 0.0, "enc_token_drop_max": 0.6,
    "dec_cls_token": True, "use_ape": True, "use_rope": False, "rope_mixed": False, "rope_theta": 10.0,
    "repa": False, "repa_patch_size": 16, "repa_model": "vit_base_patch16_224", "repa_proj_dim": 2048,
    "repa_loss_weight": 0.1, "repa_align": "global", "vq_mean": 0.0, "vq_std": 1.0,
}  # fmt: skip
# keys whose ModelArgs default describes a model that is not a ViT tokenizer (LlamaGen CNN), so they must be given
REQUIRED_ORIGINAL_KEYS = ("enc_type", "dec_type", "encoder_model", "decoder_model")

# timm DINOv2 entry points the original builds ViTs from: (width, depth, heads); patch size comes from the config
TIMM_VIT_ARCHS: dict[str, tuple[int, int, int]] = {
    "vit_small_patch14_dinov2": (384, 12, 6),
    "vit_base_patch14_dinov2": (768, 12, 12),
    "vit_large_patch14_dinov2": (1024, 24, 16),
    "vit_small_patch14_dinov2_movqv2": (384, 12, 6),
    "vit_base_patch14_dinov2_movqv2": (768, 12, 12),
}

# prefixes of tensors the inference model does not use: training-only auxiliary decoders and feature
# models (MAETok), REPA projection / teacher, and the decoder's never-called patch embedding
UNUSED_PREFIXES = (
    "decoder_hog.", "decoder_dino.", "decoder_clip.", "post_quant_conv_hog.", "post_quant_conv_dino.",
    "post_quant_conv_clip.", "to_pixel_hog.", "to_pixel_dino.", "to_pixel_clip.", "repa_model.", "projection.",
    "clip_model.", "hog_generator.", "decoder.model.patch_embed.",
)  # fmt: skip
# recomputable or bookkeeping tensors
UNUSED_KEYS = re.compile(r"^(encoder|decoder)\.freqs_t_[xy]$|^quantize\.codebook_used$")

KEY_RULES = [
    (r"^encoder\.model\.patch_embed\.proj\.", "encoder.patch_embed."),
    (r"^(encoder|decoder)\.model\.cls_token$", r"\1.cls_token"),
    (r"^(encoder|decoder)\.model\.pos_embed$", r"\1.position_embedding.weight"),
    (r"^(encoder|decoder)\.latent_pos_embed$", r"\1.latent_position_embedding"),
    (r"^(encoder|decoder)\.freqs$", r"\1.rope.frequencies"),
    (r"^(encoder|decoder)\.model\.blocks\.(\d+)\.", r"\1.layers.\2."),
    (r"^(encoder|decoder)\.model\.norm\.", r"\1.norm."),
    (r"\.attn\.qkv\.", ".attention.qkv_proj."),
    (r"\.attn\.proj\.", ".attention.out_proj."),
    (r"\.ls([12])\.gamma$", r".layer_scale\1.gamma"),
    (r"\.adaLN_modulation\.1\.", ".modulation."),
    (r"^quant_conv\.", "encoder.latent_proj."),
    (r"^post_quant_conv\.", "decoder.latent_embed."),
    (r"^decoder\.to_pixel\.model\.", "decoder.output_proj."),
    (r"^quantize\.embedding$", "quantizer.codebook"),
]


@dataclass
class ConversionReport:
    """What the conversion did besides mapping tensors one to one."""

    dropped_keys: list[str] = field(default_factory=list)
    ignored_config_keys: list[str] = field(default_factory=list)
    defaulted_config_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = []
        for title, items in (
            ("dropped tensors the inference model does not use", self.dropped_keys),
            ("config.json keys the original loader ignores", self.ignored_config_keys),
            ("config.json keys missing (original defaults used)", self.defaulted_config_keys),
        ):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items))
        return "\n".join(lines)


def read_original_config(config: str | os.PathLike | dict) -> tuple[dict[str, Any], ConversionReport]:
    """Original ``config.json`` (path or dict) -> complete ``ModelArgs`` dict, as ``from_pretrained`` builds it."""
    source = "config"
    if not isinstance(config, dict):
        source = str(config)
        config = load_original_json(config)
    missing = [key for key in REQUIRED_ORIGINAL_KEYS if key not in config]
    if missing:
        raise ValueError(
            f"{source} is missing required field(s) {missing}: without them the original builds its LlamaGen CNN "
            "default, which no released SoftVQ / MAETok checkpoint uses"
        )
    report = ConversionReport(
        ignored_config_keys=sorted(key for key in config if key not in ORIGINAL_DEFAULTS),
        defaulted_config_keys=sorted(key for key in ORIGINAL_DEFAULTS if key not in config),
    )
    args = {**ORIGINAL_DEFAULTS, **{key: value for key, value in config.items() if key in ORIGINAL_DEFAULTS}}
    for role in ("enc", "dec"):
        if args[f"{role}_type"] != "vit":
            raise ValueError(
                f"{source}: {role}_type={args[f'{role}_type']!r}; only ViT tokenizers ('vit') are supported"
            )
        if args[f"{role}_tuning_method"] != "full":
            raise ValueError(
                f"{source}: {role}_tuning_method={args[f'{role}_tuning_method']!r}; only fully tuned ('full') "
                "checkpoints are supported (LoRA-wrapped weights have other names)"
            )
    if args["to_pixel"] != "linear":
        raise ValueError(f"{source}: to_pixel={args['to_pixel']!r}; only the 'linear' pixel head is supported")
    if not (args["use_ape"] or args["use_rope"]):
        raise ValueError(f"{source}: use_ape and use_rope are both off; the original cannot run such a model")
    if args["use_rope"] and not args["rope_mixed"]:
        raise ValueError(
            f"{source}: use_rope without rope_mixed selects the axial RoPE, which the original cannot run "
            "(its per-layer indexing of the axial table fails); no release uses it"
        )
    return args, report


def _vit_arch(name: str, role: str, arch_overrides: dict | None) -> tuple[int, int, int]:
    base = name.split(".")[0]  # drop the pretrained tag, e.g. ".lvd142m"
    table = dict(zip(("embed_dim", "depth", "num_heads"), TIMM_VIT_ARCHS.get(base, (None, None, None))))
    overrides = (arch_overrides or {}).get(name) or (arch_overrides or {}).get(base) or {}
    table.update({key: overrides[key] for key in ("embed_dim", "depth", "num_heads") if key in overrides})
    if None in table.values():
        raise ValueError(
            f"{role}_model {name!r} is not a ViT the converter knows ({sorted(TIMM_VIT_ARCHS)}); pass "
            "arch_overrides={name: {'embed_dim': ..., 'depth': ..., 'num_heads': ...}}"
        )
    return table["embed_dim"], table["depth"], table["num_heads"]


def _depth_in(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(match.group(1)) for key in state_dict if (match := re.match(rf"{re.escape(prefix)}(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


def architecture_fields(
    args: dict[str, Any], state_dict: dict[str, torch.Tensor], arch_overrides: dict | None = None
) -> dict[str, Any]:
    """``LatentTokenViTConfig`` fields of an original ``ModelArgs`` dict, checked against the original weights."""
    fields: dict[str, Any] = {}
    for role, short, name_key in (("encoder", "enc", "encoder_model"), ("decoder", "dec", "decoder_model")):
        name = args[name_key]
        width, depth, heads = _vit_arch(name, role, arch_overrides)
        stored_width = state_dict.get(f"{role}.mask_token", state_dict.get(f"{role}.latent_pos_embed"))
        stored_width = stored_width.shape[-1] if stored_width is not None else None
        stored_depth = _depth_in(state_dict, f"{role}.model.blocks.")
        if (stored_width, stored_depth) != (width, depth):
            raise CheckpointMismatchError(
                f"config.json names {role} {name!r} (width {width}, depth {depth}) but the checkpoint's {role} has "
                f"width {stored_width}, depth {stored_depth}: the weights belong to another variant (or the ViT was "
                "built with other timm arguments: pass arch_overrides)"
            )
        fields.update({f"{role}_hidden_size": width, f"{role}_num_layers": depth, f"{role}_num_heads": heads})
        fields[f"{role}_patch_size"] = args[f"{short}_patch_size"]
        fields[f"{role}_drop_path_rate"] = args[f"{short}_drop_path_rate"]
    latent_modulation = "movq" in args["decoder_model"]
    fields.update(
        image_size=args["image_size"],
        num_latent_tokens=args["num_latent_tokens"],
        latent_channels=args["codebook_embed_dim"],
        use_rope=bool(args["use_rope"]),
        rope_theta=args["rope_theta"],
        decoder_cls_token=bool(args["dec_cls_token"]),
        decoder_latent_modulation=latent_modulation,
        encoder_layer_scale_init=1e-5 if "encoder.model.blocks.0.ls1.gamma" in state_dict else None,
        decoder_layer_scale_init=None if latent_modulation else 1e-5,
        shift_factor=float(args["vq_mean"]),
        scaling_factor=1.0 / float(args["vq_std"]),
    )
    if args["vq_std"] == 0:
        raise ValueError("config.json has vq_std=0; the latent standard deviation must be non-zero")
    return fields


def convert_state_dict(
    original: dict[str, torch.Tensor], model: torch.nn.Module, report: ConversionReport
) -> dict[str, torch.Tensor]:
    """Original names (wrapper prefixes already stripped) -> hf_vtok names; unused tensors (listed in
    ``report``) dropped; RoPE tables reshaped."""
    expected = model.state_dict()
    kept = {}
    for key, value in original.items():
        if key.startswith(UNUSED_PREFIXES) or UNUSED_KEYS.match(key):
            report.dropped_keys.append(key)
        else:
            kept[key] = value
    state_dict = rename_keys(kept, KEY_RULES)
    for key in list(state_dict):
        # a decoder position table the RoPE decoder never adds; a mask token of a model trained with token masking
        if key not in expected and (key == "decoder.position_embedding.weight" or key == "encoder.mask_token"):
            report.dropped_keys.append({"decoder.position_embedding.weight": "decoder.model.pos_embed"}.get(key, key))
            del state_dict[key]
        elif key.endswith("rope.frequencies") and key in expected:
            # original layout [2, depth, heads * head_dim / 2] -> [2, depth, heads, head_dim / 2]
            state_dict[key] = state_dict[key].reshape(expected[key].shape)
    report.dropped_keys.sort()
    return state_dict


def convert_original_checkpoint(
    model_class,
    checkpoint: str | os.PathLike | dict[str, torch.Tensor],
    original_config: str | os.PathLike | dict,
    family_fields,
    presets: dict[str, ReleasedTokenizer],
    arch_overrides: dict | None = None,
    release: ReleasedTokenizer | str | None = None,
    dtype: torch.dtype | None = None,
    **config_overrides,
):
    """Build ``model_class`` from an original ``model.safetensors`` + ``config.json``.

    ``family_fields(args, state_dict) -> dict`` adds the family's config fields (and rejects checkpoints
    of the other family). ``release`` (a name of ``presets`` or a ``ReleasedTokenizer``) also checks the
    sizes of that release. Returns ``(model, report)``.
    """
    if isinstance(release, str):
        if release not in presets:
            raise ValueError(f"unknown preset {release!r}; known: {sorted(presets)}")
        release = presets[release]
    args, report = read_original_config(original_config)
    source = str(checkpoint) if not isinstance(checkpoint, dict) else "state dict"
    original = dict(checkpoint) if isinstance(checkpoint, dict) else load_original_state_dict(checkpoint)
    original = strip_prefixes(original, WRAPPER_PREFIXES)
    fields = architecture_fields(args, original, arch_overrides)
    fields.update(family_fields(args, original))
    fields.update(config_overrides)
    config = model_class.config_class(**fields)
    if release is not None:
        check_release(config, release)
    with init_empty_weights():
        model = model_class(config)
    state_dict = convert_state_dict(original, model, report)
    load_state_dict_strictly(model, state_dict, source=source)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), report


def check_release(config, release: ReleasedTokenizer) -> None:
    """The converted sizes must be those of the named release (catches files of another variant)."""
    wrong = [
        f"{name} {getattr(config, name)} (the release has {getattr(release, name)})"
        for name in ("num_latent_tokens", "latent_channels", "image_size")
        if getattr(config, name) != getattr(release, name)
    ]
    if wrong:
        raise CheckpointMismatchError(f"these files are not {release.repo_id}: " + ", ".join(wrong))


def load_arch_overrides(value: str | None) -> dict | None:
    """``--arch-overrides``: a JSON object or a JSON file; an ``original_config.json`` with a
    ``_tiny_arch_overrides`` entry is accepted as is."""
    if not value:
        return None
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--arch-overrides is neither a JSON file nor JSON: {error}") from error
    if isinstance(overrides, dict) and "_tiny_arch_overrides" in overrides:
        overrides = overrides["_tiny_arch_overrides"]
    if not isinstance(overrides, dict) or not all(isinstance(item, dict) for item in overrides.values()):
        raise ValueError("arch overrides must map timm model names to {'embed_dim', 'depth', 'num_heads'} objects")
    return overrides


class LatentTokenConverter(Converter):
    """The converter of SoftVQ-VAE and MAETok releases (``model.safetensors`` + ``config.json``).

    A family sets ``family`` and ``model_class`` and implements ``family_fields(args, state_dict)``: its
    config fields from the original ``ModelArgs`` (rejecting checkpoints of the other family).
    """

    model_class: type
    files = {
        "checkpoint": "original model.safetensors",
        "config": "original config.json written by the original's hub mixin",
    }

    def family_fields(self, args: dict, state_dict: dict[str, torch.Tensor]) -> dict:
        raise NotImplementedError

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--arch-overrides",
            help="JSON (or file) {timm_name: {embed_dim, depth, num_heads}} for non-standard ViTs",
        )

    def options(self, args) -> dict:
        return {"arch_overrides": load_arch_overrides(args.arch_overrides)}

    def convert_checkpoint(
        self,
        checkpoint: str | os.PathLike | dict[str, torch.Tensor],
        original_config: str | os.PathLike | dict,
        arch_overrides: dict | None = None,
        release: ReleasedTokenizer | str | None = None,
        dtype: torch.dtype | None = None,
        **config_overrides,
    ) -> tuple[torch.nn.Module, ConversionReport]:
        """The model (eval mode) and a ``ConversionReport`` from original files.

        ``release`` (a preset name or ``ReleasedTokenizer``) additionally checks the sizes of that release.
        """
        return convert_original_checkpoint(
            self.model_class,
            checkpoint,
            original_config,
            self.family_fields,
            released_tokenizers(self.family),
            arch_overrides,
            release,
            dtype,
            **config_overrides,
        )

    def convert(
        self, files, *, dtype=None, preset=None, release=None, arch_overrides=None, **config_overrides
    ) -> Conversion:
        self.require(files, "checkpoint", "config")
        model, report = self.convert_checkpoint(
            files["checkpoint"], files["config"], arch_overrides, release=preset, dtype=dtype, **config_overrides
        )
        notes = [report.summary()] if report.summary() else []
        return Conversion(model, LatentTokenImageProcessor.for_model(model.config), notes)


__all__ = [
    "ConversionReport",
    "LatentTokenConverter",
    "ReleasedTokenizer",
    "architecture_fields",
    "convert_original_checkpoint",
    "convert_state_dict",
    "read_original_config",
]
