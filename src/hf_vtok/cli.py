"""The ``hf-vtok`` command.

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

# family -> module with add_arguments(parser) and run(args); later families add themselves here
CONVERTERS = {
    "vitok": "hf_vtok.models.vitok.convert_vitok_original_to_hf",
    "softvq": "hf_vtok.models.softvq.convert_softvq_original_to_hf",
    "maetok": "hf_vtok.models.maetok.convert_maetok_original_to_hf",
    "sit": "hf_vtok.models.sit.convert_sit_original_to_hf",
    "dit": "hf_vtok.models.dit_1d.convert_dit_1d_original_to_hf",
    "vitok-dit": "hf_vtok.models.vitok.convert_vitok_dit_original_to_hf",
    "v2flow": "hf_vtok.models.v2flow.convert_v2flow_original_to_hf",
    "flowmo": "hf_vtok.models.flowmo.convert_flowmo_original_to_hf",
}
# other commands: name -> (module with add_arguments(parser) and run(args), help)
TOOLS = {
    "cache-llm-vocabulary": (
        "hf_vtok.models.v2flow.llm_vocabulary",
        "extract an LLM's embed_tokens matrix to a safetensors file (V2Flow's visual vocabulary)",
    ),
}


def _add_convert(subparsers) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert an original release to an hf_vtok folder",
        description="`hf-vtok convert --preset NAME --output DIR` downloads (cached) and converts a released checkpoint "
        "(`--list` shows them); `hf-vtok convert FAMILY ...` converts original files of one family.",
    )
    # dest names differ from the family parsers' (a subparser's defaults would overwrite them)
    convert.add_argument("--preset", dest="registry_preset", metavar="NAME", help="a released checkpoint (see --list)")
    convert.add_argument("--output", dest="registry_output", metavar="DIR", help="output folder (with --preset)")
    convert.add_argument(
        "--pipeline",
        dest="registry_pipeline",
        action="store_true",
        help="generator presets: write the complete pipeline with the tokenizer it was trained on",
    )
    convert.add_argument("--revision", dest="registry_revision", help="commit / branch of the original repository")
    convert.add_argument("--cache-dir", dest="registry_cache_dir", help="Hub cache folder (default: the HF cache)")
    convert.add_argument(
        "--dtype", dest="registry_dtype", choices=["float32", "bfloat16", "float16"], help="cast weights before saving"
    )
    convert.add_argument("--list", dest="registry_list", action="store_true", help="list the released checkpoints")
    convert.set_defaults(handler=_convert_preset)
    families = convert.add_subparsers(dest="family", metavar="FAMILY")
    for family, module_name in CONVERTERS.items():
        module = importlib.import_module(module_name)
        family_parser = families.add_parser(family, help=(module.__doc__ or "").strip().split("\n")[0])
        module.add_arguments(family_parser)
        family_parser.set_defaults(handler=module.run)


def _convert_preset(args) -> str | None:
    from . import pretrained

    if args.registry_list:
        print(pretrained.format_registry())
        return None
    if not (args.registry_preset and args.registry_output):
        raise ValueError("give --preset NAME --output DIR (--list shows the names), or a FAMILY with its options")
    import torch

    output = pretrained.save_preset(
        args.registry_preset,
        args.registry_output,
        pipeline=args.registry_pipeline,
        dtype=getattr(torch, args.registry_dtype) if args.registry_dtype else None,
        revision=args.registry_revision,
        cache_dir=args.registry_cache_dir,
    )
    print(f"saved {pretrained.get_pretrained(args.registry_preset).name} to {output}")
    return output


def _add_reconstruct(subparsers) -> None:
    from .reconstruct import add_arguments, run

    parser = subparsers.add_parser("reconstruct", help="encode and decode images, write the reconstructions")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def _add_eval(subparsers) -> None:
    from .evaluation import generation, reconstruction

    parser = subparsers.add_parser(
        "eval", help="score tokenizers' reconstructions (PSNR, SSIM, LPIPS, rFID, FDD) on an image data set"
    )
    reconstruction.add_arguments(parser)
    parser.set_defaults(handler=reconstruction.run)
    parser = subparsers.add_parser(
        "eval-generation", help="score a class-conditional pipeline's samples (gFID, Inception Score)"
    )
    generation.add_arguments(parser)
    parser.set_defaults(handler=generation.run)


def _add_tools(subparsers) -> None:
    for name, (module_name, help_text) in TOOLS.items():
        module = importlib.import_module(module_name)
        parser = subparsers.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or "").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(parser)
        parser.set_defaults(handler=module.run)


def _add_cache_latents(subparsers) -> None:
    from .data import latent_cache

    parser = subparsers.add_parser(
        "cache-latents", help="encode images with a tokenizer or diffusers autoencoder into a resumable Arrow cache"
    )
    latent_cache.add_arguments(parser)
    parser.set_defaults(handler=latent_cache.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-vtok", description="HuggingFace-native visual tokenizers")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_convert(subparsers)
    _add_reconstruct(subparsers)
    _add_eval(subparsers)
    _add_cache_latents(subparsers)
    _add_tools(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError, ImportError) as error:
        if argv is not None:  # called from Python: let the caller see the exception
            raise
        print(f"hf-vtok {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
