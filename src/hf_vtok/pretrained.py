"""Released original checkpoints: the old import path of ``hf_vtok.registry`` (the entries) and
``hf_vtok.hub.presets`` (download, convert, save)."""

from .hub.presets import (  # noqa: F401
    PROVENANCE_FILE,
    PretrainedNotAvailableError,
    build_pipeline,
    convert_pretrained,
    converter_of,
    download_pretrained,
    from_preset,
    save_preset,
    write_provenance,
)
from .registry import (  # noqa: F401
    DIT_RECIPE,
    PRETRAINED,
    SIT_RECIPE,
    PretrainedCheckpoint,
    family_presets,
    format_registry,
    get_pretrained,
)
