r"""``hf-vtok cache-latents``: encode an image data set once, store the latents in resumable Arrow shards.

    hf-vtok cache-latents --model softvq-l-64 --images /data/imagenet/train --output cache/softvq \
        --resolution 256 --flip
    hf-vtok cache-latents --model mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers --images train/ --output cache/dcae \
        --resolution 512 --flip

The autoencoder is any hf_vtok tokenizer (``encode(...).latents``) or a diffusers autoencoder (DC-AE:
``.latent``, KL: the posterior mode). Images come from a folder (class sub-folders give labels), webdataset
shards (``.cls`` labels) or a ``datasets`` dataset (its label column), in a fixed order; with ``--resolution``
each gets the ADM center crop to that size (the framing of every generator recipe here), then [-1, 1].
Latents are stored as the encoder returns them, in float32, *not* normalised: ``cache_info.json`` records the
model's ``scaling_factor`` / ``shift_factor`` for the trainer. ``--flip`` also stores the latents of the
horizontally flipped image (``latents_flip``).

Rows: ``key`` (the source's name of the image), ``label`` (int64, -1 without labels), ``latents`` and
optionally ``latents_flip``. A tokenizer that turns images into discrete ids (``--model`` a saved
``V2FlowPipeline`` folder: DC-AE then V²Flow) stores ``image_tokens`` (int64 ids ``[L]``) and optionally
``image_tokens_flip`` instead of latents; ``training_scripts/train_v2flow_llama.py`` reads those.
Shard ``k`` holds images ``[k * shard_size, (k + 1) * shard_size)``; it is written as
``shard-XXXXX.arrow.partial`` and renamed when complete, so after a kill the same command skips the finished
shards and redoes the interrupted one: no duplicates, no gaps. Several processes
(``accelerate launch -m hf_vtok.cli cache-latents ...``) split the shards between them.
``load_latent_cache(folder)`` returns the rows as one ``datasets.Dataset`` in image order.
"""

import hashlib
import json
import numbers
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..utils.images import to_pixel_values
from .images import MAX_CLASS_LABEL, frame_image
from .sources import NO_LABEL, import_datasets, open_image_source

INFO_FILE = "cache_info.json"
SHARD_PATTERN = "shard-{:05d}.arrow"


def _write_json_atomically(path: Path, content: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(content, indent=1))
    os.replace(temporary, path)


