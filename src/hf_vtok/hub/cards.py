"""Model cards of hf_vtok tokenizers, generators and pipelines (``hf_vtok.hub.push_to_hub`` uploads them).

    model.push_to_hub("me/vitok-350M-f16x64", preset="vitok-v2-350M-f16x64", eval_results="eval/results.json")
    card = hf_vtok.hub.model_card(model, repo_id="me/vitok-350M-f16x64")   # huggingface_hub.ModelCard

Cards are rendered from the jinja templates in the top-level ``model_cards/`` (one per family, shipped
in the wheel as ``hf_vtok/model_cards/``) through ``huggingface_hub.ModelCard`` / ``ModelCardData``: the library
the Hub knows (``transformers`` for tokenizers, ``diffusers`` for generators and pipelines; ``custom_code`` where
the repository carries remote code), tags, the license, every base model (the release it was converted from, each
pipeline component's), pipeline tag, the original paper's citation, an install line and a usage snippet, and the
table, model-index and reconstruction image of an ``hf-vtok eval`` / ``hf-vtok eval-generation`` run when given.
What a family's card says (template, title, license, tags) is its ``hf_vtok.registry`` entry; the embedded default
model (trained here, not converted) has its own template in ``hf_vtok/default_model/``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..registry import FAMILIES, GENERATOR, PRETRAINED, family_of_class, get_pretrained
from ..utils.tables import format_value, markdown_table
from .presets import PROVENANCE_FILE  # converted folders name their release in it

_PACKAGE = Path(__file__).resolve().parents[1]
_PACKAGED_TEMPLATES = _PACKAGE / "model_cards"  # an installed wheel
# a source checkout (editable installs map hf_vtok.model_cards to the top-level folder)
TEMPLATES = _PACKAGED_TEMPLATES if _PACKAGED_TEMPLATES.is_dir() else _PACKAGE.parents[1] / "model_cards"
PROJECT_URL = "https://github.com/hf-vtok/hf_vtok"
INSTALL_COMMAND = "pip install hf_vtok"
# the small ViTok shipped in the package, trained by training_scripts/make_default_model.py
DEFAULT_MODEL_DIR = _PACKAGE / "default_model"
DEFAULT_MODEL_TEMPLATE = DEFAULT_MODEL_DIR / "model_card.md"
DEFAULT_MODEL_LICENSE = "apache-2.0"  # hf_vtok's own (setup.py): the model was trained here
# the image of an evaluation run that the card shows (and the push uploads beside it)
EVAL_IMAGES = ("reconstructions.png", "samples.png")

# The Hub has no class-conditional task; its image-generation task without a text prompt is this one.
GENERATION_PIPELINE_TAG = "unconditional-image-generation"
TOKENIZER_PIPELINE_TAG = "image-feature-extraction"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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


def library_name(kind: str) -> str:
    """The library the Hub shows a "use this model" snippet of: transformers for tokenizers, else diffusers."""
    return "transformers" if kind == "tokenizer" else "diffusers"


def card_family(obj) -> str:
    """The registry family of a tokenizer, generator or pipeline (by its class), whose card template it gets."""
    spec = family_of_class(type(obj))
    if spec is None:
        raise ValueError(f"{type(obj).__name__} is not a class of an hf_vtok family: it has no model card template")
    return spec.name


# --------------------------------------------------------------------------------------------------
# where a model came from


def hub_id(value) -> str | None:
    """``value`` when it names a Hub repository (``owner/name``, not a local path), else None."""
    if not isinstance(value, str) or not _HUB_ID.match(value) or Path(value).exists():
        return None
    return value


def source_of(obj) -> str | None:
    """The folder or Hub id ``obj`` was loaded from (transformers' ``name_or_path``, diffusers' ``_name_or_path``)."""
    source = getattr(obj, "name_or_path", None)
    if not source:
        config = getattr(obj, "config", None)
        source = getattr(config, "_name_or_path", None) or (
            config.get("_name_or_path") if isinstance(config, dict) else None
        )
    return str(source) if source else None


def is_default_model(obj) -> bool:
    """Whether ``obj`` was loaded from the small ViTok embedded in hf_vtok."""
    source = source_of(obj)
    return bool(source) and Path(source).is_dir() and Path(source).resolve() == DEFAULT_MODEL_DIR.resolve()


def provenance_preset(obj) -> str | None:
    """The release a converted folder came from (its ``original_checkpoint.json``), for models loaded from one."""
    source = source_of(obj)
    return _preset_of_folder(source) if source and Path(source).is_dir() else None


def _preset_of_folder(folder) -> str | None:
    path = Path(folder) / PROVENANCE_FILE
    try:
        name = json.loads(path.read_text(encoding="utf-8")).get("preset") if path.is_file() else None
    except (json.JSONDecodeError, AttributeError):
        return None
    return name if name in PRETRAINED else None


def base_models(obj, kind: str, preset: str | None = None, repo_id: str | None = None) -> list[str]:
    """Hub ids of what ``obj`` was made from: the release it was converted from (a generator's also its tokenizer's),
    and for a pipeline each component's release or Hub repository. Local paths are never listed."""
    found = []

    def add_release(name):
        if name is None:
            return
        entry = get_pretrained(name)
        found.append(entry.repo_id)
        if entry.tokenizer:
            found.append(get_pretrained(entry.tokenizer).repo_id)

    add_release(preset or provenance_preset(obj))
    parts = [obj] if kind != "pipeline" else [obj, *(c for c in obj.components.values() if c is not None)]
    for part in parts:
        add_release(provenance_preset(part) if part is not obj else None)
        source = hub_id(source_of(part))
        if source is not None:
            found.append(source)
    unique = list(dict.fromkeys(found))
    return [repo for repo in unique if repo != repo_id]


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


