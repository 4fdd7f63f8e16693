"""Convert an original V²Flow training checkpoint (``checkpoint-last.pth``) to an hf_vtok folder.

    hf-vtok convert v2flow --checkpoint output_dir/checkpoint-last.pth --output v2flow-large-1024
    hf-vtok convert v2flow --checkpoint checkpoint-last.pth --weights ema --num-attention-heads 4 --output out/

The checkpoint holds the command-line arguments of the run (an ``argparse.Namespace``); it is read
with ``torch.load(weights_only=True)`` allowing only that class, so no pickled code runs. The
architecture comes from the tensor shapes, the run's settings (flow method, guidance, dropout, ...)
from the arguments (``--args`` merges a JSON file over them), the number of attention heads from
the ``--model`` factory name (``--num-attention-heads`` for other names). Parameters the model
never uses (``class_emb``) are dropped and listed. No released V²Flow weights exist: the input is
a checkpoint of your own training run.
"""

import argparse
import os
import re
from collections.abc import Mapping

import torch
from accelerate import init_empty_weights

from ...conversion import (
    WRAPPER_PREFIXES,
    CheckpointMismatchError,
    Conversion,
    Converter,
    load_original_json,
    load_state_dict_strictly,
    load_torch_checkpoint,
    rename_keys,
    strip_prefixes,
)
from .configuration_v2flow import FLOW_METHODS, V2FLOW_ARCHITECTURES, V2FlowConfig
from .image_processing_v2flow import V2FlowImageProcessor
from .llm_vocabulary import load_llm_vocabulary
from .modeling_v2flow import V2FlowModel

# original key -> hf_vtok key (applied in order)
KEY_RULES = [
    (r"^downsampler\.", "connector."),
    (r"^fake_latent$", "unconditional_embedding"),
    (r"^z_proj\.", "encoder.token_proj."),
    (r"^z_proj_ln\.", "encoder.input_norm."),
    (r"^encoder_pos_embed_learned$", "encoder.position_embedding"),
    (r"^encoder_blocks\.", "encoder.blocks."),
    (r"^encoder_norm\.", "encoder.norm."),
    (r"^decoder_embed\.", "decoder.input_proj."),
    (r"^mask_token$", "decoder.mask_token"),
    (r"^decoder_pos_embed_learned$", "decoder.position_embedding"),
    (r"^decoder_blocks\.", "decoder.blocks."),
    (r"^decoder_norm\.", "decoder.norm."),
    (r"^diffusion_pos_embed_learned$", "decoder.flow_position_embedding"),
    (r"\.attn\.qkv\.", ".attention.qkv_proj."),
    (r"\.attn\.proj\.", ".attention.out_proj."),
    (r"^flowloss\.net\.time_embed\.mlp\.0\.", "flow_head.time_embedding.linear_1."),
    (r"^flowloss\.net\.time_embed\.mlp\.2\.", "flow_head.time_embedding.linear_2."),
    (r"^flowloss\.net\.cond_embed\.", "flow_head.condition_proj."),
    (r"^flowloss\.net\.", "flow_head."),
    (r"\.in_ln\.", ".norm."),
    (r"\.adaLN_modulation\.1\.", ".modulation."),
    (r"^quantizer\._codebook\.embed$", "quantizer.codebook"),
    (r"^quantizer\._codebook\.embed_avg$", "quantizer.ema_embed_sum"),
    (r"^quantizer\._codebook\.cluster_size$", "quantizer.ema_cluster_size"),
]
# original keys hf_vtok does not keep, and why
DROPPED_KEYS = {
    "class_emb.weight": "class embedding table, never used by the model",
    "quantizer._codebook.initted": "k-means initialisation flag (the codebook is always initialised)",
}
EMA_STATISTICS = {  # hf_vtok key -> original key
    "quantizer.ema_cluster_size": "quantizer._codebook.cluster_size",
    "quantizer.ema_embed_sum": "quantizer._codebook.embed_avg",
}
WEIGHT_CHOICES = {"model": "model", "ema": "model_ema"}


