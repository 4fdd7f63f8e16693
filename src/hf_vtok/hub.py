"""Model cards and ``push_to_hub`` for hf_vtok tokenizers, generators and pipelines.

    model.push_to_hub("me/vitok-350M-f16x64", preset="vitok-v2-350M-f16x64", eval_results="eval/results.json")
    card = hf_vtok.hub.model_card(model, repo_id="me/vitok-350M-f16x64")   # huggingface_hub.ModelCard

Cards are rendered from the jinja templates in the top-level ``model_cards/`` (one per family, shipped
in the wheel as ``hf_vtok/model_cards/``) through ``huggingface_hub.ModelCard`` / ``ModelCardData``: library name, tags,
the license of the original release, pipeline tag, the original paper's citation, a usage snippet,
and the table of an ``hf-vtok eval`` / ``hf-vtok eval-generation`` run when given. A pushed repo
also carries the remote-code bundle (``hf_vtok.remote_code``) unless ``remote_code=False``, so
tokenizers and generators load with ``trust_remote_code=True`` where hf_vtok is not installed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .remote_code import RemoteCodeMixin, is_diffusers_model, write_remote_code

_PACKAGED_TEMPLATES = Path(__file__).resolve().parent / "model_cards"  # an installed wheel
# a source checkout (editable installs map hf_vtok.model_cards to the top-level folder)
TEMPLATES = (
    _PACKAGED_TEMPLATES if _PACKAGED_TEMPLATES.is_dir() else Path(__file__).resolve().parents[2] / "model_cards"
)
PROJECT_URL = "https://github.com/hf-vtok/hf_vtok"


@dataclass(frozen=True)
class CardFamily:
    """What a family's cards say besides the model: its template, title, license, tags, task."""

    template: str
    title: str
    license: str
    tags: tuple[str, ...]
    original_code: str
    pipeline_tag: str | None = None  # None: the tokenizer / generation tag of the object's kind


_TOKENIZER_TAGS = ("image-tokenizer", "autoencoder")
_GENERATOR_TAGS = ("class-conditional-image-generation", "imagenet")
CARD_FAMILIES = {
    "vitok": CardFamily(
        "vitok.md", "ViTok-v2", "mit", _TOKENIZER_TAGS + ("vitok",), "https://github.com/Na-VAE/vitok-release"
    ),
    "flowmo": CardFamily(
        "flowmo.md", "FlowMo", "apache-2.0", _TOKENIZER_TAGS + ("flowmo",), "https://github.com/kylesargent/FlowMo"
    ),
    "softvq": CardFamily(
        "softvq.md",
        "SoftVQ-VAE",
        "apache-2.0",
        _TOKENIZER_TAGS + ("softvq-vae", "1d-tokenizer"),
        "https://github.com/Hhhhhhao/continuous_tokenizer",
    ),
    "maetok": CardFamily(
        "maetok.md",
        "MAETok",
        "apache-2.0",
        _TOKENIZER_TAGS + ("maetok", "1d-tokenizer"),
        "https://github.com/Hhhhhhao/continuous_tokenizer",
    ),
    "v2flow": CardFamily(
        "v2flow.md", "V²Flow", "mit", _TOKENIZER_TAGS + ("v2flow",), "https://github.com/zhangguiwei610/V2Flow"
    ),
    "v2flow_llama": CardFamily(
        "v2flow_llama.md",
        "V²Flow + LLaMA",
        "mit",
        ("text-to-image", "autoregressive", "v2flow", "llama"),
        "https://github.com/zhangguiwei610/V2Flow",
        pipeline_tag="text-to-image",
    ),
    "sit": CardFamily(
        "sit.md", "SiT", "apache-2.0", _GENERATOR_TAGS + ("sit",), "https://github.com/Hhhhhhao/continuous_tokenizer"
    ),
    "dit": CardFamily(
        "dit.md", "DiT", "apache-2.0", _GENERATOR_TAGS + ("dit",), "https://github.com/Hhhhhhao/continuous_tokenizer"
    ),
    "vitok_dit": CardFamily(
        "vitok_dit.md", "ViTok-v2 DiT", "mit", _GENERATOR_TAGS + ("vitok",), "https://github.com/Na-VAE/vitok-release"
    ),
}
# generator families: their pipeline class and the released sampling call
GENERATOR_USAGE = {
    "sit": ("SiTPipeline", "num_inference_steps=250, guidance_scale=1.75, guidance_interval=(0.0, 0.7)"),
    "dit": ("DiT1DPipeline", "num_inference_steps=250, guidance_scale=1.75"),
    "vitok_dit": ("ViTokDiTPipeline", "num_inference_steps=50, guidance_scale=4.0"),
}
# The Hub has no class-conditional task; its image-generation task without a text prompt is this one.
GENERATION_PIPELINE_TAG = "unconditional-image-generation"
TOKENIZER_PIPELINE_TAG = "image-feature-extraction"


