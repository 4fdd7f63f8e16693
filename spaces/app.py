"""hf_vtok demo (a Gradio app, ready for a Hugging Face Space).

    pip install "hf_vtok[demo]"
    python spaces/app.py                        # the small ViTok and the digits SiT embedded in hf_vtok
    python spaces/app.py --model vitok=vitok-350M-f16x64 --model maetok=maetok-b-128 \
        --pipeline sit=sit-xl_maetok-b-128 --port 7860
    python spaces/build_space.py space/         # a Space folder that builds on its own (see spaces/README.md)

Reconstruct tab: upload an image or pick a bundled photo, choose one or more tokenizers; each shows what it saw
(its processor's input: a center crop for a fixed-size tokenizer, the whole image for ViTok's NaFlex) against
its reconstruction on a before/after slider, a heat map of the per-pixel error, and its token count, bits per
pixel, PSNR and SSIM. Generate tab: class-conditional samples of a pipeline, classes chosen by name. Models are
hf_vtok folders or Hub ids (``hf-vtok convert --preset ... --output DIR`` makes them from the released
checkpoints); without ``--model`` / ``--pipeline`` the demo runs on the models embedded in the package, offline.
A ``space.json`` next to this file (written by ``build_space.py``) gives the defaults of these options.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import hf_vtok  # noqa: E402  (registers the Auto classes)
from hf_vtok.commands.evaluate import tokens_per_image  # noqa: E402
from hf_vtok.commands.generate import (  # noqa: E402
    call_arguments,
    default_pipeline_path,
    generate_images,
    sampling_defaults,
)
from hf_vtok.commands.reconstruct import default_model_path, encode_decode, processor_for_any_size  # noqa: E402
from hf_vtok.hub.loading import load_pipeline, load_tokenizer  # noqa: E402
from hf_vtok.metrics import psnr, ssim  # noqa: E402
from hf_vtok.utils.images import ImageTooLargeError, check_image_size  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted(str(path) for path in (HERE / "examples").glob("*.jpg"))
SPACE_CONFIG = HERE / "space.json"
MAX_SIDE = 256  # uploads are downscaled to this longest side (--max-side): the demo runs on a CPU
CONTINUOUS_BITS = 16  # a continuous latent value counts as one float16
ERROR_FULL_SCALE = 64 / 255  # the error map's brightest colour: a mean |error| of 64 levels or more
DISPLAY_SIDE = 256  # small images (the 32x32 digits) are shown upscaled, nearest neighbour, up to this side
# the error map's colours from 0 to ERROR_FULL_SCALE: black, purple, red, orange, pale yellow
HEAT_COLOURS = np.array([[0, 0, 0], [80, 20, 120], [200, 40, 60], [250, 140, 20], [255, 250, 180]], np.float32)
HAS_IMAGE_SLIDER = hasattr(gr, "ImageSlider")  # gradio >= 5.x; older ones show the pair in a two-image gallery
DEFAULT_TOKENIZER = "default ViTok (embedded)"
DEFAULT_PIPELINE = "digits SiT (embedded)"
TABLE_HEADERS = ["tokenizer", "saw (WxH)", "tokens", "bits / pixel", "PSNR (dB)", "SSIM"]


@dataclass
class Tokenizer:
    name: str
    model: torch.nn.Module
    processor: object


@dataclass
class Generator:
    name: str
    pipeline: object
    class_names: list[str]
    defaults: dict  # the pipeline's sampling.json (guidance scale, steps)

    @property
    def choices(self) -> list[tuple[str, int]]:
        """Dropdown entries ``(shown name, class id)``: "0".."9" for the digits, "207: golden retriever" else."""
        return [(name if name == str(k) else f"{k}: {name}", k) for k, name in enumerate(self.class_names)]


@dataclass
class RoundTrip:
    """One tokenizer's view of an image: what it saw (its processor's input, back as an image), its
    reconstruction (same size), the error map and the metrics row."""

    seen: Image.Image
    reconstruction: Image.Image
    error_map: Image.Image
    row: list


def load_tokenizers(specs: dict[str, str], device: str = "cpu") -> dict[str, Tokenizer]:
    tokenizers = {}
    for name, model_id in specs.items():
        model, processor = load_tokenizer(model_id, device, torch.float32)
        tokenizers[name] = Tokenizer(name, model, processor_for_any_size(processor))
    return tokenizers


def imagenet_class_names() -> list[str] | None:
    """The 1000 ImageNet-1k class names in class-id order, from the data file gradio ships; None without it."""
    try:
        path = gr.media.get_file("imagenet_labels.json")
        names = json.loads(Path(path).read_text(encoding="utf-8"))
    except Exception:  # an older or newer gradio without the file: ids are shown instead
        return None
    return [str(name) for name in names] if isinstance(names, list) and len(names) == 1000 else None


def class_names(pipeline) -> list[str]:
    """One name per class: the pipeline's (or its transformer's) ``id2label``, ImageNet's names for 1000
    classes, else the class ids ("0".."9" for the digits)."""
    num_classes = getattr(pipeline.transformer.config, "num_classes", None)
    if not num_classes:
        raise ValueError(f"{type(pipeline).__name__}: the transformer has no num_classes (not class-conditional)")
    for config in (pipeline.config, pipeline.transformer.config):
        id2label = config.get("id2label") if hasattr(config, "get") else None
        if id2label:
            return [str(id2label.get(str(k), id2label.get(k, k))) for k in range(num_classes)]
    return (imagenet_class_names() if num_classes == 1000 else None) or [str(k) for k in range(num_classes)]


def load_pipelines(specs: dict[str, str], device: str = "cpu") -> dict[str, Generator]:
    generators = {}
    for name, path in specs.items():
        pipeline = load_pipeline(path, device, torch.float32)
        call_arguments(pipeline, {})  # a class-conditional pipeline, or the error says it is not
        defaults = sampling_defaults(path) if Path(path).is_dir() else {}
        generators[name] = Generator(name, pipeline, class_names(pipeline), defaults)
    return generators


def prepare(image, max_side: int = MAX_SIDE) -> tuple[Image.Image, str]:
    """``(RGB image at most max_side on its longest side, a line saying whether and how it was resized)``."""
    if image is None:
        raise gr.Error("upload an image or pick one of the examples")
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    try:  # the pixel limit of every hf_vtok entry point (HF_VTOK_MAX_IMAGE_PIXELS)
        check_image_size(image.width, image.height, "the image")
    except ImageTooLargeError as error:
        raise gr.Error(str(error)) from None
    image = image.convert("RGB")
    original = image.size
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    if image.size == original:
        return image, f"The input is used at its own size, {image.width}x{image.height}."
    return image, (
        f"**Your image ({original[0]}x{original[1]}) was downscaled to {image.width}x{image.height}** before "
        f"tokenizing (longest side {max_side} px, since this demo runs on a CPU; `--max-side` sets it)."
    )


def bits_per_pixel(tokenizer: Tokenizer, encoded, tokens: int, pixels: int) -> float:
    """Token ids cost log2(vocabulary) bits each; continuous tokens 16 bits per channel."""
    config = tokenizer.model.config
    vocabulary = getattr(config, "codebook_size", None)
    if getattr(encoded, "image_tokens", None) is not None and vocabulary:
        return tokens * math.log2(vocabulary) / pixels
    latents = encoded.latents
    channels = latents.shape[1] if latents.dim() == 4 else latents.shape[-1]
    return tokens * channels * CONTINUOUS_BITS / pixels


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def error_heatmap(seen: Image.Image, reconstruction: Image.Image, full_scale: float = ERROR_FULL_SCALE) -> Image.Image:
    """RGB heat map of the per-pixel |reconstruction - seen| (mean over RGB, in [0, 1]); ``full_scale`` and
    above get the brightest colour, so maps of different tokenizers share one scale."""
    error = np.abs(np.asarray(reconstruction, np.float32) - np.asarray(seen, np.float32)).mean(axis=2) / 255.0
    position = np.clip(error / full_scale, 0.0, 1.0) * (len(HEAT_COLOURS) - 1)
    anchors = np.arange(len(HEAT_COLOURS))
    channels = [np.interp(position, anchors, HEAT_COLOURS[:, channel]) for channel in range(3)]
    return Image.fromarray(np.round(np.stack(channels, axis=2)).astype(np.uint8))


def framing(seen: Image.Image, image: Image.Image) -> str:
    """How a tokenizer's input relates to the image: the whole image (at its size or resized), or a crop."""
    if seen.size == image.size:
        return "the whole input, at its own size"
    if abs(seen.width * image.height - seen.height * image.width) <= max(image.size):  # same aspect
        return f"the whole input, resized from {image.width}x{image.height}"
    return f"a center crop of the {image.width}x{image.height} input, at the model's fixed size"