def encode_latents(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """Deterministic latents of an hf_vtok tokenizer (``latents``) or a diffusers autoencoder (``latent`` /
    the posterior mode)."""
    encoded = model.encode(pixel_values)
    for name in ("latents", "latent"):
        value = getattr(encoded, name, None)
        if isinstance(value, torch.Tensor):
            return value
    distribution = getattr(encoded, "latent_dist", None)
    if distribution is not None:
        return distribution.mode()
    raise ValueError(f"{type(model).__name__}.encode returned {type(encoded).__name__} without latents")


class ImageTokenEncoder(torch.nn.Module):
    """Images -> discrete ids for the cache: a ``V2FlowPipeline``'s DC-AE, then its V²Flow tokenizer (as
    ``V2FlowPipeline.encode_images``, on pixels the cache has already framed).

    The V²Flow resampler draws Gumbel noise at inference (as the original does); the noise of image ``i`` of
    the source comes from a generator seeded with ``seed + i``, so a resumed or re-split cache is the same."""

    cache_column = "image_tokens"

    def __init__(self, pipeline, seed: int = 0):
        super().__init__()
        self.vae, self.tokenizer, self.seed = pipeline.vae, pipeline.tokenizer, seed

    @torch.no_grad()
    def encode_for_cache(self, pixel_values: torch.Tensor, start_index: int) -> torch.Tensor:
        """Pixels ``[B, 3, S, S]`` of images ``start_index, ...`` -> ids ``[B, L]``."""
        latents = self.vae.encode(pixel_values.to(self.vae.device, self.vae.dtype)).latent
        latents = (latents * self.tokenizer.config.scaling_factor).to(self.tokenizer.device)
        image_tokens = []
        for offset, image_latents in enumerate(latents):
            generator = torch.Generator(self.tokenizer.device).manual_seed(self.seed + start_index + offset)
            image_tokens.append(self.tokenizer.encode(image_latents[None], generator=generator).image_tokens[0])
        return torch.stack(image_tokens)


def _settings(model_name: str, source, resolution, shard_size: int, flip: bool) -> dict:
    keys = "\n".join(source.key(index) for index in range(len(source)))
    return {
        "model": model_name,
        "resolution": resolution,
        "shard_size": shard_size,
        "flip": flip,
        "num_images": len(source),
        "keys_sha256": hashlib.sha256(keys.encode()).hexdigest()[:16],
    }


def completed_shards(output: str | os.PathLike) -> list[int]:
    return sorted(int(path.name[6:11]) for path in Path(output).glob("shard-?????.arrow"))


@torch.no_grad()
def cache_latents(
    model,
    source,
    output: str | os.PathLike,
    resolution: int | None = None,
    batch_size: int = 32,
    shard_size: int = 1000,
    flip: bool = False,
    model_name: str | None = None,
    num_processes: int = 1,
    process_index: int = 0,
    progress: bool = True,
) -> Path:
    """Encode every image of ``source`` (a path / dataset id, or an ``open_image_source`` object) into Arrow
    shards under ``output``; shards already there (from an interrupted run with the same settings) are kept.
    With several processes, process ``r`` writes shards ``r, r + W, ...``."""
    datasets = import_datasets("the latent cache")
    from datasets.arrow_writer import ArrowWriter

    if batch_size <= 0 or shard_size <= 0 or (resolution is not None and resolution <= 0):
        raise ValueError("batch_size, shard_size and resolution must be positive")
    if not hasattr(source, "key"):
        source = open_image_source(source)
    output = Path(output)
    settings = _settings(model_name or type(model).__name__, source, resolution, shard_size, flip)
    info_path = output / INFO_FILE
    if info_path.is_file():
        previous = json.loads(info_path.read_text())
        changed = {key: (previous.get(key), value) for key, value in settings.items() if previous.get(key) != value}
        if changed:
            raise ValueError(
                f"{str(output)!r} holds a cache made with other settings {changed} (before, now): use another "
                "output folder or delete it"
            )
    config = getattr(model, "config", None)
    if isinstance(model, ImageTokenEncoder):
        config = model.tokenizer.config
    info = {
        **settings,
        "scaling_factor": float(getattr(config, "scaling_factor", None) or 1.0),
        "shift_factor": float(getattr(config, "shift_factor", None) or 0.0),
        "class_names": list(getattr(source, "class_names", [])),
    }

    def prepare_output() -> None:
        """The folder and its cache_info.json, once a first batch encoded (the inputs are good)."""
        output.mkdir(parents=True, exist_ok=True)
        if process_index == 0 and not info_path.is_file():
            _write_json_atomically(info_path, info)

    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    column = getattr(model, "cache_column", "latents")
    num_shards = -(-len(source) // shard_size)
    done = set(completed_shards(output))
    mine = [shard for shard in range(process_index, num_shards, num_processes) if shard not in done]
    total = sum(min(shard_size, len(source) - shard * shard_size) for shard in mine)
    bar = tqdm(total=total, desc="cache latents", unit="img", disable=None if progress else True)
    for shard in mine:
        indices = range(shard * shard_size, min((shard + 1) * shard_size, len(source)))
        target = output / SHARD_PATTERN.format(shard)
        partial = target.with_name(target.name + ".partial")
        writer = None
        try:
            for start in range(0, len(indices), batch_size):
                keys, labels, pixels = [], [], []
                for index in indices[start : start + batch_size]:
                    key, image, label = source[index]
                    if not isinstance(label, numbers.Integral) or not NO_LABEL <= label <= MAX_CLASS_LABEL:
                        raise ValueError(
                            f"image {key!r} has the label {label!r}: labels are class ids 0 .. 2**63 - 1, or "
                            f"{NO_LABEL} for none"
                        )
                    if resolution is not None:
                        image = frame_image(image, "center", resolution)
                    keys.append(key)
                    labels.append(int(label))
                    pixels.append(to_pixel_values(image))
                shapes = {tuple(value.shape) for value in pixels}
                if len(shapes) > 1:
                    raise ValueError(
                        f"images of different sizes {sorted(shapes)} in one batch: pass --resolution to crop them"
                    )
                batch = torch.stack(pixels).to(device, dtype)
                columns = {"key": keys, "label": labels}
                for suffix, view in [("", batch), ("_flip", batch.flip(dims=[3]))][: 1 + flip]:
                    if column == "image_tokens":
                        encoded = model.encode_for_cache(view, indices[start]).cpu().long().numpy()
                    else:
                        encoded = encode_latents(model, view).float().cpu().numpy()
                    columns[column + suffix] = encoded
                if writer is None:
                    shape = tuple(columns[column].shape[1:])
                    if column == "image_tokens":
                        array = datasets.Sequence(datasets.Value("int64"), length=shape[0])
                    elif 2 <= len(shape) <= 5:
                        array = getattr(datasets, f"Array{len(shape)}D")(shape=shape, dtype="float32")
                    else:
                        raise ValueError(
                            f"latents of shape {shape} per image: the cache stores 2- to 5-dimensional latents"
                        )
                    features = {"key": datasets.Value("string"), "label": datasets.Value("int64"), column: array}
                    if flip:
                        features[column + "_flip"] = array
                    prepare_output()
                    writer = ArrowWriter(features=datasets.Features(features), path=str(partial))
                writer.write_batch(columns)
                bar.update(len(keys))
            writer.finalize()
            writer.close()
            os.replace(partial, target)  # a shard file exists only once complete
        except BaseException:  # an error or Ctrl-C: no half-written shard stays behind (a kill may leave .partial)
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
            raise
    bar.close()
    if process_index == 0:
        prepare_output()  # also when every shard was done before, or this process had none
    return output


def load_latent_cache(folder: str | os.PathLike, require_complete: bool = True):
    """The cached rows as one ``datasets.Dataset`` (torch format), in image order; ``.info`` has cache_info.json."""
    datasets = import_datasets("the latent cache")
    folder = Path(folder)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise ValueError(f"{str(folder)!r} is not a latent cache (no {INFO_FILE})")
    info = json.loads(info_path.read_text())
    expected = -(-info["num_images"] // info["shard_size"])
    shards = completed_shards(folder)
    if require_complete and len(shards) != expected:
        raise ValueError(
            f"{str(folder)!r} holds {len(shards)} of {expected} shards: run the same cache-latents command again to "
            "finish it (or pass require_complete=False)"
        )
    parts = [datasets.Dataset.from_file(str(folder / SHARD_PATTERN.format(index))) for index in shards]
    dataset = datasets.concatenate_datasets(parts).with_format("torch")
    dataset.cache_info = info
    return dataset


__all__ = ["ImageTokenEncoder", "cache_latents", "completed_shards", "encode_latents", "load_latent_cache"]
