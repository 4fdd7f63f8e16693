"""hf_vtok demo (a Gradio app, ready for a Hugging Face Space).

    pip install "hf_vtok[demo]"
    python spaces/app.py                                  # the small ViTok embedded in hf_vtok
    python spaces/app.py --model vitok=vitok-350M-f16x64 --model maetok=maetok-b-128 \
        --pipeline sit=sit-xl_maetok-b-128 --port 7860

Reconstruction tab: upload an image or pick a bundled photo, choose one or more tokenizers, and see
the reconstructions side by side with the token count, bits per pixel, PSNR and SSIM of each.
Generation tab: class-conditional samples of a pipeline (given with ``--pipeline``). Models are hf_vtok
folders or Hub ids (``hf-vtok convert --preset ... --output DIR`` makes them from the released
checkpoints); without ``--model`` the demo runs on the embedded default model, with no download.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import hf_vtok  # noqa: E402, F401  (registers the Auto classes)
from hf_vtok.commands.evaluate import tokens_per_image  # noqa: E402
from hf_vtok.commands.reconstruct import (  # noqa: E402
    default_model_path,
    encode_decode,
    processor_for_any_size,
)
from hf_vtok.hub.loading import load_tokenizer  # noqa: E402
from hf_vtok.metrics import psnr, ssim  # noqa: E402
from hf_vtok.utils.images import ImageTooLargeError, adm_center_crop, check_image_size  # noqa: E402

EXAMPLES = sorted(str(path) for path in (Path(__file__).resolve().parent / "examples").glob("*.jpg"))
MAX_SIDE = 256  # inputs are downscaled to this longest side: the demo runs on a CPU
CONTINUOUS_BITS = 16  # a continuous latent value counts as one float16


@dataclass
class Tokenizer:
    name: str
    model: torch.nn.Module
    processor: object

    @property
    def fixed_size(self) -> int | None:
        """Side of the square images the model takes (None: any size, e.g. ViTok's NaFlex)."""
        processor_sized = hasattr(self.processor, "max_num_patches")
        return None if processor_sized else getattr(self.model.config, "image_size", None)


def load_tokenizers(specs: dict[str, str], device: str = "cpu") -> dict[str, Tokenizer]:
    tokenizers = {}
    for name, model_id in specs.items():
        model, processor = load_tokenizer(model_id, device, torch.float32)
        tokenizers[name] = Tokenizer(name, model, processor_for_any_size(processor))
    return tokenizers


def load_pipelines(specs: dict[str, str], device: str = "cpu") -> dict:
    from diffusers import DiffusionPipeline

    pipelines = {}
    for name, path in specs.items():
        config = DiffusionPipeline.load_config(path)
        pipeline_class = getattr(hf_vtok, config["_class_name"], None)
        if pipeline_class is None:
            raise ValueError(f"{path}: {config['_class_name']} is not an hf_vtok pipeline")
        pipelines[name] = pipeline_class.from_pretrained(path).to(device)
        pipelines[name].set_progress_bar_config(disable=True)
    return pipelines


def prepare(image) -> Image.Image:
    if image is None:
        raise gr.Error("upload an image or pick one of the examples")
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    try:  # the pixel limit of every hf_vtok entry point (HF_VTOK_MAX_IMAGE_PIXELS)
        check_image_size(image.width, image.height, "the image")
    except ImageTooLargeError as error:
        raise gr.Error(str(error)) from None
    image = image.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
    return image


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


@torch.inference_mode()
def reconstruct_one(tokenizer: Tokenizer, image: Image.Image, seed: int = 0):
    """``(framed input, reconstruction, metrics row)`` of one tokenizer."""
    framed = adm_center_crop(image, tokenizer.fixed_size) if tokenizer.fixed_size else image
    generator = torch.Generator().manual_seed(seed)
    encoded, (reconstruction,) = encode_decode(tokenizer.model, tokenizer.processor, [framed], generator)
    tokens = tokens_per_image(encoded)[0]
    pixels = framed.width * framed.height
    original, result = to_tensor(framed), to_tensor(reconstruction)
    row = [
        tokenizer.name,
        f"{framed.width}x{framed.height}",
        tokens,
        round(bits_per_pixel(tokenizer, encoded, tokens, pixels), 4),
        round(float(psnr(result, original)[0]), 2),
        round(float(ssim(result, original)[0]), 4),
    ]
    return framed, reconstruction, row


@torch.inference_mode()
def generate_sample(pipe, class_label, steps, guidance_scale, seed) -> Image.Image:
    """One class-conditional sample of a pipeline."""
    num_classes = pipe.transformer.config.num_classes
    if not 0 <= int(class_label) < num_classes:
        raise gr.Error(f"the class id must be in 0..{num_classes - 1}")
    return pipe(
        class_labels=[int(class_label)],
        num_inference_steps=int(steps),
        guidance_scale=float(guidance_scale),
        generator=torch.Generator().manual_seed(int(seed)),
    ).images[0]


TABLE_HEADERS = ["tokenizer", "input", "tokens", "bits / pixel", "PSNR (dB)", "SSIM"]


def build_demo(tokenizers: dict[str, Tokenizer], pipelines: dict | None = None) -> gr.Blocks:
    if not tokenizers:
        raise ValueError("the demo needs at least one tokenizer")
    pipelines = pipelines or {}
    names = list(tokenizers)

    def reconstruct(image, chosen):
        if not chosen:
            raise gr.Error("choose at least one tokenizer")
        image = prepare(image)
        gallery, rows = [(image, f"input {image.width}x{image.height}")], []
        for name in chosen:
            _, reconstruction, row = reconstruct_one(tokenizers[name], image)
            gallery.append((reconstruction, f"{name}: {row[2]} tokens, {row[4]} dB"))
            rows.append(row)
        return gallery, rows

    def generate(name, class_label, steps, guidance_scale, seed):
        if name not in pipelines:
            raise gr.Error("no pipeline was given to this demo (--pipeline NAME=PATH)")
        return generate_sample(pipelines[name], class_label, steps, guidance_scale, seed)

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
                    gallery = gr.Gallery(
                        label="input and reconstructions",
                        columns=len(names) + 1,
                        format="png",
                        elem_id="reconstructions",
                    )
                    table = gr.Dataframe(headers=TABLE_HEADERS, label="metrics", elem_id="metrics", interactive=False)
            button.click(reconstruct, [image, chosen], [gallery, table], api_name="reconstruct")
        with gr.Tab("Generate"):
            if pipelines:
                with gr.Row():
                    with gr.Column(scale=1):
                        pipeline_name = gr.Dropdown(list(pipelines), value=next(iter(pipelines)), label="pipeline")
                        class_label = gr.Number(207, precision=0, label="ImageNet class id")
                        steps = gr.Slider(1, 250, value=25, step=1, label="steps")
                        guidance = gr.Slider(1.0, 10.0, value=1.5, step=0.05, label="guidance scale")
                        seed = gr.Number(0, precision=0, label="seed")
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    sample = gr.Image(label="sample", format="png", elem_id="sample")
                generate_button.click(
                    generate, [pipeline_name, class_label, steps, guidance, seed], sample, api_name="generate"
                )
            else:
                gr.Markdown("Start the demo with `--pipeline NAME=PATH` (an hf_vtok pipeline folder or Hub id).")
    return demo


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a tokenizer (repeatable)")
    parser.add_argument("--pipeline", action="append", default=[], metavar="NAME=PATH", help="a generation pipeline")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    models = _named(args.model, "--model") or {"default ViTok": default_model_path()}
    demo = build_demo(load_tokenizers(models), load_pipelines(_named(args.pipeline, "--pipeline")))
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