def rounded(metric: str, value: float) -> float:
    """A metric value with the digits the tables show (PSNR 2, SSIM 4, ...)."""
    return float(format_value(metric, float(value)))


def dataset_of_evaluation(data: str, dataset: str | None = None) -> tuple[str, str]:
    """``(id, name)`` of an evaluation's data for the model-index: ``dataset`` (a Hub dataset id) when given, the
    data itself when it is a Hub id, else only the folder's name (a local path is never published)."""
    if dataset:
        return dataset, dataset.rpartition("/")[2]
    if hub_id(data):
        return data, data.rpartition("/")[2]
    name = Path(str(data).rstrip("/")).name or "images"
    return name, name


def _table_rows(rows: list[dict]) -> list[dict]:
    """Token counts as integers where they are (``1024``, not ``1024.0``)."""
    shown = []
    for row in rows:
        row = dict(row)
        tokens = row.get("tokens_per_image")
        if isinstance(tokens, float) and tokens.is_integer():
            row["tokens_per_image"] = int(tokens)
        elif isinstance(tokens, float):
            row["tokens_per_image"] = round(tokens, 1)
        shown.append(row)
    return shown


def evaluation(eval_results, row: str | None = None, dataset: str | None = None):
    """``(markdown table, [EvalResult])`` of an ``hf-vtok eval`` / ``eval-generation`` results.json (path,
    folder or dict). The model-index entries come from the row named ``row`` (or the only row), with values
    rounded as in the table and the data named by ``dataset`` (a Hub dataset id), the data's Hub id, or its
    folder name (never a local path)."""
    from huggingface_hub import EvalResult

    results, _ = _load_results(eval_results)
    if "models" in results:  # reconstruction
        rows, metrics = results["models"], results.get("metrics", [])
        columns, key = [("name", "tokenizer"), ("tokens_per_image", "tokens / image")], "name"
        task = ("image-to-image", "Image reconstruction")
        data, split = str(results.get("data", "")), results.get("split")
        what = f"Reconstruction of {results.get('num_images', '?')} images"
    elif "runs" in results:  # class-conditional generation
        rows, metrics = results["runs"], ["gfid", "is"]
        columns, key = [("label", "guidance scale"), ("num_samples", "samples")], "label"
        task = (GENERATION_PIPELINE_TAG, "Class-conditional image generation")
        data, split = str(results.get("reference", "")), None
        what = "Generated images against the reference"
    else:
        raise ValueError(
            "evaluation results need the 'models' (hf-vtok eval) or 'runs' (hf-vtok eval-generation) list"
        )
    dataset_id, dataset_name = dataset_of_evaluation(data, dataset)
    framing = results.get("crop")
    framing = (
        ""
        if framing is None
        else (", native size" if framing == "none" else f", {framing} {results.get('resolution')}px")
    )
    table = f"{what} of `{dataset_id}`" + (f" ({split})" if split else "") + f"{framing}.\n\n"
    table += markdown_table(_table_rows(rows), columns, metrics)
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
                        dataset_type=dataset_id,
                        dataset_name=dataset_name,
                        dataset_split=split,
                        metric_type=metric,
                        metric_name=metric.upper(),
                        metric_value=rounded(metric, value),
                    )
                )
    return table, entries