def template_path(family: str) -> Path:
    """The jinja template of a family's card."""
    if family not in CARD_FAMILIES:
        raise ValueError(f"no model card template for {family!r}; known: {sorted(CARD_FAMILIES)}")
    return TEMPLATES / CARD_FAMILIES[family].template


def _kind(obj) -> str:
    from diffusers import DiffusionPipeline, ModelMixin

    if isinstance(obj, DiffusionPipeline):
        return "pipeline"
    if isinstance(obj, ModelMixin):
        return "transformer"
    return "tokenizer"


def card_family(obj) -> str:
    """The card family of a tokenizer (its ``model_type``), generator or pipeline (``card_family``)."""
    family = getattr(obj, "card_family", None) or getattr(getattr(obj, "config", None), "model_type", None)
    if family not in CARD_FAMILIES:
        raise ValueError(f"{type(obj).__name__} has no hf_vtok model card family (got {family!r})")
    return family


# --------------------------------------------------------------------------------------------------
# evaluation tables of `hf-vtok eval` / `hf-vtok eval-generation`


def _load_results(eval_results) -> tuple[dict, Path | None]:
    if isinstance(eval_results, dict):
        return eval_results, None
    path = Path(eval_results)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation results at {str(path)!r} (the results.json of `hf-vtok eval`)")
    try:
        return json.loads(path.read_text(encoding="utf-8")), path
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not the JSON `hf-vtok eval` writes: {error}") from error


def evaluation(eval_results, row: str | None = None):
    """``(markdown table, [EvalResult])`` of an ``hf-vtok eval`` / ``eval-generation`` results.json (path,
    folder or dict). The model-index entries come from the row named ``row`` (or the only row)."""
    from huggingface_hub import EvalResult

    from .evaluation.report import markdown_table

    results, path = _load_results(eval_results)
    if "models" in results:  # reconstruction
        rows, metrics = results["models"], results.get("metrics", [])
        columns, key = [("name", "tokenizer"), ("tokens_per_image", "tokens / image")], "name"
        task = ("image-to-image", "Image reconstruction")
        dataset, split = str(results.get("data", "")), results.get("split")
    elif "runs" in results:  # class-conditional generation
        rows, metrics = results["runs"], ["gfid", "is"]
        columns, key = [("label", "guidance scale"), ("num_samples", "samples")], "label"
        task = (GENERATION_PIPELINE_TAG, "Class-conditional image generation")
        dataset, split = str(results.get("reference", "")), None
    else:
        raise ValueError(
            "evaluation results need the 'models' (hf-vtok eval) or 'runs' (hf-vtok eval-generation) list"
        )
    markdown = path.with_name("results.md") if path is not None else None
    table = markdown.read_text(encoding="utf-8") if markdown is not None and markdown.is_file() else ""
    table = table or markdown_table(rows, columns, metrics)
    if row is None and len(rows) == 1:
        row = str(rows[0].get(key))
    chosen = [item for item in rows if str(item.get(key)) == row]
    entries = []
    for item in chosen[:1]:
        for metric in metrics:
            value = item.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                entries.append(
                    EvalResult(
                        task_type=task[0],
                        task_name=task[1],
                        dataset_type=dataset or "images",
                        dataset_name=Path(dataset.rstrip("/")).name or dataset or "images",
                        dataset_split=split,
                        metric_type=metric,
                        metric_name=metric.upper(),
                        metric_value=float(value),
                    )
                )
    return table, entries


# --------------------------------------------------------------------------------------------------
# cards


def _template_variables(obj, kind: str) -> dict:
    """Numbers of the model the templates show (latent sizes, token counts, ...)."""
    if kind == "pipeline":
        tokenizer_config = obj.tokenizer.config
        transformer = getattr(obj, "transformer", None)
        config = transformer.config if transformer is not None else tokenizer_config
        variables = {"tokenizer_class": type(obj.tokenizer).__name__, "pipeline_class": type(obj).__name__}
        language_model = getattr(obj, "language_model", None)
        if language_model is not None:
            variables["language_model_class"] = type(language_model).__name__
        if transformer is not None:
            variables["transformer_class"] = type(transformer).__name__
    else:
        config, tokenizer_config = obj.config, None
        variables = {"model_class": type(obj).__name__}
    for name in (
        "variant",
        "latent_channels",
        "num_latent_tokens",
        "image_size",
        "code_length",
        "bits_per_token",
        "in_channels",
        "num_tokens",
        "hidden_size",
        "num_layers",
        "num_classes",
        "codebook_size",
    ):
        for source in (config, tokenizer_config):
            value = getattr(source, name, None) if source is not None else None
            if value is not None:
                variables.setdefault(name, value)
    if hasattr(config, "tokens_per_image"):
        variables["tokens_per_image"] = config.tokens_per_image
    family = card_family(obj)
    if family in GENERATOR_USAGE:
        variables["pipeline_class_of_transformer"], variables["call_arguments"] = GENERATOR_USAGE[family]
    return variables