@torch.inference_mode()
def reconstruct_one(tokenizer: Tokenizer, image: Image.Image, seed: int = 0) -> RoundTrip:
    """What ``tokenizer`` saw of ``image`` (its processor's output, postprocessed) and its reconstruction."""
    processor = tokenizer.processor
    seen = processor.postprocess(processor([image], return_tensors="pt"))[0]
    generator = torch.Generator().manual_seed(seed)
    encoded, (reconstruction,) = encode_decode(tokenizer.model, processor, [image], generator)
    if reconstruction.size != seen.size:
        raise ValueError(f"{tokenizer.name}: reconstruction {reconstruction.size} != its input {seen.size}")
    tokens = tokens_per_image(encoded)[0]
    original, result = to_tensor(seen), to_tensor(reconstruction)
    row = [
        tokenizer.name,
        f"{seen.width}x{seen.height}",
        tokens,
        round(bits_per_pixel(tokenizer, encoded, tokens, seen.width * seen.height), 4),
        round(float(psnr(result, original)[0]), 2),
        round(float(ssim(result, original)[0]), 4),
    ]
    return RoundTrip(seen, reconstruction, error_heatmap(seen, reconstruction), row)


def for_display(image: Image.Image, side: int = DISPLAY_SIDE) -> Image.Image:
    """``image`` upscaled by the largest whole factor (nearest neighbour: pixels stay sharp squares) that keeps
    its longest side within ``side``; images of ``side / 2`` and more unchanged."""
    factor = max(1, side // max(image.size))
    return image if factor == 1 else image.resize((image.width * factor, image.height * factor), Image.NEAREST)


@torch.inference_mode()
def generate_samples(generator: Generator, class_id, num_images, steps, guidance_scale, seed) -> list[Image.Image]:
    """``num_images`` samples of one class at the pipeline's size; image ``i`` from seed ``seed + i``, as
    ``hf-vtok generate --class ID --seed SEED`` makes them."""
    num_classes = len(generator.class_names)
    if class_id is None or not 0 <= int(class_id) < num_classes:
        raise gr.Error(f"the class id must be in 0..{num_classes - 1}, got {class_id!r}")
    pipeline, count = generator.pipeline, int(num_images)
    kwargs = call_arguments(pipeline, {"num_inference_steps": int(steps), "guidance_scale": float(guidance_scale)})
    seeds = [int(seed) + index for index in range(count)]
    images = generate_images(pipeline, [int(class_id)] * count, seeds, batch_size=count, **kwargs)
    return pipeline.numpy_to_pil(images.permute(0, 2, 3, 1).numpy())


def comparison(label: str, elem_id: str):
    """The before/after view: gradio's ImageSlider, or (gradio without it) a two-image gallery."""
    if HAS_IMAGE_SLIDER:
        return gr.ImageSlider(label=label, type="pil", format="png", elem_id=elem_id, max_height=600)
    return gr.Gallery(label=label, columns=2, object_fit="contain", format="png", elem_id=elem_id)


def build_demo(
    tokenizers: dict[str, Tokenizer], generators: dict[str, Generator] | None = None, max_side: int = MAX_SIDE
) -> gr.Blocks:
    if not tokenizers:
        raise ValueError("the demo needs at least one tokenizer")
    generators = generators or {}
    names = list(tokenizers)

    def reconstruct(image, chosen):
        if not chosen:
            raise gr.Error("choose at least one tokenizer")
        image, notice = prepare(image, max_side)
        rows, panels = [], []
        for name in names:
            if name not in chosen:
                panels += [gr.Column(visible=False), gr.update(), gr.update(), gr.update()]
                continue
            result = reconstruct_one(tokenizers[name], image)
            rows.append(result.row)
            seen, reconstruction = for_display(result.seen), for_display(result.reconstruction)
            caption = (
                f"**{name}** saw {result.row[1]}: {framing(result.seen, image)}. {result.row[2]} tokens, "
                f"{result.row[4]} dB PSNR. Slider: what it saw (left) | its reconstruction (right)."
            )
            pair = (seen, reconstruction) if HAS_IMAGE_SLIDER else [(seen, "saw"), (reconstruction, "reconstruction")]
            panels += [gr.Column(visible=True), caption, pair, for_display(result.error_map)]
        return [notice, rows, *panels]

    def generate(name, class_id, num_images, steps, guidance_scale, seed):
        if name not in generators:
            raise gr.Error(f"no pipeline {name!r} in this demo (--pipeline NAME=PATH)")
        samples = generate_samples(generators[name], class_id, num_images, steps, guidance_scale, seed)
        label = generators[name].choices[int(class_id)][0]
        return [(for_display(sample), f"{label}, seed {int(seed) + index}") for index, sample in enumerate(samples)]

    def pipeline_settings(name):
        generator = generators[name]
        return (
            gr.Dropdown(choices=generator.choices, value=default_class(generator)),
            gr.Slider(value=generator.defaults.get("num_inference_steps", 25)),
            gr.Slider(value=generator.defaults.get("guidance_scale", 1.5)),
        )

    with gr.Blocks(title="hf_vtok: visual tokenizers") as demo:
        gr.Markdown(
            "# hf_vtok visual tokenizers\nEncode an image into tokens and decode it back. Bits per pixel count "
            f"a token id as log2(vocabulary) bits and a continuous latent value as {CONTINUOUS_BITS} bits."
        )
        with gr.Tab("Reconstruct"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="pil", label="image", elem_id="input-image")
                    chosen = gr.CheckboxGroup(names, value=names[:1], label="tokenizers", elem_id="tokenizers")
                    button = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                    if EXAMPLES:
                        gr.Examples(EXAMPLES, inputs=image, label="bundled photos")
                with gr.Column(scale=2):
                    notice = gr.Markdown(elem_id="resize-notice")
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="metrics", elem_id="metrics", interactive=False)
                    gr.Markdown(
                        "Error maps: per-pixel |reconstruction - input| averaged over RGB, from black (0) through "
                        f"red to pale yellow ({round(ERROR_FULL_SCALE * 255)}/255 or more); images under "
                        f"{DISPLAY_SIDE} px are shown enlarged with nearest-neighbour pixels."
                    )
                    panels = []
                    for index, name in enumerate(names):
                        with gr.Column(visible=False, elem_id=f"panel-{index}") as panel:
                            caption = gr.Markdown(elem_id=f"caption-{index}")
                            with gr.Row():
                                pair = comparison(f"{name}: what it saw | reconstruction", f"comparison-{index}")
                                error = gr.Image(label=f"{name}: error map", format="png", elem_id=f"error-{index}")
                        panels += [panel, caption, pair, error]
            button.click(reconstruct, [image, chosen], [notice, table, *panels], api_name="reconstruct")
        with gr.Tab("Generate"):
            if generators:
                first_name = next(iter(generators))
                first = generators[first_name]
                with gr.Row():
                    with gr.Column(scale=1):
                        pipeline_name = gr.Dropdown(list(generators), value=first_name, label="pipeline")
                        class_id = gr.Dropdown(
                            first.choices, value=default_class(first), label="class", elem_id="class-name"
                        )
                        num_images = gr.Slider(1, 16, value=8, step=1, label="images")
                        steps = gr.Slider(
                            1, 250, value=first.defaults.get("num_inference_steps", 25), step=1, label="steps"
                        )
                        guidance = gr.Slider(
                            1.0, 10.0, value=first.defaults.get("guidance_scale", 1.5), step=0.05, label="guidance"
                        )
                        seed = gr.Number(0, precision=0, label="seed (image i uses seed + i)")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    samples = gr.Gallery(
                        label="samples", columns=4, object_fit="contain", format="png", elem_id="samples"
                    )
                pipeline_name.change(pipeline_settings, pipeline_name, [class_id, steps, guidance])
                generate_button.click(
                    generate,
                    [pipeline_name, class_id, num_images, steps, guidance, seed],
                    samples,
                    api_name="generate",
                )
            else:
                gr.Markdown("Start the demo with `--pipeline NAME=PATH` (an hf_vtok pipeline folder or Hub id).")
    return demo


