"""``push_to_hub`` of hf_vtok tokenizers, generators and pipelines: weights, processor, model card, remote code.

    model.push_to_hub("me/vitok-350M-f16x64", preset="vitok-v2-350M-f16x64", eval_results="eval/results.json")

A tokenizer is pushed with the image processor it is used with (``processor_in_use``: the one given, else the one
saved beside the weights it was loaded from), so the card's snippet behaves as the model did where it came from.
A pushed repo carries the remote-code bundle (``hf_vtok.remote_code``) unless ``remote_code=False``, so
tokenizers and generators load with ``trust_remote_code=True`` where hf_vtok is not installed, and pipelines
with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (diffusers' custom pipelines; with
hf_vtok installed their own class loads them without remote code). The image of an evaluation run goes up with
the card that shows it; the embedded default model's training report goes up with it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..registry import family_of_class
from ..remote_code import is_diffusers_model, write_pipeline_remote_code, write_remote_code
from ..utils.imports import import_object
from .cards import DEFAULT_MODEL_DIR, evaluation_image, is_default_model, model_card, object_kind, source_of

logger = logging.getLogger(__name__)


def default_image_processor(model):
    """The image processor of a tokenizer's family, sized for the model (``for_model`` of its config)."""
    spec = family_of_class(type(model))
    if spec is None or spec.processor is None:
        raise ValueError(f"no image processor is registered for {type(model).__name__}")
    return import_object(spec.processor).for_model(model.config)


def processor_in_use(model, image_processor=None):
    """The image processor ``model`` is used with: ``image_processor`` when given, else the one saved beside the
    weights it was loaded from (its ``name_or_path``: a folder or Hub id with a ``preprocessor_config.json``), else
    its family's processor sized for its config (a model built in memory)."""
    if image_processor is not None:
        return image_processor
    source = source_of(model)
    if source:
        from transformers import AutoImageProcessor

        try:
            return AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as error:  # no preprocessor_config.json there, or not reachable
            logger.info(f"{source!r} has no image processor to reuse ({error}); using the family's default")
    return default_image_processor(model)


def save_tokenizer(model, folder, image_processor=None, remote_code: bool = False, **save_kwargs):
    """``save_pretrained`` of a tokenizer with the image processor it is used with (``processor_in_use``), plus its
    remote-code bundle when ``remote_code``: what ``push_to_hub`` uploads, and what a command saving a model calls.
    Returns the processor that was saved."""
    model.save_pretrained(folder, **save_kwargs)
    processor = processor_in_use(model, image_processor)
    processor.save_pretrained(folder)
    if remote_code:
        write_remote_code(folder, model._remote_code_classes(), "config.json")
        write_remote_code(folder, {"AutoImageProcessor": type(processor)}, "preprocessor_config.json")
    return processor


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
    eval_dataset: str | None = None,
    remote_code: bool = True,
    model_card_variables: dict | None = None,
    **save_kwargs,
):
    """Save ``obj`` (tokenizer with the image processor it is used with, generator, or pipeline), its model card,
    the image of ``eval_results`` and (``remote_code``) its remote-code bundle to a temporary folder and upload it as
    one commit."""
    from huggingface_hub import HfApi

    kind = object_kind(obj)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    card = model_card(
        obj,
        repo_id=repo_id,
        preset=preset,
        eval_results=eval_results,
        eval_row=eval_row,
        remote_code=remote_code,
        eval_dataset=eval_dataset,
        **(model_card_variables or {}),
    )
    with tempfile.TemporaryDirectory() as folder:
        if kind == "tokenizer":
            save_tokenizer(obj, folder, image_processor, remote_code=remote_code, **save_kwargs)
            if is_default_model(obj):
                shutil.copy(DEFAULT_MODEL_DIR / "training_report.json", folder)
        else:
            obj.save_pretrained(folder, **save_kwargs)
            if remote_code and kind == "pipeline":
                write_pipeline_remote_code(folder, obj)
            elif remote_code:
                classes = obj._remote_code_classes()
                write_remote_code(folder, classes, "config.json", entry_imports_all=is_diffusers_model(obj))
        image = evaluation_image(eval_results) if eval_results is not None else None
        if image is not None:  # the card embeds it by name
            shutil.copy(image, Path(folder) / image.name)
        card.save(os.path.join(folder, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(obj).__name__} with hf_vtok",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


def write_adapter_card(adapter_folder, base_model: str | None = None) -> Path:
    """Replace the README.md peft writes into a LoRA adapter folder (whose ``base_model`` is the local path the
    base was loaded from) by ``hf_vtok.hub.adapter_model_card``: a Hub id or no base model. Returns its path."""
    from .cards import adapter_model_card

    path = Path(adapter_folder) / "README.md"
    adapter_model_card(adapter_folder, base_model).save(str(path))
    return path


__all__ = ["default_image_processor", "processor_in_use", "push_to_hub", "save_tokenizer", "write_adapter_card"]