def model_card(
    obj,
    repo_id: str | None = None,
    preset: str | None = None,
    eval_results=None,
    eval_row: str | None = None,
    remote_code: bool = True,
    **template_variables,
):
    """The ``huggingface_hub.ModelCard`` of an hf_vtok tokenizer, generator or pipeline.

    ``preset``: the ``hf_vtok.pretrained`` entry it was converted from (original repo, license, base
    model). ``eval_results``: an ``hf-vtok eval`` results.json (its table and model-index metrics).
    ``repo_id`` goes into the usage snippet (a Hub id or a local folder).
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .pretrained import get_pretrained

    family = card_family(obj)
    info = CARD_FAMILIES[family]
    kind = _kind(obj)
    entry = get_pretrained(preset) if preset is not None else None
    table, eval_entries = evaluation(eval_results, eval_row) if eval_results is not None else ("", [])
    model_name = template_variables.pop("model_name", None) or (
        repo_id.rstrip("/").split("/")[-1] if repo_id else None
    )
    data = ModelCardData(
        library_name="hf_vtok",
        license=entry.license if entry is not None else info.license,
        tags=[*info.tags, "hf_vtok", kind] + (["custom_code"] if remote_code and kind != "pipeline" else []),
        pipeline_tag=info.pipeline_tag or (TOKENIZER_PIPELINE_TAG if kind == "tokenizer" else GENERATION_PIPELINE_TAG),
        base_model=entry.repo_id if entry is not None else None,
        model_name=model_name,
        eval_results=eval_entries or None,
    )
    variables = {
        **_template_variables(obj, kind),
        "kind": kind,
        "title": info.title,
        "model_name": model_name,
        "repo_id": repo_id or "path/to/this/folder",
        "original_repo": entry.repo_id if entry is not None else None,
        "original_code": info.original_code,
        "project_url": PROJECT_URL,
        "remote_code": remote_code,
        "eval_table": table,
        **template_variables,
    }
    return ModelCard.from_template(data, template_path=str(template_path(family)), **variables)


# --------------------------------------------------------------------------------------------------
# push


def default_image_processor(model):
    """The image processor registered for a tokenizer's config, sized for the model."""
    from . import _TOKENIZERS

    for config_class, _, processor_class in _TOKENIZERS:
        if type(model.config) is config_class:
            return processor_class.for_model(model.config)
    raise ValueError(f"no image processor is registered for {type(model.config).__name__}")


def _remote_code_components(obj, kind: str):
    """(subfolder, object) pairs whose remote-code bundle a push writes."""
    if kind != "pipeline":
        return [("", obj)]
    return [(name, component) for name, component in obj.components.items() if isinstance(component, RemoteCodeMixin)]


def _remote_auto_class(component) -> str:
    return "AutoModel" if is_diffusers_model(component) else component._remote_auto_class or "AutoModel"


def push_to_hub(
    obj,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    image_processor=None,
    preset: str | None = None,
    eval_results=None,
    eval_row: str | None = None,
    remote_code: bool = True,
    model_card_variables: dict | None = None,
    **save_kwargs,
):
    """Save ``obj`` (tokenizer with its image processor, generator, or pipeline), its model card and
    (``remote_code``) its remote-code bundle to a temporary folder and upload it as one commit."""
    from huggingface_hub import HfApi

    kind = _kind(obj)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    card = model_card(
        obj,
        repo_id=repo_id,
        preset=preset,
        eval_results=eval_results,
        eval_row=eval_row,
        remote_code=remote_code,
        **(model_card_variables or {}),
    )
    with tempfile.TemporaryDirectory() as folder:
        obj.save_pretrained(folder, **save_kwargs)
        if kind == "tokenizer":
            processor = image_processor if image_processor is not None else default_image_processor(obj)
            processor.save_pretrained(folder)
            if remote_code:
                write_remote_code(folder, {"AutoImageProcessor": type(processor)}, "preprocessor_config.json")
        if remote_code:
            for subfolder, component in _remote_code_components(obj, kind):
                classes = {_remote_auto_class(component): type(component)}
                if kind == "tokenizer" or hasattr(getattr(component, "config", None), "model_type"):
                    classes["AutoConfig"] = type(component.config)
                write_remote_code(
                    os.path.join(folder, subfolder),
                    classes,
                    "config.json",
                    entry_imports_all=is_diffusers_model(component),
                )
        card.save(os.path.join(folder, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(obj).__name__} with hf_vtok",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


class HubMixin(RemoteCodeMixin):
    """``push_to_hub`` with a generated model card (and ``register_for_auto_class``) for hf_vtok classes."""

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload to the Hub with a generated model card; see ``hf_vtok.hub.push_to_hub`` for the options."""
        return push_to_hub(self, repo_id, **kwargs)


__all__ = ["CARD_FAMILIES", "HubMixin", "evaluation", "model_card", "push_to_hub", "template_path"]
