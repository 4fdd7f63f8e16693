"""Random access to training images: ``open_image_source(source)[index] -> (key, RGB image, label)``.

An image folder (sorted by relative path; first-level sub-folders are classes), webdataset ``.tar`` shards
(indexed once, then read by member offset; a sample's ``.cls`` member is its label), or a ``datasets`` dataset
(a Hub id, a ``save_to_disk`` folder, ``imagefolder`` data; its label column). Used by the training scripts and
by ``hf-vtok cache-latents``.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..utils.images import load_image
from .images import (
    IMAGE_EXTENSIONS,
    as_pil,
    decode_image_bytes,
    find_image_column,
    open_tar_shard,
    parse_class_label,
    pick_split,
    tar_samples,
    tar_shards,
)

NO_LABEL = -1


# --------------------------------------------------------------------------------------------------
# sources: random access to (key, RGB image, label)
class FolderImages:
    """Image files under a folder, sorted by relative path; files in sub-folders get the index of their
    first-level folder among the sorted folder names as label (``class_names``), flat files ``NO_LABEL``."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.files = sorted(
            path.relative_to(self.folder).as_posix()
            for path in self.folder.rglob("*")
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise ValueError(f"{str(self.folder)!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.class_names = sorted({name.split("/")[0] for name in self.files if "/" in name})
        index = {name: position for position, name in enumerate(self.class_names)}
        self.labels = [index[name.split("/")[0]] if "/" in name else NO_LABEL for name in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def key(self, index: int) -> str:
        return self.files[index]

    def __getitem__(self, index: int) -> tuple[str, Image.Image, int]:
        return self.files[index], load_image(self.folder / self.files[index]), self.labels[index]


@dataclass(frozen=True)
class _TarMember:
    shard: int
    offset: int
    size: int
    name: str


class TarShardImages:
    """Webdataset shards read by member offset (uncompressed tar): the first image member of each sample key,
    the sample's ``.cls`` member (an integer 0 .. 2**63 - 1) as label when present.

    Further image members of a sample (webdataset samples may hold several images, e.g. ``.jpg`` and
    ``.seg.png``) are skipped and counted in ``skipped_images``; a member name that appears twice, two
    ``.cls`` members of one sample, a bad class id and a truncated shard are ``ValueError`` naming the member."""

    def __init__(self, shards: list[Path]):
        self.shards = [Path(shard) for shard in shards]
        self.keys: list[str] = []
        self.members: list[_TarMember] = []
        self.labels: list[int] = []
        self.skipped_images = 0
        for shard_index, shard in enumerate(self.shards):
            images: dict[str, _TarMember] = {}
            classes: dict[str, int] = {}
            size = shard.stat().st_size
            with open_tar_shard(shard, streaming=False) as archive:
                for member, key, extension in tar_samples(archive):
                    name = f"{shard}:{member.name}"
                    if member.offset_data + member.size > size:
                        raise ValueError(
                            f"{name} ends at byte {member.offset_data + member.size} but the shard has {size} bytes: "
                            "the shard is truncated"
                        )
                    if extension == "cls":
                        if key in classes:
                            raise ValueError(f"{name}: sample {key!r} has two .cls members")
                        classes[key] = parse_class_label(archive.extractfile(member).read(), name)
                    elif f".{extension}" in IMAGE_EXTENSIONS:
                        if key in images:
                            self.skipped_images += 1
                        else:
                            images[key] = _TarMember(shard_index, member.offset_data, member.size, member.name)
            for key, member in images.items():
                self.keys.append(f"{shard.name}/{key}")
                self.members.append(member)
                self.labels.append(classes.get(key, NO_LABEL))
        if not self.members:
            raise ValueError(f"the tar shards {[str(shard) for shard in self.shards[:3]]} hold no images")

    def __len__(self) -> int:
        return len(self.members)

    def key(self, index: int) -> str:
        return self.keys[index]

    def __getitem__(self, index: int) -> tuple[str, Image.Image, int]:
        member = self.members[index]
        shard = self.shards[member.shard]
        with open(shard, "rb") as handle:
            handle.seek(member.offset)
            data = handle.read(member.size)
        return self.keys[index], decode_image_bytes(data, f"{shard}:{member.name}"), self.labels[index]


class DatasetsImages:
    """A map-style ``datasets`` split; ``label_column`` (default ``"label"`` when present) gives integer labels."""

    def __init__(
        self, source: str, split: str | None = None, image_column: str | None = None, label_column: str | None = None
    ):
        datasets = import_datasets(f"reading {source!r} as a dataset")
        path = Path(source)
        if path.is_dir() and not (path / "dataset_info.json").exists() and not any(path.glob("*.arrow")):
            dataset = datasets.load_dataset("imagefolder", data_dir=str(path))
        elif path.is_dir() and (path / "dataset_info.json").exists():
            dataset = datasets.load_from_disk(str(path))
        else:
            dataset = datasets.load_dataset(source, split=split)
        self.dataset = pick_split(dataset, split, source)
        self.source = source
        first = self.dataset[0]
        self.image_column = find_image_column(first, image_column, source)
        if label_column is not None and label_column not in first:
            raise ValueError(f"dataset {source!r} has no column {label_column!r}; columns: {sorted(first)}")
        self.label_column = label_column or ("label" if "label" in first else None)
        self.dataset = self.dataset.cast_column(self.image_column, datasets.Image(decode=False))
        feature = self.dataset.features.get(self.label_column) if self.label_column else None
        self.class_names = list(feature.names) if hasattr(feature, "names") else []

    def __len__(self) -> int:
        return len(self.dataset)

    def key(self, index: int) -> str:
        return f"{index:08d}"

    def __getitem__(self, index: int) -> tuple[str, Image.Image, int]:
        example = self.dataset[index]
        label = int(example[self.label_column]) if self.label_column else NO_LABEL
        return self.key(index), as_pil(example[self.image_column], f"{self.source}[{index}]"), label


def import_datasets(what: str):
    """The ``datasets`` package, or an ImportError saying that ``what`` needs it."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"{what} needs the `datasets` package: pip install 'hf_vtok[train]'") from error
    return datasets


def open_image_source(
    source: str | os.PathLike,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
):
    """Random-access images of a folder, tar shards, or a (non-streamed) ``datasets`` dataset."""
    source = str(source)
    shards = tar_shards(source)
    if shards is not None:
        return TarShardImages(shards)
    path = Path(source).expanduser()
    if path.is_dir() and any(item.suffix.lower() in IMAGE_EXTENSIONS for item in path.rglob("*")):
        return FolderImages(path)
    return DatasetsImages(source, split, image_column, label_column)


__all__ = ["NO_LABEL", "DatasetsImages", "FolderImages", "TarShardImages", "import_datasets", "open_image_source"]
