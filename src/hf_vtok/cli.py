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
DEBUG_FLAG = "--debug"
MAX_MESSAGE = 1000  # characters of an error line (a list of mismatched keys can be long)
# errors a user's input, files, machine or network cause: their message is the whole story
USER_ERRORS = (ValueError, OSError, RuntimeError, LookupError, ImportError, EOFError, MemoryError, ArithmeticError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``prog: error: ...``), like every other error of the command."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help shows the options)\n")


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


def error_line(error: BaseException) -> str:
    """An exception as one line: whitespace (the newlines of multi-line messages) collapsed, the type named when it
    is not an error of the user's input, long messages cut."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, USER_ERRORS):
        message = f"{type(error).__name__}: {message}"
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f"... ({DEBUG_FLAG} shows all)"
    return message


def main(argv=None, *, raise_errors: bool | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    An error is one line on stderr and exit status 1 (130 for Ctrl-C), with ``--debug`` the traceback too;
    ``raise_errors`` (default: True when ``argv`` is given, i.e. called from Python) raises it instead.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    separator = arguments.index("--") if "--" in arguments else len(arguments)
    debug = DEBUG_FLAG in arguments[:separator]
    if debug:
        arguments = [item for index, item in enumerate(arguments) if item != DEBUG_FLAG or index > separator]
    args = build_parser().parse_args(arguments)
    if raise_errors is None:
        raise_errors = argv is not None
    from .utils.images import image_pixel_limit, max_image_pixels

    try:
        with image_pixel_limit(max_image_pixels()):  # a command's --max-pixels ends with it (in-process calls)
            args.handler(args)
    except KeyboardInterrupt:
        if raise_errors:
            raise
        _print_error(f"hf-vtok {args.command}: interrupted")
        return 130
    except Exception as error:
        if raise_errors:
            raise
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(f"hf-vtok {args.command}: error: {error_line(error)}")
        return 1
    return 0


def _print_error(line: str) -> None:
    """``line`` on stderr, on a line of its own where a progress bar is drawn (terminals only)."""
    tqdm = sys.modules.get("tqdm.std")
    if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
        tqdm.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
