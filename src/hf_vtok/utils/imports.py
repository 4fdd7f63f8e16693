"""Resolving the ``"module:Name"`` class references of ``hf_vtok.registry``."""

import importlib


def import_object(reference: str):
    """The object named by ``"package.module:Name"`` (imported on first use)."""
    module_name, separator, name = reference.partition(":")
    if not separator or not name:
        raise ValueError(f"expected a 'module:Name' reference, got {reference!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError as error:
        raise ImportError(f"{module_name} has no {name!r} (registry reference {reference!r})") from error