def evaluation_image(eval_results) -> Path | None:
    """The image of an evaluation run (``reconstructions.png`` / ``samples.png`` beside its results.json), if any."""
    if isinstance(eval_results, dict):
        files = eval_results.get("files", {})
        candidates = [Path(files["grid"])] if files.get("grid") else []
    else:
        path = Path(eval_results)
        folder = path if path.is_dir() else path.parent
        candidates = [folder / name for name in EVAL_IMAGES]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


# --------------------------------------------------------------------------------------------------
# cards


def _template_variables(obj, kind: str) -> dict:
    """Numbers of the model the templates show (latent sizes, token counts, ...)."""
    if kind == "pipeline":
        # the visual tokenizer: V2Flow's `tokenizer` (its `vae` is the DC-AE), else the autoencoder `vae`
        tokenizer = obj.components.get("tokenizer") or obj.components["vae"]
        tokenizer_config = tokenizer.config
        transformer = getattr(obj, "transformer", None)
        config = transformer.config if transformer is not None else tokenizer_config
        variables = {"tokenizer_class": type(tokenizer).__name__, "pipeline_class": type(obj).__name__}
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
        "patch_size",
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


def _install_block(command: str) -> str:
    return f"```bash\n{command}\n```\n"


def _default_model_variables() -> dict:
    """The training report of the embedded default model, as the numbers its card shows."""
    report = json.loads((DEFAULT_MODEL_DIR / "training_report.json").read_text(encoding="utf-8"))
    held_out = report["held_out"]
    photos = {name: values for name, values in held_out.items() if name != "mean"}
    table = "| photo | size (W x H) | PSNR ↑ | SSIM ↑ |\n|---|---|---|---|\n" + "".join(
        f"| {name} | {values['size'][1]} x {values['size'][0]} | {format_value('psnr', values['psnr'])} | "
        f"{format_value('ssim', values['ssim'])} |\n"
        for name, values in photos.items()
    )
    mean = held_out["mean"]
    table += f"| **mean** | | **{format_value('psnr', mean['psnr'])}** | **{format_value('ssim', mean['ssim'])}** |\n"
    config = report["config"]
    return {
        "held_out_table": table,
        "train_photos": report["train_photos"],
        "training": config,
        "training_minutes": round(report["training_seconds"] / 60),
        "cpu_count": report.get("cpu_count"),
        "torch_threads": report.get("torch_threads"),
    }


