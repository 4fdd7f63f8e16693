"""The ``hf-vtok`` command.

    hf-vtok convert vitok --preset 350M-f16x64 --output vitok-350M
    hf-vtok reconstruct --model vitok-350M photo.jpg other.png --out recon/
"""

import argparse
import importlib
import sys

# family -> module with add_arguments(parser) and run(args); later families add themselves here
CONVERTERS = {
    "vitok": "hf_vtok.models.vitok.convert_vitok_original_to_hf",
    "flowmo": "hf_vtok.models.flowmo.convert_flowmo_original_to_hf",
}


def _add_convert(subparsers) -> None:
    convert = subparsers.add_parser("convert", help="convert an original release to an hf_vtok folder")
    families = convert.add_subparsers(dest="family", required=True, metavar="FAMILY")
    for family, module_name in CONVERTERS.items():
        module = importlib.import_module(module_name)
        family_parser = families.add_parser(family, help=(module.__doc__ or "").strip().split("\n")[0])
        module.add_arguments(family_parser)
        family_parser.set_defaults(handler=module.run)


def _add_reconstruct(subparsers) -> None:
    from .reconstruct import add_arguments, run

    parser = subparsers.add_parser("reconstruct", help="encode and decode images, write the reconstructions")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-vtok", description="HuggingFace-native visual tokenizers")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_reconstruct(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as error:
        if argv is not None:  # called from Python: let the caller see the exception
            raise
        print(f"hf-vtok {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
