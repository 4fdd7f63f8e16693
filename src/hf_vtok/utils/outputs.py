"""Output folders and files of the commands: checked before any work, created only once the inputs are known good,
and written so that an interrupted command leaves no half-written result under its final name."""

import contextlib
import os
import shutil
from pathlib import Path

# files that say a folder holds a saved model, pipeline or processor (what --overwrite may replace)
SAVED_MODEL_FILES = ("config.json", "model_index.json", "preprocessor_config.json")
PARTIAL_SUFFIX = ".partial"


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(
    path: str | os.PathLike, option: str = "--out", *, empty: bool = False, overwrite: bool = False
) -> Path:
    """``path`` as an output folder, checked without creating anything: a ``ValueError`` naming ``option`` and
    the path when it is an existing file, lies under a file, or cannot be written.

    ``empty=True`` also refuses a non-empty folder unless ``overwrite`` is set, and even then one that holds no
    saved model (none of ``SAVED_MODEL_FILES``): replacing it would delete files that are not ours.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is an existing file, not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise ValueError(f"{option} {str(path)!r}: {str(existing)!r} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(path)!r}: the folder {str(existing)!r} is not writable")
    if empty and path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{option} {str(path)!r} is not empty; pass --overwrite to replace what it holds, or choose a new "
                "folder"
            )
        if not any((path / name).is_file() for name in SAVED_MODEL_FILES):
            raise ValueError(
                f"{option} {str(path)!r} is not empty and holds no saved model ({', '.join(SAVED_MODEL_FILES)}): "
                "it is not replaced even with --overwrite; choose a new or empty folder"
            )
    return path


def create_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``mkdir -p`` with an error naming ``option`` and the path (instead of a bare ``OSError``)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{option} {str(path)!r} cannot be created: {error.strerror or error}") from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside ``path`` (``.<name>.partial``) to write; it becomes ``path`` only when the
    block ends without an error, so a kill never leaves a half-written file under the final name."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` through ``atomic_path``."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike):
    """Yields a temporary folder beside ``path`` to write a whole folder into; on success it replaces ``path``
    (whose old content is deleted: check with ``check_output_folder(..., empty=True)`` first), on an error it is
    removed. A kill leaves at most the hidden ``.<name>.partial`` folder, never a mix of old and new files."""
    path = Path(path).absolute()
    if path == Path.cwd() or path in Path.cwd().parents:  # the folder this process runs in cannot be swapped
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    temporary = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
    previous = path.with_name(f".{path.name}.previous")
    for leftover in (temporary, previous):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        yield temporary
        if path.exists():
            os.replace(path, previous)
        os.replace(temporary, path)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


__all__ = [
    "SAVED_MODEL_FILES",
    "atomic_path",
    "check_output_folder",
    "create_output_folder",
    "staged_folder",
    "write_text_atomically",
]
