"""Saved folders that load with ``trust_remote_code=True`` where hf_vtok is not installed.

transformers' remote code copies the module file of each class into the repository and, for
each ``from .name import ...`` in it, the file ``name.py`` beside it: one flat folder. hf_vtok's
modules import across packages (``from ...modules import Attention``), which that copy cannot
follow. So hf_vtok writes the bundle itself: every hf_vtok module the classes' modules import at
module level (transitively), each as one file of the folder, with its hf_vtok imports rewritten to
the flat names. The classes' own modules keep their names (``modeling_vitok.py``,
``configuration_vitok.py``, ``image_processing_vitok.py``); the others are named after their
package path (``hf_vtok_modules_attention.py``).

What loads that way: the config, the model and the image processor with everything they run
(encode, decode, forward, postprocess). An hf_vtok import inside a function (converters, the
release registry, the CLI) is not followed; if that function is called, it raises ``ImportError``
saying that it needs hf_vtok installed. Remote code needs the model's own dependencies installed
(torch, transformers, and whatever its modules import: diffusers, safetensors, ...). With hf_vtok
imported, the ``auto_map`` is ignored and the registered classes load without remote code.

Pipelines use diffusers' custom-pipeline mechanism: ``write_pipeline_remote_code`` writes the bundle of
the pipeline class at the folder's root and one into each component folder of an hf_vtok class, and
points ``model_index.json`` at them (``"_class_name": ["pipeline_sit", "SiTPipeline"]``, ``"transformer":
["modeling_sit", "SiTTransformer1DModel"]``); ``DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)`` then loads it without hf_vtok. The entries it replaced are kept under
``NATIVE_ENTRIES``, which hf_vtok's own pipeline classes put back (``native_model_index``) so that they
load the folder as their own, without remote code.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

PACKAGE = "hf_vtok"


def _module_file(name: str) -> Path:
    module = sys.modules.get(name) or importlib.import_module(name)
    return Path(module.__file__)


def _is_package(name: str) -> bool:
    return _module_file(name).name == "__init__.py"


def _resolve(module_name: str, node: ast.ImportFrom) -> str | None:
    """Absolute name of the hf_vtok module an ``ImportFrom`` reads from (None: not an hf_vtok import)."""
    if node.level == 0:
        target = node.module or ""
        return target if target == PACKAGE or target.startswith(PACKAGE + ".") else None
    base = module_name if _is_package(module_name) else module_name.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    return f"{base}.{node.module}" if node.module else base


def _module_level_imports(tree: ast.Module):
    """``ImportFrom`` nodes that run on import (not inside a function or class body)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.ImportFrom):
            yield node
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)


@functools.cache
def _package_reexports(package: str) -> dict[str, str]:
    """Names a package's ``__init__`` re-exports at module level (``from .attention import Attention``) -> the
    module they come from, followed through nested re-exports."""
    tree = ast.parse(_module_file(package).read_text(encoding="utf-8"))
    found = {}
    for node in _module_level_imports(tree):
        source = _resolve(package, node)
        if source is None:
            continue
        for alias in node.names:
            found[alias.asname or alias.name] = _defining_module(source, alias.name)
    return found


def _defining_module(module_name: str, name: str) -> str:
    """The hf_vtok module that defines ``name`` as seen from ``module_name``: a package's re-export is followed
    to its source module (so a bundle does not carry every sibling a package ``__init__`` imports)."""
    if not _is_package(module_name):
        return module_name
    return _package_reexports(module_name).get(name, module_name)


def _imported_modules(module_name: str, node: ast.ImportFrom) -> list[str]:
    """The hf_vtok modules an import needs: for each imported name, the submodule it is or the module defining it."""
    target = _resolve(module_name, node)
    if target is None:
        return []
    if not _is_package(target):
        return [target]
    needed = []
    for alias in node.names:
        candidate = f"{target}.{alias.name}"
        is_submodule = importlib.util.find_spec(candidate) is not None
        needed.append(candidate if is_submodule else _defining_module(target, alias.name))
    return list(dict.fromkeys(needed))


def module_closure(roots: list[str]) -> list[str]:
    """The hf_vtok modules that ``roots`` import at module level, transitively (``roots`` first)."""
    seen, order, pending = set(), [], list(roots)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        order.append(name)
        tree = ast.parse(_module_file(name).read_text(encoding="utf-8"))
        for node in _module_level_imports(tree):
            pending.extend(_imported_modules(name, node))
    return order


