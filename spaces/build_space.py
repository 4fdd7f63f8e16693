"""Assemble a Hugging Face Space of the demo that builds on its own, from this checkout.

    python spaces/build_space.py space/                  # the models embedded in hf_vtok: no download at all
    python spaces/build_space.py space/ --model vitok=ORG/vitok-350M --pipeline sit=ORG/sit-xl --model mine=DIR
    hf upload --repo-type space USER/NAME space/ .      # then the Space builds and starts app.py

The folder holds ``app.py``, ``README.md`` (the Space card: ``sdk_version`` is the installed gradio's,
``models:`` the Hub ids the demo loads), ``examples/``, ``space.json`` (the app's models and pipelines;
local folders given are copied into ``models/``), ``.gitattributes`` (binary files in LFS),
``requirements.txt`` (hf_vtok's dependencies and its ``demo`` extra, without gradio, which ``sdk_version``
installs) and ``hf_vtok/``: the package exactly as the wheel built from this checkout installs it. The package
sits next to ``app.py`` rather than as a wheel named in ``requirements.txt`` because a Space installs
``requirements.txt`` before the repository's other files are in the image (only that file is mounted), so a
local wheel path there would not resolve; ``python app.py`` imports the copy next to it.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.png", "*.jpg", "*.jpeg", "*.whl")
SPACE_ONLY_DEPENDENCIES = ("gradio",)  # installed by the Space from README's sdk_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the Space folder to write (new or empty)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        type=model_spec,
        metavar="NAME=PATH",
        help="a tokenizer: Hub id or folder (repeatable)",
    )
    parser.add_argument(
        "--pipeline",
        action="append",
        default=[],
        type=model_spec,
        metavar="NAME=PATH",
        help="a pipeline: Hub id or folder",
    )
    parser.add_argument("--max-side", type=int, default=None, help="longest side of inputs (app default 256)")
    parser.add_argument(
        "--wheel", type=Path, default=None, help="an hf_vtok wheel to ship (default: build one from this checkout)"
    )


def model_spec(value: str) -> tuple[str, str]:
    """One ``--model`` / ``--pipeline`` value -> ``(name, folder or Hub id)``; a bare path names itself."""
    name, separator, path = value.partition("=")
    if not separator:  # the app's own --model convention
        name, path = Path(value.rstrip("/")).name, value
    if name and path and (Path(path).is_dir() or HUB_ID.fullmatch(path)):
        return name, path
    raise argparse.ArgumentTypeError(f"expected NAME=PATH with a folder or a Hub id (ORG/NAME), got {value!r}")


def build_wheel(work: Path) -> Path:
    """The ``hf_vtok-*.whl`` of this checkout (the build the package tests check)."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.testing_utils.packaging import build_wheel as build

    return build(work)


def wheel_requirements(wheel: Path, extra: str = "demo") -> list[str]:
    """The wheel's ``Requires-Dist`` for a plain install plus ``extra``, without the Space-only ones."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [name for name in archive.namelist() if name.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode("utf-8").splitlines()
    requirements = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        requirement = Requirement(line.partition(":")[2].strip())
        wanted = requirement.marker is None or requirement.marker.evaluate({"extra": extra})
        if wanted and requirement.name not in SPACE_ONLY_DEPENDENCIES:
            requirement.marker = None
            requirements.append(str(requirement))
    return list(dict.fromkeys(requirements))


def card(template: str, gradio_version: str, hub_ids: list[str]) -> str:
    """``spaces/README.md`` with ``sdk_version`` set to ``gradio_version`` and ``models:`` to ``hub_ids``."""
    front, separator, body = template.partition("\n---\n")
    lines = front.splitlines()
    if lines[:1] != ["---"] or not separator:
        raise ValueError("spaces/README.md must start with a front matter block between --- lines")
    values = {
        "sdk_version": [f"sdk_version: {gradio_version}"],
        "models": ["models:", *(f"  - {hub_id}" for hub_id in hub_ids)] if hub_ids else ["models: []"],
    }
    written, key = [], None
    for line in lines[1:]:
        if not line.startswith(" "):  # a top-level key; indented lines belong to the one above
            key = line.partition(":")[0]
            written += values.get(key, [line])
        elif key not in values:
            written.append(line)
    missing = set(values) - {line.partition(":")[0] for line in lines}
    if missing:
        raise ValueError(f"spaces/README.md's front matter has no {sorted(missing)}")
    return "\n".join(["---", *written]) + "\n---\n" + body


def place(specs: dict[str, str], out: Path, folder: str) -> dict[str, str]:
    """Hub ids as they are; local folders copied to ``out/folder/<n>`` and named by that relative path."""
    placed = {}
    for index, (name, path) in enumerate(specs.items()):
        if Path(path).is_dir():
            relative = f"{folder}/{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"
            shutil.copytree(path, out / relative, ignore=shutil.ignore_patterns(".git", "__pycache__"))
            path = relative
        placed[name] = path
    return placed


def build_space(
    out: Path,
    models: dict[str, str] | None = None,
    pipelines: dict[str, str] | None = None,
    max_side: int | None = None,
    wheel: Path | None = None,
) -> Path:
    """Write the Space folder ``out`` (see the module docstring); returns it."""
    from importlib.metadata import version

    models, pipelines, out = models or {}, pipelines or {}, Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"{out}: the Space folder must be new or empty")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        wheel = Path(wheel) if wheel else build_wheel(Path(work))
        with zipfile.ZipFile(wheel) as archive:
            members = [name for name in archive.namelist() if name.startswith("hf_vtok/")]
            if not members:
                raise SystemExit(f"{wheel}: no hf_vtok package inside")
            archive.extractall(out, members)
        requirements = wheel_requirements(wheel)
    shutil.copy(HERE / "app.py", out / "app.py")
    shutil.copytree(HERE / "examples", out / "examples")
    config = {"models": place(models, out, "models"), "pipelines": place(pipelines, out, "pipelines")}
    if max_side:
        config["max_side"] = max_side
    (out / "space.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    hub_ids = [path for path in (*models.values(), *pipelines.values()) if not Path(path).is_dir()]
    readme = card((HERE / "README.md").read_text(encoding="utf-8"), version("gradio"), list(dict.fromkeys(hub_ids)))
    (out / "README.md").write_text(readme, encoding="utf-8")
    header = "# hf_vtok's dependencies (hf_vtok itself is the hf_vtok/ folder); gradio comes from sdk_version\n"
    (out / "requirements.txt").write_text(header + "\n".join(requirements) + "\n", encoding="utf-8")
    lfs = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS)
    (out / ".gitattributes").write_text(lfs, encoding="utf-8")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    out = build_space(args.out, dict(args.model), dict(args.pipeline), args.max_side, args.wheel)
    print(f"wrote the Space folder {out} (upload it: hf upload --repo-type space USER/NAME {out} .)")


if __name__ == "__main__":
    main()
