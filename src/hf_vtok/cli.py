"""The ``hf-vtok`` command (its sub-commands live in ``hf_vtok.commands``).

hf-vtok convert --preset vitok-v2-350M-f16x64 --output vitok-350M      (hf-vtok convert --list: every release)
hf-vtok convert vitok --encoder encoder.safetensors --decoder decoder.safetensors --output vitok
hf-vtok reconstruct --model vitok-350M photo.jpg other.png --out recon/
hf-vtok eval --model vitok-350M --model other-tokenizer --data images/ --metrics psnr,ssim,lpips,rfid
hf-vtok eval-generation --pipeline sit-xl --num-samples 50000 --guidance-scale 1.5 --reference ref.npz
hf-vtok cache-llm-vocabulary --llm Llama-2-7b-hf --output llama2_vocabulary.safetensors
hf-vtok cache-latents --model softvq-l-64 --images imagenet/train --output cache/ --resolution 256 --flip
"""

import argparse
import importlib
import sys

from .utils.errors import DEBUG_FLAG, ArgumentParser, report_error, split_debug_flag

# command -> (module of hf_vtok.commands with add_arguments(parser) and run(args), help)
COMMANDS = {
    "reconstruct": ("reconstruct", "encode and decode images, write the reconstructions"),
    "eval": ("evaluate", "score tokenizers' reconstructions (PSNR, SSIM, LPIPS, rFID, FDD) on an image data set"),
    "eval-generation": ("evaluate_generation", "score a class-conditional pipeline's samples (gFID, Inception Score)"),
    "cache-latents": (
        "cache_latents",
        "encode images with a tokenizer or diffusers autoencoder into a resumable Arrow cache",
    ),
    "cache-llm-vocabulary": (
        "cache_llm_vocabulary",
        "extract an LLM's embed_tokens matrix to a safetensors file (V2Flow's visual vocabulary)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    from .commands import convert

    parser = ArgumentParser(prog="hf-vtok", description="HuggingFace-native visual tokenizers")
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the traceback of an error (anywhere on the command line)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    convert.add_arguments(subparsers)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"hf_vtok.commands.{module_name}")
        command = subparsers.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or "").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv=None, *, raise_errors: bool | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    An error is one line on stderr and exit status 1 (130 for Ctrl-C), with ``--debug`` the traceback too;
    ``raise_errors`` (default: True when ``argv`` is given, i.e. called from Python) raises it instead.
    """
    from .utils.images import image_pixel_limit, max_image_pixels

    arguments, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if raise_errors is None:
        raise_errors = argv is not None
    try:
        with image_pixel_limit(max_image_pixels()):  # a command's --max-pixels ends with it (in-process calls)
            args.handler(args)
    except (Exception, KeyboardInterrupt) as error:
        if raise_errors:
            raise
        return report_error(f"hf-vtok {args.command}", error, debug)
    return 0


if __name__ == "__main__":
    sys.exit(main())