def flat_name(module_name: str, keep: set[str]) -> str:
    """File stem of a module in the flat bundle."""
    if module_name in keep:
        return module_name.rpartition(".")[2]
    return module_name.replace(".", "_")


def _rewrite(module_name: str, flat: dict[str, str]) -> str:
    """The module's source with every hf_vtok import pointing at the flat files."""
    path = _module_file(module_name)
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines(keepends=True)
    edits = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or _resolve(module_name, node) is None:
            continue
        target = _resolve(module_name, node)
        indent = lines[node.lineno - 1][: node.col_offset]
        by_module: dict[str, list[str]] = {}
        for alias in node.names:
            if f"{target}.{alias.name}" in flat:
                raise ValueError(f"{path}: 'from {target} import {alias.name}' imports a module; import from it")
            source = _defining_module(target, alias.name)
            by_module.setdefault(source, []).append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
        if not all(source in flat for source in by_module):  # a lazy import of a part of hf_vtok not bundled
            message = f"{module_name.rpartition('.')[2]}: this needs hf_vtok installed (pip install hf_vtok)"
            new = f"{indent}raise ImportError({message!r})\n"
        else:
            new = "".join(
                f"{indent}from .{flat[source]} import {', '.join(names)}\n" for source, names in by_module.items()
            )
        edits.append((node.lineno, node.end_lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        lines[start - 1 : end] = [new]
    return "".join(lines)


def write_remote_code(
    folder: str | os.PathLike, classes: dict[str, type], config_file: str | None, entry_imports_all: bool = False
) -> dict[str, str]:
    """Write the flat module bundle of ``classes`` (auto class name -> class) into ``folder`` and add
    their ``auto_map`` to ``folder/config_file`` (``config.json`` / ``preprocessor_config.json``; None: no
    ``auto_map``, for what diffusers finds through ``model_index.json``).

    ``entry_imports_all``: the classes' modules also import every bundled file themselves (diffusers'
    remote code fetches only the files the entry module imports, not what those import in turn).
    """
    folder = Path(folder)
    keep = {cls.__module__ for cls in classes.values()}
    modules = module_closure(sorted(keep))
    flat = {name: flat_name(name, keep) for name in modules}
    if len(set(flat.values())) != len(flat):
        raise ValueError(f"two hf_vtok modules would share a file name in the remote-code bundle: {flat}")
    for name in modules:
        source = _rewrite(name, flat)
        if entry_imports_all and name in keep:
            source += "\n# remote code: diffusers fetches only the files an entry module imports itself\n" + "".join(
                f"from .{flat[other]} import __name__ as _bundled_{index}  # noqa: F401\n"
                for index, other in enumerate(modules)
                if other != name
            )
        (folder / f"{flat[name]}.py").write_text(source, encoding="utf-8")
    auto_map = {auto_class: f"{flat[cls.__module__]}.{cls.__name__}" for auto_class, cls in classes.items()}
    if config_file is None:
        return auto_map
    config_path = folder / config_file
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["auto_map"] = {**config.get("auto_map", {}), **auto_map}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return auto_map


def is_diffusers_model(obj) -> bool:
    from diffusers import ModelMixin

    return isinstance(obj, ModelMixin)


def is_diffusers_pipeline(obj) -> bool:
    from diffusers import DiffusionPipeline

    return isinstance(obj, DiffusionPipeline)


# model_index.json: the entries that write_pipeline_remote_code replaced, as hf_vtok's own classes load them
NATIVE_ENTRIES = "_hf_vtok_native_entries"


def is_hf_vtok_class(cls: type) -> bool:
    return cls.__module__.startswith(PACKAGE + ".")


def _entry_module(cls: type) -> str:
    """The bundle file (stem) that defines ``cls``: its module keeps its own name."""
    return cls.__module__.rpartition(".")[2]


def write_pipeline_remote_code(folder: str | os.PathLike, pipeline) -> dict:
    """Make the saved pipeline in ``folder`` load with ``trust_remote_code=True`` where hf_vtok is not installed:
    the bundle of the pipeline class at the root, one per component of an hf_vtok class in its folder, and
    ``model_index.json`` pointing at them (diffusers' custom pipelines and components). Returns the new index.

    Every bundle's entry imports all its files: diffusers copies only those of a local folder.
    """
    folder = Path(folder)
    if not is_hf_vtok_class(type(pipeline)):
        raise ValueError(f"{type(pipeline).__name__} is not an hf_vtok pipeline; remote code bundles hf_vtok's own")
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    native = {}
    for name, component in pipeline.components.items():
        cls = type(component)
        if component is None or not is_hf_vtok_class(cls):
            continue  # diffusers' and transformers' classes load from their libraries
        if isinstance(component, RemoteCodeMixin):  # a model: also loads alone (its config.json's auto_map)
            write_remote_code(folder / name, component._remote_code_classes(), "config.json", entry_imports_all=True)
        else:  # a scheduler: diffusers finds its class through model_index.json alone
            write_remote_code(folder / name, {"scheduler": cls}, None, entry_imports_all=True)
        native[name] = index[name]
        index[name] = [_entry_module(cls), cls.__name__]
    pipeline_class = type(pipeline)
    write_remote_code(folder, {"DiffusionPipeline": pipeline_class}, None, entry_imports_all=True)
    native["_class_name"] = index["_class_name"]
    index["_class_name"] = [_entry_module(pipeline_class), pipeline_class.__name__]
    index[NATIVE_ENTRIES] = native
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return index


def native_model_index(index: dict) -> dict:
    """``model_index.json`` as hf_vtok's classes load it: the entries ``write_pipeline_remote_code`` replaced put
    back (``index`` is changed in place and returned)."""
    index.update(index.pop(NATIVE_ENTRIES, None) or {})
    return index


def _with_remote_code(save_pretrained):
    """``save_pretrained`` that also writes the remote-code bundle of a registered class. It keeps the wrapped
    method's signature: diffusers passes ``variant`` / ``safe_serialization`` / ``max_shard_size`` to a component
    only where the signature names them."""

    @functools.wraps(save_pretrained)
    def wrapper(self, save_directory, *args, **kwargs):
        result = save_pretrained(self, save_directory, *args, **kwargs)
        self._write_remote_code(save_directory)
        return result

    wrapper.writes_remote_code = True
    return wrapper


class RemoteCodeMixin:
    """``register_for_auto_class()`` on an hf_vtok model, image processor or pipeline: its ``save_pretrained``
    (and so ``push_to_hub``) also writes the remote-code bundle (see this module)."""

    _remote_auto_class: str | None = None
    _remote_config_file = "config.json"  # the processors': preprocessor_config.json

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        inherited = getattr(cls, "save_pretrained", None)
        if "save_pretrained" in vars(cls) or inherited is None or getattr(inherited, "writes_remote_code", False):
            return  # its own save_pretrained (which calls super()), a mixin without one, or already wrapped
        cls.save_pretrained = _with_remote_code(inherited)

    @classmethod
    def extract_init_dict(cls, config_dict: dict, **kwargs):
        """diffusers' reading of a config without its ``auto_map`` (remote code's, no argument of the class; else
        diffusers warns that it is unexpected)."""
        config_dict = {key: value for key, value in config_dict.items() if key != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def register_for_auto_class(cls, auto_class: str | None = None):
        default = "AutoImageProcessor" if cls._remote_config_file == "preprocessor_config.json" else "AutoModel"
        cls._remote_auto_class = auto_class or default
        # transformers' own copy (custom_object_save) cannot follow hf_vtok's imports: never let it run
        cls._auto_class = None

    def _remote_code_classes(self) -> dict[str, type]:
        """auto class -> class of the bundle (``AutoModel`` where no class was registered)."""
        classes = {self._remote_auto_class or "AutoModel": type(self)}
        config = getattr(self, "config", None)
        if hasattr(config, "model_type"):  # a transformers config (diffusers models keep theirs in config.json)
            classes["AutoConfig"] = type(config)
        return classes

    def _write_remote_code(self, save_directory) -> None:
        if self._remote_auto_class is None:
            return
        if is_diffusers_pipeline(self):
            write_pipeline_remote_code(save_directory, self)
            return
        write_remote_code(
            save_directory,
            self._remote_code_classes(),
            self._remote_config_file,
            entry_imports_all=is_diffusers_model(self),
        )


__all__ = [
    "NATIVE_ENTRIES",
    "RemoteCodeMixin",
    "module_closure",
    "native_model_index",
    "write_pipeline_remote_code",
    "write_remote_code",
]
