"""Images from an image folder, webdataset tar shards, or a ``datasets`` dataset (Hub id or local), in a fixed order.

``iter_images(source)`` yields ``(key, RGB PIL image)``:
- a folder of image files (searched recursively, sorted by relative path), or one image file;
- ``.tar`` shards (a file, a folder of them, a glob, or a brace range ``shard-{000..009}.tar``): webdataset
  samples, the first image member of each sample key;
- anything else is given to ``datasets.load_dataset`` (a Hub id, a local dataset folder or data files),
  streamed by default, so a large split is read only as far as ``num_samples``.
"""

import glob
import io
import itertools
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageOps

from ..utils.images import adm_center_crop, check_image_size, decode_image, load_image, resize_longest_side, to_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".gif")
_BRACE_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_PREFERRED_SPLITS = ("validation", "val", "test", "train")
_IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp")
# how evaluation images are framed, as the originals evaluate: ADM center crop (FlowMo, MAETok / SoftVQ,
# V2Flow, ViTok "adm_center"), ViTok's native-aspect longest-side resize, or the file as it is
CROP_MODES = ("center", "longest-side", "none")


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_braces(pattern: str) -> list[str]:
    """``a-{00..02}.tar`` -> ``[a-00.tar, a-01.tar, a-02.tar]`` (zero padding kept; several ranges multiply)."""
    match = _BRACE_RANGE.search(pattern)
    if not match:
        return [pattern]
    start, stop = match.group(1), match.group(2)
    width = len(start) if start.startswith("0") else 0
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [
        expanded
        for number in range(int(start), int(stop) + 1)
        for expanded in expand_braces(f"{head}{number:0{width}d}{tail}")
    ]