def model_card(
    obj,
    repo_id: str | None = None,
    preset: str | None = None,
    eval_results=None,
    eval_row: str | None = None,
    remote_code: bool = True,
    eval_dataset: str | None = None,
    **template_variables,
):
    """The ``huggingface_hub.ModelCard`` of an hf_vtok tokenizer, generator or pipeline.

    ``preset``: the ``hf_vtok.pretrained`` entry it was converted from (original repo, license, base model); a
    folder converted by ``hf-vtok convert --preset`` names it itself. ``eval_results``: an ``hf-vtok eval``
    results.json (its table, model-index metrics and image); ``eval_dataset``: the Hub id of the data it scored.
    ``repo_id`` goes into the usage snippet (a Hub id or a local folder).
    """
    from huggingface_hub import ModelCard, ModelCardData

    family = card_family(obj)
    info = FAMILIES[family]
    kind = object_kind(obj)
    default_model = kind == "tokenizer" and is_default_model(obj)
    preset = preset or provenance_preset(obj)
    entry = get_pretrained(preset) if preset is not None else None
    table, eval_entries = evaluation(eval_results, eval_row, eval_dataset) if eval_results is not None else ("", [])
    image = evaluation_image(eval_results) if eval_results is not None else None
    if image is not None:
        table += f"\n![{image.stem} of the evaluation]({image.name})\n"
    model_name = template_variables.pop("model_name", None) or (
        repo_id.rstrip("/").split("/")[-1] if repo_id else None
    )
    if eval_entries and not model_name:  # the Hub's model-index needs a name
        model_name = info.title
    license_ = DEFAULT_MODEL_LICENSE if default_model else (entry.license if entry is not None else info.license)
    bases = base_models(obj, kind, preset, hub_id(repo_id))
    data = ModelCardData(
        library_name=library_name(kind),
        license=license_,
        tags=[*info.tags, "hf_vtok", kind] + (["custom_code"] if remote_code else []),
        pipeline_tag=info.pipeline_tag or (TOKENIZER_PIPELINE_TAG if kind == "tokenizer" else GENERATION_PIPELINE_TAG),
        base_model=(bases[0] if len(bases) == 1 else bases) or None,
        model_name=model_name,
        eval_results=eval_entries or None,
    )
    variables = {
        **_template_variables(obj, kind),
        **(_default_model_variables() if default_model else {}),
        "kind": kind,
        "title": info.title,
        "model_name": model_name,
        "repo_id": repo_id or "path/to/this/folder",
        "original_repo": entry.repo_id if entry is not None else None,
        "original_code": info.original_code,
        "project_url": PROJECT_URL,
        "remote_code": remote_code,
        "install": _install_block(template_variables.pop("install_command", INSTALL_COMMAND)),
        "eval_table": table,
        **template_variables,
    }
    template = DEFAULT_MODEL_TEMPLATE if default_model else template_path(family)
    return ModelCard.from_template(data, template_path=str(template), **variables)


def _release_of_folder(folder) -> str | None:
    """The Hub repository of the release a converted folder came from."""
    name = _preset_of_folder(folder)
    return PRETRAINED[name].repo_id if name else None


def adapter_model_card(adapter_folder, base_model: str | None = None, repo_id: str | None = None):
    """The card of a LoRA adapter folder (peft's ``save_pretrained``). Its ``base_model`` is a Hub id or omitted,
    never a local path: ``base_model`` (a Hub id, or a local base folder, which names the release it was converted
    from), else the adapter config's ``base_model_name_or_path`` read the same way."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(adapter_folder)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} has no adapter_config.json (the folder peft's save_pretrained writes)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    base = None
    for candidate in (base_model, config.get("base_model_name_or_path")):
        if isinstance(candidate, str) and candidate:
            base = hub_id(candidate) or (_release_of_folder(candidate) if Path(candidate).is_dir() else None)
            break
    data = ModelCardData(library_name="peft", tags=["hf_vtok", "lora", "image-tokenizer"], base_model=base)
    targets = config.get("target_modules") or []
    loaded = f'"{base}"' if base else '"path/or/id/of/the/base/tokenizer"'
    adapter = repo_id or "path/to/this/adapter"
    content = (
        f"---\n{data.to_yaml()}\n---\n\n# {Path(repo_id or folder.name).name}\n\n"
        f"LoRA adapter (rank {config.get('r')}, alpha {config.get('lora_alpha')}) on the decoder of an hf_vtok "
        f"tokenizer, trained with `training_scripts/finetune_lora.py` of [hf_vtok]({PROJECT_URL}); it adapts "
        f"{len(targets)} linear layers.\n\n## Usage\n\n" + _install_block(f"{INSTALL_COMMAND} peft") + "\n```python\n"
        "from peft import PeftModel\nfrom transformers import AutoModel\n\n"
        "import hf_vtok  # registers the Auto classes\n\n"
        f'model = PeftModel.from_pretrained(AutoModel.from_pretrained({loaded}), "{adapter}")\n'
        "merged = model.merge_and_unload()   # a plain hf_vtok model with the adapted decoder\n```\n"
    )
    return ModelCard(content)


__all__ = [
    "DEFAULT_MODEL_DIR",
    "INSTALL_COMMAND",
    "PROJECT_URL",
    "TEMPLATES",
    "adapter_model_card",
    "base_models",
    "card_family",
    "dataset_of_evaluation",
    "evaluation",
    "evaluation_image",
    "hub_id",
    "is_default_model",
    "library_name",
    "model_card",
    "object_kind",
    "source_of",
    "template_path",
]
