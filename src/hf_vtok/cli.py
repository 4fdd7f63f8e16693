"""The ``hf-vtok`` command (its sub-commands live in ``hf_vtok.commands``).

examples:
  hf-vtok reconstruct photo.jpg --out recon/                   (the small ViTok embedded in the package)
  hf-vtok convert --preset vitok-v2-350M-f16x64 --output vitok-350M      (hf-vtok convert --list: every release)
  hf-vtok convert vitok --encoder encoder.safetensors --decoder decoder.safetensors --output vitok
  hf-vtok reconstruct --model vitok-350M photo.jpg other.png --out recon/
  hf-vtok eval --model vitok-350M --model other-tokenizer --data images/ --metrics psnr,ssim,lpips,rfid
  hf-vtok eval-generation --pipeline sit-xl --num-samples 50000 --guidance-scale 1.5 --reference ref.npz
  hf-vtok cache-llm-vocabulary --llm Llama-2-7b-hf --output llama2_vocabulary.safetensors
  hf-vtok cache-latents --model softvq-l-64 --images imagenet/train --output cache/ --resolution 256 --flip

`hf-vtok COMMAND --help` shows a command's options, their defaults and an example.
"""

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from .commands import HelpFormatter, describe
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
    "generate": (
        "generate",
        "images of given classes from a class-conditional pipeline (default: the embedded digits SiT)",
    ),
}
CONVERT = "convert"
CONVERT_HELP = "convert an original release to an hf_vtok folder"


def chosen_command(arguments: Sequence[str]) -> str | None:
    """The sub-command a command line names (its first word; the only top-level options are -h and --debug)."""
    for item in arguments:
        if not item.startswith("-"):
            return item if item == CONVERT or item in COMMANDS else None
        if item in ("-h", "--help"):
            return None
    return None


def build_parser(
    arguments: Sequence[str] | None = None, import_package: Callable[[], None] | None = None
) -> argparse.ArgumentParser:
    """The ``hf-vtok`` parser. Without ``arguments`` every sub-command is built in full; with them only the one
    they name (the others list their one-line help), so ``hf-vtok --help`` imports no command module, torch or
    transformers. ``import_package`` runs before a command module is imported (``hf_vtok_cli``: the package's own
    import, deferred past parsing)."""
    parser = ArgumentParser(
        prog="hf-vtok",
        description="HuggingFace-native visual tokenizers",
        epilog=describe(__doc__.split("\n\n", 1)[1]),
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        DEBUG_FLAG, action="store_true", help="show the traceback of an error (anywhere on the command line)"
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = {CONVERT, *COMMANDS} if arguments is None else {chosen_command(arguments)}
    if wanted - {None} and import_package is not None:
        import_package()
    if CONVERT in wanted:
        from .commands import convert

        convert.add_arguments(subparsers, CONVERT_HELP)
    else:
        subparsers.add_parser(CONVERT, help=CONVERT_HELP)
    for name, (module_name, help_text) in COMMANDS.items():
        if name not in wanted:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(f"hf_vtok.commands.{module_name}")
        command = subparsers.add_parser(
            name, help=help_text, description=describe(module.__doc__), formatter_class=HelpFormatter
        )
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv=None, *, raise_errors: bool | None = None, import_package: Callable[[], None] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    An error is one line on stderr and exit status 1 (130 for Ctrl-C), with ``--debug`` the traceback too;
    ``raise_errors`` (default: True when ``argv`` is given, i.e. called from Python) raises it instead.
    ``import_package``: see ``build_parser``.
    """
    arguments, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments, import_package).parse_args(arguments)
    if raise_errors is None:
        raise_errors = argv is not None
    from .utils.images import image_pixel_limit, max_image_pixels

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
