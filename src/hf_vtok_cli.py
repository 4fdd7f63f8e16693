"""The ``hf-vtok`` console entry point: the command line is parsed before the package's heavy import.

``import hf_vtok`` imports torch, transformers and diffusers and registers every tokenizer family with the Auto
classes (seconds), which ``import hf_vtok; AutoModel.from_pretrained(...)`` relies on, so the package root stays
eager. Any ``hf_vtok.<module>`` import runs that root first; so this module, outside the package, puts the
``hf_vtok`` package in ``sys.modules`` without running its ``__init__``, lets ``hf_vtok.cli`` parse (argparse and
the command table only: ``hf-vtok --help``, a mistyped command), and runs the package's ``__init__``, whole and
once, before a sub-command's module is imported. A process that already imported hf_vtok defers nothing.
"""

import importlib.util
import sys
from collections.abc import Callable

PACKAGE = "hf_vtok"


def defer_package_import() -> Callable[[], None]:
    """Place an uninitialised ``hf_vtok`` package in ``sys.modules``; returns the call that runs its ``__init__``
    (a no-op where the package was imported already, or cannot be found: its import then fails as usual)."""
    if PACKAGE in sys.modules:
        return lambda: None
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return lambda: None
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    state = {"done": False}

    def finish() -> None:
        if state["done"]:
            return
        state["done"] = True
        try:
            spec.loader.exec_module(package)
        except BaseException:
            sys.modules.pop(PACKAGE, None)  # as a failed import leaves it
            raise

    return finish


def main() -> int:
    """``hf-vtok``: ``hf_vtok.cli.main`` with the package import deferred past parsing."""
    finish = defer_package_import()
    from hf_vtok.cli import main as run

    return run(import_package=finish)


if __name__ == "__main__":
    sys.exit(main())
