"""Generation pipelines (diffusers ``DiffusionPipeline``s) on hf_vtok tokenizers.

diffusers' generic loaders look the class a saved folder names up on the ``diffusers`` module
(``DiffusionPipeline.from_pretrained``: the pipeline of ``model_index.json``; ``diffusers.AutoModel``: the
``_class_name`` of a model's ``config.json``) and have no registry to add classes to. So importing hf_vtok puts
its pipelines and their hf_vtok models and schedulers there, never over a name diffusers has.
"""

import inspect

from .dit_1d import DiT1DPipeline
from .pipeline_utils import TokenizerGenerationPipeline
from .sit import SiTPipeline
from .v2flow import V2FlowLlamaPipeline, V2FlowPipeline, V2FlowVocabulary
from .vitok_dit import ViTokDiTPipeline

PIPELINES = (DiT1DPipeline, SiTPipeline, V2FlowLlamaPipeline, V2FlowPipeline, ViTokDiTPipeline)


def diffusers_classes() -> dict[str, type]:
    """Name -> class of every hf_vtok class diffusers' generic loaders must find: the pipelines and the diffusers
    models and schedulers their components are (transformers' tokenizers load through ``AutoModel``)."""
    from diffusers import ModelMixin, SchedulerMixin

    classes = {cls.__name__: cls for cls in PIPELINES}
    for pipeline in PIPELINES:
        for parameter in inspect.signature(pipeline.__init__).parameters.values():
            component = parameter.annotation
            if (
                inspect.isclass(component)
                and issubclass(component, (ModelMixin, SchedulerMixin))
                and component.__module__.startswith("hf_vtok.")
            ):
                classes[component.__name__] = component
    return classes


def register_with_diffusers() -> None:
    """Put ``diffusers_classes()`` on the ``diffusers`` module, where diffusers has no class of that name."""
    import diffusers

    for name, cls in diffusers_classes().items():
        if not hasattr(diffusers, name):
            setattr(diffusers, name, cls)


register_with_diffusers()

__all__ = [
    "DiT1DPipeline",
    "SiTPipeline",
    "TokenizerGenerationPipeline",
    "V2FlowLlamaPipeline",
    "V2FlowPipeline",
    "V2FlowVocabulary",
    "ViTokDiTPipeline",
    "diffusers_classes",
    "register_with_diffusers",
]
