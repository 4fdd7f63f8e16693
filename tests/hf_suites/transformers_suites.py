"""transformers' own common suites, run against hf_vtok by the thin ``test_transformers_*.py`` files here.

The suites come from the sdist of the installed transformers (see ``get_transformers_tests.py``, run by
``.ci/run``), found through ``$HF_VTOK_TRANSFORMERS_TESTS``; without it every module importing this one is
skipped. They are loaded as one package whose search path is the extracted folder and then ``standins/``
(modules they import from the transformers repository that the sdist does not ship).
"""

import importlib
import importlib.util
import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ENV = "HF_VTOK_TRANSFORMERS_TESTS"
PACKAGE = "transformers_common_suites"
STANDINS = Path(__file__).resolve().parent / "standins"


def suites_folder() -> Path:
    """The extracted suites of the installed transformers, or skip the importing module with the reason."""
    configured = os.environ.get(ENV)
    if not configured:
        pytest.skip(
            f"${ENV} is unset: fetch transformers' suites with "
            f"`python tests/hf_suites/get_transformers_tests.py DIR` and export {ENV}=DIR (.ci/run does)",
            allow_module_level=True,
        )
    folder = Path(configured)
    if not (folder / "VERSION").is_file():
        pytest.skip(f"${ENV}={folder} holds no extracted suites (no VERSION file)", allow_module_level=True)
    extracted, installed = (folder / "VERSION").read_text().strip(), version("transformers")
    if extracted != installed:
        raise RuntimeError(
            f"${ENV}={folder} holds the suites of transformers {extracted} but {installed} is installed: "
            "extract them again with tests/hf_suites/get_transformers_tests.py"
        )
    if importlib.util.find_spec("parameterized") is None:
        pytest.skip(
            "the transformers suites need `parameterized` (pip install parameterized)", allow_module_level=True
        )
    return folder


def _package(folder: Path):
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder), str(STANDINS)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    spec.loader.exec_module(package)
    # test_image_processing_common imports this top-level module from the repository's utils/ folder
    standin = importlib.util.spec_from_file_location(
        "fetch_hub_objects_for_ci", STANDINS / "fetch_hub_objects_for_ci.py"
    )
    sys.modules.setdefault("fetch_hub_objects_for_ci", importlib.util.module_from_spec(standin))
    standin.loader.exec_module(sys.modules["fetch_hub_objects_for_ci"])
    return package


def suite(name: str):
    """The suite module ``name`` (``"test_modeling_common"``, ...) of the installed transformers."""
    _package(suites_folder())
    return importlib.import_module(f"{PACKAGE}.{name}")
