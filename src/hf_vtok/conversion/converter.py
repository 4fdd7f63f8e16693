"""The one shape of a family converter (``CONVERTER`` in ``models/<family>/convert_<family>_original_to_hf.py``).

A family says which original files it reads (``files``: role -> help of the ``--<role>`` option), which options
of its own it takes (``add_arguments`` / ``options``) and how files become a model (``convert``). Everything
else is shared: ``hf-vtok convert FAMILY`` (``hf_vtok.commands.convert``) adds ``--preset`` (the family's
releases in ``hf_vtok.registry``, downloaded when no file is given), ``--output``, ``--dtype`` and, for
generators, the tokenizer of a complete pipeline; ``hf_vtok.from_preset`` calls ``convert_release``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class Conversion:
    """What a converter returns: the model, its image processor (None for generators), and notes on what
    the conversion dropped or defaulted (printed after saving)."""

    model: torch.nn.Module
    processor: object | None = None
    notes: list[str] = field(default_factory=list)


class Converter:
    """Base of the family converters.

    Subclasses set ``family`` (the registry name) and ``files`` and implement ``convert``; families with
    options of their own override ``add_arguments`` (argparse options) and ``options`` (their values as
    ``convert`` keyword arguments). ``presets`` are the names ``--preset`` accepts (default: the family's
    releases); a preset's files are downloaded when none of ``weight_files`` is given on the command line.
    ``default_sampling`` is the recipe of generator pipelines built without a preset.
    """

    family: str = ""
    files: Mapping[str, str] = {}
    weight_files: tuple[str, ...] | None = None  # the roles a release provides (None: every role of ``files``)
    presets: tuple[str, ...] | None = None
    default_sampling: Mapping[str, object] | None = None
    # top-level entries that mark the family's own training checkpoint (a ``.pth`` dict), so that the file given
    # to another family's converter can be named: e.g. ("model", "model_ema", "args") for V2Flow
    checkpoint_entries: tuple[str, ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The family's own command-line options (beyond files, ``--preset``, ``--output``, ``--dtype``)."""

    def options(self, args: argparse.Namespace) -> dict:
        """``convert`` keyword arguments from the parsed options of ``add_arguments``."""
        return {}

    def convert(
        self,
        files: Mapping[str, str],
        *,
        dtype: torch.dtype | None = None,
        preset: str | None = None,
        release=None,
        **options,
    ) -> Conversion:
        """Original files (role -> path) -> ``Conversion``.

        ``preset`` is the ``--preset`` name (its sizes are checked where the family knows them); ``release``
        the registry entry (``hf_vtok.registry.PretrainedCheckpoint``) the files are, whose ``config`` holds
        what the converted config must be (e.g. ViTok's variant).
        """
        raise NotImplementedError

    def convert_release(self, entry, files: Mapping[str, str], dtype: torch.dtype | None = None):
        """``(model, processor)`` of a registry entry from its files (the caller checks ``entry.config``)."""
        result = self.convert(files, dtype=dtype, release=entry, **entry.converter_options)
        return result.model, result.processor

    @staticmethod
    def require(files: Mapping[str, str], *roles: str) -> None:
        """A ``ValueError`` naming the ``--<role>`` options that are missing."""
        if any(not files.get(role) for role in roles):
            flags = " and ".join(f"--{role}" for role in roles)
            raise ValueError(f"give --preset, or {'both ' if len(roles) == 2 else ''}{flags}")


__all__ = ["Conversion", "Converter"]