def default_class(generator: Generator) -> int:
    """The class the dropdown starts on: 207 (golden retriever) for ImageNet, else the first."""
    return 207 if len(generator.class_names) == 1000 else 0


def _named(values: list[str], option: str) -> dict[str, str]:
    named = {}
    for value in values:
        name, separator, path = value.partition("=")
        if not separator:
            name, path = Path(value.rstrip("/")).name, value
        if not name or not path:
            raise SystemExit(f"{option} takes NAME=PATH (or a PATH), got {value!r}")
        named[name] = path
    return named


def space_config(path: Path = SPACE_CONFIG) -> dict:
    """``space.json``: ``{"models": {name: folder or Hub id}, "pipelines": {...}, "max_side": int}``; relative
    folders are relative to it. ``{}`` where there is none."""
    if not path.is_file():
        return {}
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("models", "pipelines"):
        config[key] = {
            name: str(path.parent / where) if (path.parent / where).is_dir() else where
            for name, where in config.get(key, {}).items()
        }
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a tokenizer (repeatable)")
    parser.add_argument("--pipeline", action="append", default=[], metavar="NAME=PATH", help="a generation pipeline")
    parser.add_argument("--max-side", type=int, default=None, help=f"longest side of inputs (default {MAX_SIDE})")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    config = space_config()
    models = _named(args.model, "--model") or config.get("models") or {DEFAULT_TOKENIZER: default_model_path()}
    pipelines = (
        _named(args.pipeline, "--pipeline") or config.get("pipelines") or {DEFAULT_PIPELINE: default_pipeline_path()}
    )
    max_side = args.max_side or config.get("max_side", MAX_SIDE)
    print(f"hf_vtok from {Path(hf_vtok.__file__).parent}", flush=True)  # which copy a Space runs (its logs)
    demo = build_demo(load_tokenizers(models), load_pipelines(pipelines), max_side)
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
