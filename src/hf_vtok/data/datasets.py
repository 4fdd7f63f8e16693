"""Training images with deterministic, resumable order and augmentation.

Sources: ``hf_vtok.data.open_image_source`` (image folders, webdataset shards, ``datasets`` datasets, random
access); ``StreamingAugmentedImages`` reads a Hub dataset as a stream.

Order and randomness are functions of ``(seed, position)`` only: position ``p`` of the infinite training
stream is item ``perm_e[p % N]`` of epoch ``e = p // N`` (a seeded permutation per epoch), and the
augmentation of that draw uses a generator seeded with ``(seed, p)``. Step ``s`` of a run with ``W``
processes and per-process batch ``B`` reads positions ``[s*W*B, (s+1)*W*B)``, process ``r`` the slice
``r``. Resuming at step ``s`` is therefore exact, and independent of data-loader workers.
"""

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, Sampler

from ..utils.images import to_pixel_values  # noqa: F401  (re-exported: the transforms' last step)
from .images import as_pil, find_image_column, pick_split
from .sources import NO_LABEL, DatasetsImages, FolderImages, TarShardImages, import_datasets, open_image_source


# --------------------------------------------------------------------------------------------------
# augmentations (PIL in, PIL out; all randomness from the given numpy generator)
def random_resized_crop(
    image: Image.Image,
    size: int | tuple[int, int],
    rng: np.random.Generator,
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    resample=Image.Resampling.BICUBIC,
) -> Image.Image:
    """torchvision's RandomResizedCrop: an area fraction in ``scale`` and log-uniform aspect ratio in ``ratio``
    (10 tries, then the largest centred crop within ``ratio``), resized to ``size`` (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    area = image.width * image.height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= image.width and 0 < crop_h <= image.height:
            top = int(rng.integers(0, image.height - crop_h + 1))
            left = int(rng.integers(0, image.width - crop_w + 1))
            break
    else:
        in_ratio = image.width / image.height
        if in_ratio < ratio[0]:
            crop_w, crop_h = image.width, int(round(image.width / ratio[0]))
        elif in_ratio > ratio[1]:
            crop_h, crop_w = image.height, int(round(image.height * ratio[1]))
        else:
            crop_w, crop_h = image.width, image.height
        top, left = (image.height - crop_h) // 2, (image.width - crop_w) // 2
    return image.resize((width, height), resample=resample, box=(left, top, left + crop_w, top + crop_h))


def random_crop(
    image: Image.Image, min_size: int, max_size: int, rng: np.random.Generator, multiple: int = 1
) -> Image.Image:
    """A crop of random height and width in ``[min_size, max_size]`` (multiples of ``multiple``, at most the
    image's sides) at a random place, no resizing."""
    if min_size > max_size or min_size < multiple:
        raise ValueError(
            f"random crop sizes need multiple <= min_size <= max_size, got {multiple}, {min_size}, {max_size}"
        )
    sides = []
    for extent in (image.height, image.width):
        high = min(max_size, extent) // multiple
        low = min(min_size // multiple, high)
        if high < 1:
            raise ValueError(f"an image of {image.width}x{image.height} (WxH) is smaller than one {multiple}px patch")
        sides.append(int(rng.integers(low, high + 1)) * multiple)
    crop_h, crop_w = sides
    top = int(rng.integers(0, image.height - crop_h + 1))
    left = int(rng.integers(0, image.width - crop_w + 1))
    return image.crop((left, top, left + crop_w, top + crop_h))


def horizontal_flip(image: Image.Image, rng: np.random.Generator, probability: float = 0.5) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < probability else image


# --------------------------------------------------------------------------------------------------
# deterministic resumable order
def draw_generator(seed: int, position: int) -> np.random.Generator:
    """The augmentation generator of one draw of the training stream."""
    return np.random.default_rng([seed, position])


class StepBatchSampler(Sampler):
    """Batches of ``(position, item index)`` for one process, from step ``start_step`` on (infinite stream).

    Epoch ``e`` visits the ``num_items`` items in a permutation seeded by ``(seed, e)`` (identity with
    ``shuffle=False``); global step ``s`` covers positions ``[s*W*B, (s+1)*W*B)`` and process ``r`` takes
    the ``r``-th block of ``B``.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
        shuffle: bool = True,
    ):
        if num_items <= 0 or batch_size <= 0:
            raise ValueError(f"need items and a positive batch size, got {num_items} items, batch {batch_size}")
        self.num_items, self.batch_size, self.seed, self.shuffle = num_items, batch_size, seed, shuffle
        self.start_step, self.num_processes, self.process_index = start_step, num_processes, process_index
        self._epoch, self._permutation = None, None

    def item(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_items)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            self._epoch = epoch
            self._permutation = np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.num_items)
        return int(self._permutation[offset])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            first = (step * self.num_processes + self.process_index) * self.batch_size
            yield [(position, self.item(position)) for position in range(first, first + self.batch_size)]
            step += 1


class AugmentedImages(Dataset):
    """``dataset[(position, index)]`` -> ``transform(image, rng)`` (a dict) plus ``label`` and ``position``."""

    def __init__(self, source, transform: Callable[[Image.Image, np.random.Generator], dict], seed: int = 0):
        self.source, self.transform, self.seed = source, transform, seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, draw: tuple[int, int]) -> dict:
        position, index = draw
        _, image, label = self.source[index]
        sample = self.transform(image, draw_generator(self.seed, position))
        sample["label"] = label
        sample["position"] = position
        return sample


class StreamingAugmentedImages(IterableDataset):
    """A streamed ``datasets`` dataset with the same position rule as ``StepBatchSampler``: yields this
    process's samples from step ``start_step`` on. Epoch ``e`` is the stream shuffled with seed ``seed + e``
    (buffer ``shuffle_buffer``; 0 keeps the stream order). Resuming reads past the skipped samples."""

    def __init__(
        self,
        source: str,
        transform,
        batch_size: int,
        seed: int = 0,
        start_step: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        shuffle_buffer: int = 1000,
    ):
        self.source, self.transform, self.batch_size, self.seed = source, transform, batch_size, seed
        self.start_step, self.num_processes, self.process_index = start_step, num_processes, process_index
        self.split, self.image_column, self.label_column, self.shuffle_buffer = (
            split,
            image_column,
            label_column,
            shuffle_buffer,
        )

    def _epoch_stream(self, epoch: int):
        datasets = import_datasets(f"streaming {self.source!r}")
        dataset = pick_split(
            datasets.load_dataset(self.source, split=self.split, streaming=True), self.split, self.source
        )
        if self.shuffle_buffer:
            dataset = dataset.shuffle(seed=self.seed + epoch, buffer_size=self.shuffle_buffer)
        return dataset

    def __iter__(self):
        global_batch = self.batch_size * self.num_processes
        start = self.start_step * global_batch
        current, epoch, column = 0, 0, None
        while True:
            epoch_start = current
            for example in self._epoch_stream(epoch):
                if current >= start and (current % global_batch) // self.batch_size == self.process_index:
                    column = column or find_image_column(example, self.image_column, self.source)
                    image = as_pil(example[column], f"{self.source}[{current - epoch_start}]")
                    sample = self.transform(image, draw_generator(self.seed, current))
                    sample["label"] = int(example[self.label_column]) if self.label_column else NO_LABEL
                    sample["position"] = current
                    yield sample
                current += 1
            if current == epoch_start:
                raise ValueError(f"the streamed dataset {self.source!r} is empty")
            epoch += 1


class CachedLatents(Dataset):
    """Rows of a latent cache (``hf_vtok.data.load_latent_cache``) as training samples.

    ``dataset[(position, index)]`` -> ``{"latents", "label"}``: the latents normalised with the cache's
    ``(z - shift_factor) * scaling_factor``; a cache made with ``--flip`` gives the flipped latents for half
    of the draws (decided by ``(seed, position)``, so resumable). ``layout="tokens"`` flattens grid latents
    ``[C, h, w]`` to ``[h * w, C]`` (1-D generators), ``"grid"`` keeps them. ``unconditional`` labels everything 0.
    """

    def __init__(self, rows, seed: int, layout: str = "tokens", unconditional: bool = False):
        if layout not in ("tokens", "grid"):
            raise ValueError(f"layout must be 'tokens' or 'grid', got {layout!r}")
        info = rows.cache_info
        self.rows, self.seed, self.layout, self.unconditional = rows, seed, layout, unconditional
        self.scaling_factor, self.shift_factor = info["scaling_factor"], info["shift_factor"]
        self.has_flip = "latents_flip" in rows.column_names

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, draw):
        position, index = draw
        row = self.rows[index]
        use_flip = self.has_flip and draw_generator(self.seed, position).random() < 0.5
        latents = (row["latents_flip"] if use_flip else row["latents"]).float()
        if latents.dim() == 3 and self.layout == "tokens":  # grid latents [C, h, w] -> tokens [h * w, C]
            latents = latents.flatten(1).transpose(0, 1)
        latents = (latents - self.shift_factor) * self.scaling_factor
        label = 0 if self.unconditional else int(row["label"])
        return {"latents": latents, "label": label}


def collate_samples(samples: list[dict], pad_keys: tuple[str, ...] = ()) -> dict:
    """Stack tensors, turn numbers into tensors, keep other values as lists. Tensors under ``pad_keys``
    (token sequences of different lengths) are zero-padded along their first dimension to the longest."""
    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if key in pad_keys:
            length = max(value.shape[0] for value in values)
            padded = values[0].new_zeros((len(values), length, *values[0].shape[1:]))
            for index, value in enumerate(values):
                padded[index, : value.shape[0]] = value
            batch[key] = padded
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (int, float)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


__all__ = [
    "NO_LABEL",
    "AugmentedImages",
    "CachedLatents",
    "DatasetsImages",
    "FolderImages",
    "StepBatchSampler",
    "StreamingAugmentedImages",
    "TarShardImages",
    "collate_samples",
    "draw_generator",
    "horizontal_flip",
    "open_image_source",
    "random_crop",
    "random_resized_crop",
    "to_pixel_values",
]