def load_v2flow_checkpoint(path: str | os.PathLike) -> dict:
    """The training checkpoint dict (``model``, ``model_ema``, ``args``, ...) without executing pickle."""
    checkpoint = load_torch_checkpoint(path, allowed_globals=[argparse.Namespace])
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{str(path)!r} is not a V2Flow training checkpoint (a dict with 'model' and 'args')")
    return dict(checkpoint)


def _count(state_dict: Mapping, pattern: str) -> int:
    """Number of distinct indices the regex group captures (blocks ``.0.`` .. or ``b1`` ..)."""
    return len({match.group(1) for key in state_dict if (match := re.match(pattern, key))})


def _original_args(checkpoint: Mapping, args_override: Mapping | None) -> dict:
    args = checkpoint.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    if args_override:
        args.update(args_override.get("argparse", args_override))
    return args


def convert_v2flow_state_dict(original: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename original keys to hf_vtok's and reshape the single-codebook buffers; returns (state dict, dropped)."""
    original = strip_prefixes(original, WRAPPER_PREFIXES)
    dropped = {key: reason for key, reason in DROPPED_KEYS.items() if key in original}
    initted = original.get("quantizer._codebook.initted")
    if initted is not None and not bool(initted.all()):
        raise CheckpointMismatchError(
            "quantizer._codebook.initted is 0: this checkpoint's codebook was never initialised"
        )
    state_dict = rename_keys({key: value for key, value in original.items() if key not in DROPPED_KEYS}, KEY_RULES)
    for key in ("quantizer.codebook", "quantizer.ema_embed_sum", "quantizer.ema_cluster_size"):
        if key in state_dict:
            value = state_dict[key]
            if value.shape[0] != 1:
                raise CheckpointMismatchError(f"{key} has {value.shape[0]} codebooks; V2Flow uses one")
            state_dict[key] = value[0]
    return state_dict, dropped


def infer_v2flow_config(
    state_dict: Mapping[str, torch.Tensor], args: Mapping, num_attention_heads: int | None = None, **overrides
) -> V2FlowConfig:
    """Architecture from the (hf_vtok-named) tensors, run settings from the original arguments."""
    for key in (
        "unconditional_embedding",
        "encoder.position_embedding",
        "encoder.token_proj.weight",
        "connector.s1.b1.conv1.conv.weight",
        "quantizer.codebook",
        "flow_head.input_proj.weight",
        "encoder.blocks.0.mlp.fc1.weight",
    ):
        if key not in state_dict:
            raise CheckpointMismatchError(f"not a V2Flow checkpoint: it has no tensor for {key!r}")
    hidden_size = state_dict["unconditional_embedding"].shape[1]
    positions = state_dict["encoder.position_embedding"].shape[1]
    if positions % 2:
        raise CheckpointMismatchError(
            f"encoder_pos_embed_learned covers {positions} positions; V2Flow needs buffer_size == tokens "
            "(an even total)"
        )
    num_tokens = positions // 2
    patch_size = int(args.get("patch_size", 1))
    token_dim = state_dict["encoder.token_proj.weight"].shape[1]
    grid = int(round(num_tokens**0.5))
    if grid * grid != num_tokens or token_dim % (patch_size * patch_size):
        raise CheckpointMismatchError(f"{num_tokens} tokens of {token_dim} values do not form a square latent grid")
    if "buffer_size" in args and args["buffer_size"] != num_tokens:
        raise CheckpointMismatchError(
            f"the run's buffer_size={args['buffer_size']} differs from its {num_tokens} tokens; the original model "
            "needs them equal (the per-token condition fills the buffer)"
        )
    if "img_size" in args and "vae_stride" in args and args["img_size"] // args["vae_stride"] // patch_size != grid:
        raise CheckpointMismatchError(
            f"the run's img_size={args['img_size']} / vae_stride={args['vae_stride']} / patch_size={patch_size} "
            f"does not give the weights' {grid}x{grid} token grid"
        )
    model_name = args.get("model")
    if num_attention_heads is None:
        if model_name not in V2FLOW_ARCHITECTURES:
            raise ValueError(
                f"the checkpoint was trained with --model {model_name!r}, not one of {sorted(V2FLOW_ARCHITECTURES)}: "
                "the number of attention heads is not stored in the weights, pass num_attention_heads "
                "(--num-attention-heads)"
            )
        num_attention_heads = V2FLOW_ARCHITECTURES[model_name][2]
    flow_method = args.get("flow_method", "CondOT")
    if flow_method not in FLOW_METHODS:
        raise ValueError(f"the run's flow_method {flow_method!r} is not one of {FLOW_METHODS}")
    use_llm_vocabulary = "llm_embed_tokens" in state_dict
    if "visual_vocabulary" in args and bool(args["visual_vocabulary"]) != use_llm_vocabulary:
        raise CheckpointMismatchError(
            f"the run's visual_vocabulary={args['visual_vocabulary']} but the weights "
            f"{'have' if use_llm_vocabulary else 'lack'} llm_embed_tokens"
        )
    codebook_size, code_dim = state_dict["quantizer.codebook"].shape
    fields = {
        "latent_channels": token_dim // (patch_size * patch_size),
        "sample_size": grid * patch_size,
        "patch_size": patch_size,
        "vae_downsample_factor": int(args.get("vae_stride", 32)),
        "connector_hidden_size": state_dict["connector.s1.b1.conv1.conv.weight"].shape[0],
        "connector_depth": _count(state_dict, r"connector\.s1\.b(\d+)\."),
        "connector_readout_depth": _count(state_dict, r"connector\.readout\.(\d+)\.weight$"),
        "use_llm_vocabulary": use_llm_vocabulary,
        "codebook_size": codebook_size,
        "codebook_ema_state": all(key in state_dict for key in EMA_STATISTICS),
        "projector_depth": _count(state_dict, r"projector\.(\d+)\.weight$"),
        "hidden_size": hidden_size,
        "encoder_num_layers": _count(state_dict, r"encoder\.blocks\.(\d+)\."),
        "decoder_num_layers": _count(state_dict, r"decoder\.blocks\.(\d+)\."),
        "num_attention_heads": num_attention_heads,
        "mlp_ratio": state_dict["encoder.blocks.0.mlp.fc1.weight"].shape[0] / hidden_size,
        "flow_head_width": state_dict["flow_head.input_proj.weight"].shape[0],
        "flow_head_depth": _count(state_dict, r"flow_head\.res_blocks\.(\d+)\."),
        "flow_method": flow_method,
    }
    if use_llm_vocabulary:
        fields["llm_vocab_size"], fields["llm_embed_dim"] = state_dict["llm_embed_tokens"].shape
        if code_dim != fields["llm_embed_dim"]:
            raise CheckpointMismatchError(
                f"codebook width {code_dim} differs from the LLM embedding width {fields['llm_embed_dim']}"
            )
    settings = {  # original argument -> config field
        "attn_dropout": "attention_dropout",
        "proj_dropout": "hidden_dropout",
        "label_drop_prob": "label_drop_prob",
        "mask_ratio_min": "mask_ratio_min",
        "diffusion_batch_mul": "diffusion_batch_mul",
        "num_iter": "num_ar_steps",
        "cfg_schedule": "guidance_schedule",
    }
    fields.update({field: args[name] for name, field in settings.items() if name in args})
    if flow_method == "CondOT" and "cfg" in args:
        # linear_flow keeps guidance_scale=None: its outer guidance changes nothing (see V2FlowConfig)
        fields["guidance_scale"] = float(args["cfg"])
    fields.update(overrides)
    return V2FlowConfig(**fields)


def convert_v2flow_checkpoint(
    checkpoint_path: str | os.PathLike,
    weights: str = "model",
    args_override: Mapping | None = None,
    num_attention_heads: int | None = None,
    llm_vocabulary: str | os.PathLike | None = None,
    keep_ema_statistics: bool = True,
    dtype: torch.dtype | None = None,
    **config_overrides,
) -> tuple[V2FlowModel, dict[str, str]]:
    """Build a ``V2FlowModel`` from a training checkpoint; returns it and the dropped keys (with reasons).

    ``weights``: ``"model"`` (the live weights, what the original ``--evaluate`` uses) or ``"ema"``
    (the parameter EMA; buffers such as the codebook are the live ones in both). ``llm_vocabulary``:
    a vocabulary file to check the checkpoint's ``llm_embed_tokens`` against (or to supply it if the
    checkpoint lacks it). ``keep_ema_statistics=False`` drops the codebook's EMA statistics (inference
    only, -2 x codebook size).
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {sorted(WEIGHT_CHOICES)}, got {weights!r}")
    checkpoint = load_v2flow_checkpoint(checkpoint_path)
    entry = WEIGHT_CHOICES[weights]
    if entry not in checkpoint:
        raise KeyError(f"{str(checkpoint_path)!r} has no {entry!r} weights; entries: {sorted(checkpoint)}")
    state_dict, dropped = convert_v2flow_state_dict(checkpoint[entry])
    if llm_vocabulary is not None:
        vocabulary = load_llm_vocabulary(llm_vocabulary)
        stored = state_dict.get("llm_embed_tokens")
        if stored is None:
            state_dict["llm_embed_tokens"] = vocabulary.float()
        elif tuple(vocabulary.shape) != tuple(stored.shape):
            raise ValueError(
                f"vocabulary file {str(llm_vocabulary)!r} has shape {tuple(vocabulary.shape)} "
                f"(vocabulary size, width) but the checkpoint was trained with {tuple(stored.shape)}"
            )
        elif not torch.equal(vocabulary.to(stored.dtype), stored):
            raise ValueError(
                f"vocabulary file {str(llm_vocabulary)!r} has the checkpoint's shape {tuple(stored.shape)} but other "
                "values: it is not the vocabulary this model was trained with"
            )
    if not keep_ema_statistics:
        for key, original_key in EMA_STATISTICS.items():
            if state_dict.pop(key, None) is not None:
                dropped[original_key] = "codebook EMA statistics (needed only to keep training)"
    args = _original_args(checkpoint, args_override)
    config = infer_v2flow_config(state_dict, args, num_attention_heads, **config_overrides)
    with init_empty_weights(include_buffers=True):
        model = V2FlowModel(config)
    load_state_dict_strictly(model, state_dict, source=f"{checkpoint_path} [{entry}]")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), dropped


class V2FlowConverter(Converter):
    """``hf-vtok convert v2flow``: the original training script's ``checkpoint-last.pth``."""

    family = "v2flow"
    files = {"checkpoint": "original checkpoint-last.pth"}
    checkpoint_entries = ("model", "model_ema", "args")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--weights",
            choices=sorted(WEIGHT_CHOICES),
            default="model",
            help="live weights ('model', default; what the original evaluates) or their EMA",
        )
        parser.add_argument("--args", help="JSON file of original arguments merged over the checkpoint's")
        parser.add_argument(
            "--num-attention-heads",
            type=int,
            help="heads of the MAR transformer when --model was not v2flow_base/large/huge",
        )
        parser.add_argument("--llm-vocabulary", help="vocabulary file to check llm_embed_tokens against")
        parser.add_argument(
            "--drop-ema-statistics",
            action="store_true",
            help="drop the codebook's EMA statistics (inference-only folder)",
        )

    def options(self, args: argparse.Namespace) -> dict:
        return {
            "weights": args.weights,
            "args_override": load_original_json(args.args) if args.args else None,
            "num_attention_heads": args.num_attention_heads,
            "llm_vocabulary": args.llm_vocabulary,
            "keep_ema_statistics": not args.drop_ema_statistics,
        }

    def convert(self, files, *, dtype=None, preset=None, release=None, **options) -> Conversion:
        self.require(files, "checkpoint")
        model, dropped = convert_v2flow_checkpoint(files["checkpoint"], dtype=dtype, **options)
        size = model.config.image_size
        processor = V2FlowImageProcessor(crop_size={"height": size, "width": size})
        notes = [f"dropped {key}: {reason}" for key, reason in dropped.items()]
        notes.append(f"flow_method={model.config.flow_method}")
        return Conversion(model, processor, notes)


CONVERTER = V2FlowConverter()
