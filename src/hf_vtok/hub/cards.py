"""Model cards of hf_vtok tokenizers, generators and pipelines (``hf_vtok.hub.push_to_hub`` uploads them).

    model.push_to_hub("me/vitok-350M-f16x64", preset="vitok-v2-350M-f16x64", eval_results="eval/results.json")
    card = hf_vtok.hub.model_card(model, repo_id="me/vitok-350M-f16x64")   # huggingface_hub.ModelCard

Cards are rendered from the jinja templates in the top-level ``model_cards/`` (one per family, shipped
in the wheel as ``hf_vtok/model_cards/``) through ``huggingface_hub.ModelCard`` / ``ModelCardData``: library name,
tags, the license of the original release, pipeline tag, the original paper's citation, a usage snippet,
and the table of an ``hf-vtok eval`` / ``hf-vtok eval-generation`` run when given. What a family's card
says (template, title, license, tags) is its ``hf_vtok.registry`` entry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..registry import FAMILIES, GENERATOR, family_of_class, get_pretrained
from ..utils.tables import markdown_table

_PACKAGED_TEMPLATES = Path(__file__).resolve().parents[1] / "model_cards"  # an installed wheel
# a source checkout (editable installs map hf_vtok.model_cards to the top-level folder)
TEMPLATES = (
    _PACKAGED_TEMPLATES if _PACKAGED_TEMPLATES.is_dir() else Path(__file__).resolve().parents[3] / "model_cards"
)
PROJECT_URL = "https://github.com/hf-vtok/hf_vtok"


# The Hub has no class-conditional task; its image-generation task without a text prompt is this one.
GENERATION_PIPELINE_TAG = "unconditional-image-generation"
TOKENIZER_PIPELINE_TAG = "image-feature-extraction"


def template_path(family: str) -> Path:
    """The jinja template of a family's card."""
    if family not in FAMILIES:
        raise ValueError(f"no model card template for {family!r}; known: {sorted(FAMILIES)}")
    return TEMPLATES / FAMILIES[family].card_template


def object_kind(obj) -> str:
    from diffusers import DiffusionPipeline, ModelMixin

    if isinstance(obj, DiffusionPipeline):
        return "pipeline"
    if isinstance(obj, ModelMixin):
        return "transformer"
    return "tokenizer"


def card_family(obj) -> str:
    """The registry family of a tokenizer, generator or pipeline (by its class), whose card template it gets."""
    spec = family_of_class(type(obj))
    if spec is None:
        raise ValueError(f"{type(obj).__name__} is not a class of an hf_vtok family: it has no model card template")
    return spec.name


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
    spec = FAMILIES[card_family(obj)]
    if spec.kind == GENERATOR:
        variables["pipeline_class_of_transformer"] = spec.pipeline.rpartition(":")[2]
        variables["call_arguments"] = spec.sampling_call
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

    family = card_family(obj)
    info = FAMILIES[family]
    kind = object_kind(obj)
    entry = get_pretrained(preset) if preset is not None else None
    table, eval_entries = evaluation(eval_results, eval_row) if eval_results is not None else ("", [])
    model_name = template_variables.pop("model_name", None) or (
        repo_id.rstrip("/").split("/")[-1] if repo_id else None
    )
    data = ModelCardData(
        library_name="hf_vtok",
        license=entry.license if entry is not None else info.license,
        tags=[*info.tags, "hf_vtok", kind] + (["custom_code"] if remote_code else []),
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


__all__ = ["PROJECT_URL", "TEMPLATES", "card_family", "evaluation", "model_card", "object_kind", "template_path"]
