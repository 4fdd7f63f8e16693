"""Fetch the common test suites of the installed transformers into a folder (run by ``.ci/run``).

    python tests/hf_suites/get_transformers_tests.py DEST [--sdist transformers-X.tar.gz]

Downloads the transformers sdist of the installed version from the package registry (``pip download --no-deps
--no-binary :all:``) unless ``--sdist`` names one, and extracts its ``tests/test_*_common.py`` suites into ``DEST``
as a package (an empty ``__init__.py``, a ``VERSION`` file). ``export HF_VTOK_TRANSFORMERS_TESTS=DEST`` then runs
them through ``tests/hf_suites/test_transformers_*.py``.
"""

import argparse
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path, PurePosixPath

SUITE_FILES = ("test_modeling_common.py", "test_configuration_common.py", "test_image_processing_common.py")


def download_sdist(release: str, folder: Path) -> Path:
    """``transformers==release`` as an sdist from the package registry, saved in ``folder``."""
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
    subprocess.run([*command, f"transformers=={release}", "-d", str(folder)], check=True)
    found = sorted(folder.glob(f"transformers-{release}.tar.gz"))
    if not found:
        raise FileNotFoundError(f"pip download left no transformers-{release}.tar.gz in {folder}")
    return found[0]


def extract_suites(sdist: Path, destination: Path, release: str) -> list[Path]:
    """The suite files of ``sdist`` (``<root>/tests/<name>``) -> ``destination``; nothing else is read from it."""
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist) as archive:
        members = {PurePosixPath(member.name): member for member in archive.getmembers() if member.isfile()}
        for name in SUITE_FILES:
            matches = [path for path in members if path.parts[1:] == ("tests", name)]
            if len(matches) != 1:
                raise FileNotFoundError(f"{sdist} has {len(matches)} files <root>/tests/{name}, expected one")
            target = destination / name
            target.write_bytes(archive.extractfile(members[matches[0]]).read())
            written.append(target)
    (destination / "__init__.py").write_text("")
    (destination / "VERSION").write_text(release + "\n")
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("destination", type=Path)
    parser.add_argument("--sdist", type=Path, help="a transformers sdist already downloaded (default: download it)")
    args = parser.parse_args(argv)
    release = version("transformers")
    if args.sdist is not None:
        if args.sdist.name != f"transformers-{release}.tar.gz":
            parser.error(f"{args.sdist} is not the sdist of the installed transformers {release}")
        files = extract_suites(args.sdist, args.destination, release)
    else:
        with tempfile.TemporaryDirectory() as folder:
            files = extract_suites(download_sdist(release, Path(folder)), args.destination, release)
    print(f"transformers {release} suites: " + ", ".join(str(path) for path in files))


if __name__ == "__main__":
    main()