def tar_shards(source: str) -> list[Path] | None:
    """The shard files ``source`` names, or None if it does not name tar shards."""
    path = Path(source)
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        return shards or None
    if not source.endswith(".tar"):
        return None
    names = [name for pattern in expand_braces(source) for name in (sorted(glob.glob(pattern)) or [pattern])]
    missing = [name for name in names if not Path(name).is_file()]
    if missing:
        raise ValueError(f"tar shard(s) not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return [Path(name) for name in names]


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    """Encoded image bytes -> RGB, size checked from the header first (``hf_vtok.utils.images.decode_image``)."""
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    return decode_image(io.BytesIO(data), name)


def _iter_folder(folder: Path) -> Iterator[tuple[str, Image.Image]]:
    files = sorted(path for path in folder.rglob("*") if path.is_file() and _is_image_file(path))
    for path in files:
        yield str(path.relative_to(folder)), load_image(path)


def open_tar_shard(shard: Path, streaming: bool = True) -> tarfile.TarFile:
    """A webdataset shard opened as a stream (any compression) or, for reads by offset, as an uncompressed tar."""
    try:
        return tarfile.open(shard, mode="r|*" if streaming else "r:")
    except tarfile.TarError as error:
        kind = "a readable" if streaming else "an uncompressed"
        raise ValueError(f"{str(shard)!r} is not {kind} tar shard: {error}") from error


def tar_samples(archive: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """``(member, sample key, extension)`` of the files of a webdataset shard: the key is the member's path up to
    the first dot of its name, the extension its last suffix, lower-cased (``a/b.seg.JPG`` -> ``a/b``, ``jpg``).

    A member name that appears twice (``tar -r`` appends; which copy is meant is ambiguous) and a truncated or
    corrupt archive are ``ValueError`` naming the shard."""
    shard, names = archive.name, set()
    try:
        for member in archive:
            if not member.isfile():
                continue
            if member.name in names:
                raise ValueError(
                    f"{shard}: member {member.name!r} appears twice in the shard (appended with tar -r?); which copy "
                    "is meant is ambiguous: rebuild the shard with one of them"
                )
            names.add(member.name)
            directory, base = os.path.split(member.name)
            key, _, extension = base.partition(".")
            yield member, f"{directory}/{key}" if directory else key, extension.rsplit(".", 1)[-1].lower()
        _check_end_of_archive(archive)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(f"{shard} is truncated or not a valid tar shard: {error}") from error


def _check_end_of_archive(archive: tarfile.TarFile) -> None:
    """``tarfile`` ends its iteration silently at a truncated or corrupt header after the first member: check
    that the iteration stopped at the archive's end-of-archive marker (a zero block)."""
    end, handle = archive.offset, archive.fileobj
    if archive.offset == 0:
        return
    if hasattr(handle, "seekable") and handle.seekable():
        handle.seek(end)
        block = handle.read(tarfile.BLOCKSIZE)
        if len(block) == tarfile.BLOCKSIZE and not block.strip(b"\0"):
            return
    elif handle.tell() - end == tarfile.BLOCKSIZE:  # a stream: the last header read was a whole block
        return
    raise ValueError(f"{archive.name} is truncated or corrupt: no valid header or end-of-archive marker at byte {end}")


MAX_CLASS_LABEL = 2**63 - 1  # labels are stored as int64
_MAX_CLASS_FILE_BYTES = 64


def parse_class_label(data: bytes, name: str) -> int:
    """The text of a webdataset ``.cls`` member -> its class id, 0 .. 2**63 - 1 (a ``ValueError`` naming ``name``)."""
    if len(data) > _MAX_CLASS_FILE_BYTES:
        raise ValueError(f"{name} holds {len(data)} bytes, not an integer class id")
    text = data.decode("utf-8", errors="replace").strip()
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} holds {text!r}, not an integer class id") from None
    if not 0 <= value <= MAX_CLASS_LABEL:
        raise ValueError(f"{name} holds the class id {value}; class ids are 0 .. 2**63 - 1 (stored as int64)")
    return value


def _iter_tar_shards(shards: list[Path]) -> Iterator[tuple[str, Image.Image]]:
    """The first image member of each sample key (other image members of a sample are skipped: webdataset samples
    may hold several images, e.g. ``.jpg`` and ``.seg.png``)."""
    for shard in shards:
        seen = set()
        with open_tar_shard(shard) as archive:
            for member, key, extension in tar_samples(archive):
                if key in seen or f".{extension}" not in IMAGE_EXTENSIONS:
                    continue
                seen.add(key)
                name = f"{shard}:{member.name}"
                try:
                    data = archive.extractfile(member).read()
                except (tarfile.TarError, EOFError, zlib.error) as error:
                    raise ValueError(f"{name}: the shard is truncated or corrupt: {error}") from error
                if len(data) != member.size:
                    raise ValueError(f"{name}: the shard is truncated ({len(data)} of {member.size} bytes)")
                yield f"{shard.name}/{key}", decode_image_bytes(data, name)


def pick_split(dataset, split: str | None, source: str):
    if not hasattr(dataset, "keys"):  # already one split
        return dataset
    available = list(dataset.keys())
    if split is not None:
        if split not in available:
            raise ValueError(f"dataset {source!r} has no split {split!r}; splits: {available}")
        return dataset[split]
    for name in _PREFERRED_SPLITS:
        if name in available:
            return dataset[name]
    return dataset[available[0]]


def find_image_column(example: dict, requested: str | None, source: str) -> str:
    if requested is not None:
        if requested not in example:
            raise ValueError(f"dataset {source!r} has no column {requested!r}; columns: {sorted(example)}")
        return requested
    for name in _IMAGE_COLUMNS:
        if name in example:
            return name
    for name, value in example.items():
        if isinstance(value, Image.Image) or (isinstance(value, dict) and "bytes" in value):
            return name
    raise ValueError(
        f"dataset {source!r} has no image column; columns: {sorted(example)} (pass the image column name)"
    )


def as_pil(value, name: str) -> Image.Image:
    if isinstance(value, Image.Image):
        check_image_size(value.width, value.height, name)
        return to_rgb(ImageOps.exif_transpose(value), name=name)
    if isinstance(value, dict) and value.get("bytes") is not None:
        return decode_image_bytes(value["bytes"], name)
    if isinstance(value, dict) and value.get("path"):
        return load_image(value["path"])
    if isinstance(value, bytes):
        return decode_image_bytes(value, name)
    raise ValueError(f"{name}: expected an image, got {type(value).__name__}")


def _iter_datasets(
    source: str, split: str | None, streaming: bool, image_column: str | None
) -> Iterator[tuple[str, Image.Image]]:
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            f"{source!r} is neither an image folder nor tar shards; reading it as a dataset needs `datasets` "
            "(pip install 'hf_vtok[eval]')"
        ) from error
    try:
        dataset = datasets.load_dataset(source, split=split, streaming=streaming)
    except (OSError, ValueError) as error:  # not found, offline (ConnectionError), bad id or split, bad files
        raise (FileNotFoundError if isinstance(error, OSError) else ValueError)(
            f"{source!r} is not an image folder, an image file, tar shards, or a dataset `datasets` can load: "
            f"{type(error).__name__}: {error}"
        ) from error
    dataset = pick_split(dataset, split, source)
    column = None
    for index, example in enumerate(dataset):
        column = column or find_image_column(example, image_column, source)
        yield f"{index:08d}", as_pil(example[column], f"{source}[{index}].{column}")


def iter_images(
    source: str | os.PathLike,
    split: str | None = None,
    num_samples: int | None = None,
    streaming: bool = True,
    image_column: str | None = None,
) -> Iterator[tuple[str, Image.Image]]:
    """``(key, RGB image)`` pairs of ``source``, in a fixed order, at most ``num_samples`` of them."""
    if num_samples is not None and num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    source = str(source)
    path = Path(source).expanduser()
    shards = tar_shards(source)
    if shards is not None:
        images = _iter_tar_shards(shards)
    elif path.is_dir() and any(_is_image_file(item) for item in path.rglob("*")):
        images = _iter_folder(path)
    elif path.is_file() and _is_image_file(path):
        images = iter([(path.name, load_image(path))])
    else:
        images = _iter_datasets(source, split, streaming, image_column)
    return itertools.islice(images, num_samples)


def frame_image(image: Image.Image, crop: str, resolution: int | None) -> Image.Image:
    """Apply an evaluation framing (``CROP_MODES``) at ``resolution`` pixels."""
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    if crop == "none":
        return image
    if resolution is None or resolution <= 0:
        raise ValueError(f"crop={crop!r} needs a positive resolution, got {resolution}")
    if crop == "center":
        return adm_center_crop(image, resolution)
    return resize_longest_side(image, resolution)
