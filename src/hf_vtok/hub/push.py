"""``push_to_hub`` of hf_vtok tokenizers, generators and pipelines: weights, processor, model card, remote code.

    model.push_to_hub("me/vitok-350M-f16x64", preset="vitok-v2-350M-f16x64", eval_results="eval/results.json")

A pushed repo carries the remote-code bundle (``hf_vtok.remote_code``) unless ``remote_code=False``, so
tokenizers and generators load with ``trust_remote_code=True`` where hf_vtok is not installed, and pipelines
with ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` (diffusers' custom pipelines; with
hf_vtok installed their own class loads them without remote code).
"""

from __future__ import annotations

import os
import tempfile

from ..registry import family_of_class
from ..remote_code import is_diffusers_model, write_pipeline_remote_code, write_remote_code
from ..utils.imports import import_object
from .cards import model_card, object_kind


def default_image_processor(model):
    """The image processor of a tokenizer's family, sized for the model."""
    spec = family_of_class(type(model))
    if spec is None or spec.processor is None:
        raise ValueError(f"no image processor is registered for {type(model).__name__}")
    return import_object(spec.processor).for_model(model.config)


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
        **(model_card_variables or {}),
    )
    with tempfile.TemporaryDirectory() as folder:
        obj.save_pretrained(folder, **save_kwargs)
        if kind == "tokenizer":
            processor = image_processor if image_processor is not None else default_image_processor(obj)
            processor.save_pretrained(folder)
            if remote_code:
                write_remote_code(folder, {"AutoImageProcessor": type(processor)}, "preprocessor_config.json")
        if remote_code and kind == "pipeline":
            write_pipeline_remote_code(folder, obj)
        elif remote_code:
            classes = obj._remote_code_classes()
            write_remote_code(folder, classes, "config.json", entry_imports_all=is_diffusers_model(obj))
        card.save(os.path.join(folder, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or f"Upload {type(obj).__name__} with hf_vtok",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )


__all__ = ["default_image_processor", "push_to_hub"]
