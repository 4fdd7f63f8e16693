"""``hf-vtok convert``: original releases to hf_vtok folders, the shell every family converter shares.

    hf-vtok convert --preset vitok-v2-350M-f16x64 --output vitok-350M   (hf-vtok convert --list: every release)
    hf-vtok convert vitok --encoder encoder.safetensors --decoder decoder.safetensors --output vitok
    hf-vtok convert sit --preset sit-xl_maetok-b-128 --pipeline --output sit-pipeline

``hf-vtok convert FAMILY`` has one sub-command per family of ``hf_vtok.registry`` with a converter: the
family's ``CONVERTER`` (``hf_vtok.conversion.Converter``) names its files and options; this module adds
``--preset`` (downloads the release's files when none is given), ``--output``, ``--dtype`` and, for
generators, the tokenizer that makes the output a complete pipeline.
"""

from __future__ import annotations

import argparse
import functools
import importlib

from ..conversion import finish_conversion
from ..hub.presets import build_pipeline, convert_pretrained, converter_of, download_pretrained, save_preset
from ..registry import GENERATOR, PRETRAINED, families, family_presets, format_registry, get_family, get_pretrained
from ..utils.checkpoints import UnsafeCheckpointError
from ..utils.dtypes import DTYPES, dtype_from_name
from ..utils.outputs import check_output_folder, staged_folder

OVERWRITE_HELP = "replace a non-empty --output folder that holds a saved model (refused otherwise)"
NON_FINITE_HELP = "convert weights holding NaN / inf values (refused otherwise)"


def add_arguments(subparsers) -> None:
    """The ``convert`` command and one sub-command per family converter."""
    convert = subparsers.add_parser(
        "convert",
        help="convert an original release to an hf_vtok folder",
        description="`hf-vtok convert --preset NAME --output DIR` downloads (cached) and converts a released "
        "checkpoint (`--list` shows them); `hf-vtok convert FAMILY ...` converts original files of one family.",
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
    convert.add_argument("--dtype", dest="registry_dtype", choices=sorted(DTYPES), help="cast weights before saving")
    convert.add_argument("--list", dest="registry_list", action="store_true", help="list the released checkpoints")
    convert.add_argument("--overwrite", dest="registry_overwrite", action="store_true", help=OVERWRITE_HELP)
    convert.add_argument(
        "--allow-non-finite", dest="registry_allow_non_finite", action="store_true", help=NON_FINITE_HELP
    )
    convert.set_defaults(handler=run_preset)
    subcommands = convert.add_subparsers(dest="family", metavar="FAMILY")
    for spec in families():
        if spec.converter is not None:
            add_family_parser(subcommands, spec)


def add_family_parser(subcommands, spec) -> argparse.ArgumentParser:
    """``hf-vtok convert <family>``: the shared options, the family's files, then its own options."""
    converter = converter_of(spec.name)
    doc = (importlib.import_module(spec.converter).__doc__ or "").strip()
    parser = subcommands.add_parser(
        spec.command,
        help=doc.split("\n")[0],
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    presets = converter.presets if converter.presets is not None else tuple(sorted(family_presets(spec.name)))
    if presets:
        parser.add_argument(
            "--preset", choices=presets, help="released model (downloads its files unless they are given)"
        )
    weight_files = converter.weight_files if converter.weight_files is not None else tuple(converter.files)
    for role, help_text in converter.files.items():
        # without releases to download, a family's only weight file must be given
        required = not presets and len(weight_files) == 1 and role in weight_files
        parser.add_argument(
            f"--{role.replace('_', '-')}", dest=f"file_{role}", metavar="FILE", required=required, help=help_text
        )
    parser.add_argument("--output", required=True, help="output folder (save_pretrained layout)")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), help="cast weights before saving (default: the originals' dtype)"
    )
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--allow-non-finite", action="store_true", help=NON_FINITE_HELP)
    if spec.kind == GENERATOR:
        parser.add_argument("--tokenizer", help="hf_vtok tokenizer folder or Hub id: write a complete pipeline folder")
        parser.add_argument(
            "--tokenizer-preset", help="released tokenizer (softvq-l-64, ...) to convert into a pipeline folder"
        )
        parser.add_argument(
            "--pipeline",
            action="store_true",
            help="write a complete pipeline folder with the tokenizer the --preset generator was trained on",
        )
    converter.add_arguments(parser)
    parser.set_defaults(handler=functools.partial(run_family, spec))
    return parser


def _original_files(converter, spec, args) -> tuple[dict[str, str], object]:
    """The files given on the command line, completed by a download of the ``--preset`` release."""
    files = {role: getattr(args, f"file_{role}") for role in converter.files if getattr(args, f"file_{role}")}
    preset = getattr(args, "preset", None)
    entry = family_presets(spec.name).get(preset) if preset else None
    weight_files = converter.weight_files if converter.weight_files is not None else tuple(converter.files)
    if preset and not any(role in files for role in weight_files):
        if entry is None:
            raise ValueError(f"preset {preset!r} has no released checkpoint; pass the original files")
        files = {**download_pretrained(entry), **files}
    return files, entry


def _pipeline_tokenizer(args, entry, dtype):
    """The tokenizer of a generator's pipeline folder: a folder / Hub id, a converted release, or None."""
    tokenizer, tokenizer_preset = args.tokenizer, args.tokenizer_preset
    if args.pipeline and not (tokenizer or tokenizer_preset):
        if entry is None:
            raise ValueError(
                "--pipeline takes the tokenizer of a --preset generator; otherwise give --tokenizer or "
                "--tokenizer-preset"
            )
        tokenizer_preset = entry.tokenizer
    if tokenizer and tokenizer_preset:
        raise ValueError("give --tokenizer or --tokenizer-preset, not both")
    if tokenizer_preset:
        known = sorted(name for name, release in PRETRAINED.items() if release.kind == "tokenizer")
        if tokenizer_preset not in known:
            raise ValueError(f"unknown tokenizer preset {tokenizer_preset!r}; known: {known}")
        tokenizer = convert_pretrained(tokenizer_preset, dtype=dtype)[0]
    return tokenizer


def identify_checkpoint(path: str) -> str | None:
    """The family whose training checkpoint ``path`` is, by its top-level entries (``Converter.checkpoint_entries``),
    or None. Read with ``weights_only=True`` (``argparse.Namespace`` rebuilt from its attributes only)."""
    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch checkpoint, or holding other objects: nothing to say
        return None
    if not isinstance(content, dict):
        return None
    for spec in families():
        entries = converter_of(spec.name).checkpoint_entries if spec.converter else ()
        if entries and set(entries) <= set(content):
            return spec.name
    return None


def _convert_files(converter, spec, files, **arguments):
    """``converter.convert``; an error on a file that is another family's training checkpoint says so."""
    try:
        return converter.convert(files, **arguments)
    except (ValueError, KeyError) as error:
        for role, path in files.items():
            if not str(path).endswith((".pth", ".pt", ".bin", ".ckpt")):
                continue
            family = identify_checkpoint(str(path))
            if family is not None and family != spec.name:
                other = get_family(family)
                if isinstance(error, UnsafeCheckpointError):
                    why = f"{str(path)!r} holds a pickled {error.global_name}"
                else:
                    why = " ".join(str(error).split())
                raise ValueError(
                    f"--{role.replace('_', '-')} {str(path)!r} is a {other.title} training checkpoint, not a "
                    f"{spec.title} one ({why}); convert it with `hf-vtok convert {other.command}`"
                ) from error
        raise


def run_family(spec, args: argparse.Namespace) -> str:
    """``hf-vtok convert <family> ...``: convert, optionally build the pipeline, save, report."""
    converter = converter_of(spec.name)
    dtype = dtype_from_name(args.dtype)
    output = check_output_folder(args.output, "--output", empty=True, overwrite=args.overwrite)
    files, entry = _original_files(converter, spec, args)
    tokenizer = _pipeline_tokenizer(args, entry, dtype) if spec.kind == GENERATOR else None
    preset = getattr(args, "preset", None)
    result = _convert_files(
        converter, spec, files, dtype=dtype, preset=preset, release=entry, **converter.options(args)
    )
    model = result.model
    sources = " + ".join(str(path) for path in files.values())
    notes = finish_conversion(model, dtype, args.allow_non_finite, source=sources) + list(result.notes)
    size = f"{model.num_parameters() / 1e6:.1f}M parameters"
    with staged_folder(output) as staging:
        if tokenizer is not None:
            pipeline = build_pipeline(spec.name, model, tokenizer, entry.sampling if entry else None)
            pipeline.save_pretrained(staging)
            saved = f"{type(pipeline).__name__} ({type(model).__name__}, {size})"
        else:
            model.save_pretrained(staging)
            if result.processor is not None:
                result.processor.save_pretrained(staging)
            saved = f"{type(model).__name__} ({size})"
    for note in notes:
        print(note)
    print(f"saved {saved} to {args.output}")
    if entry is not None and entry.tokenizer:
        print(f"trained on tokenizer preset {entry.tokenizer!r}; recipe: {dict(entry.sampling)}")
    return args.output


def run_preset(args: argparse.Namespace) -> str | None:
    """``hf-vtok convert --preset NAME --output DIR`` (or ``--list``)."""
    if args.registry_list:
        print(format_registry())
        return None
    if not (args.registry_preset and args.registry_output):
        raise ValueError("give --preset NAME --output DIR (--list shows the names), or a FAMILY with its options")
    entry = get_pretrained(args.registry_preset)
    output = check_output_folder(args.registry_output, "--output", empty=True, overwrite=args.registry_overwrite)
    with staged_folder(output) as staging:
        save_preset(
            entry.name,
            staging,
            pipeline=args.registry_pipeline,
            dtype=dtype_from_name(args.registry_dtype),
            revision=args.registry_revision,
            cache_dir=args.registry_cache_dir,
            allow_non_finite=args.registry_allow_non_finite,
        )
    print(f"saved {entry.name} to {output}")
    return str(output)


__all__ = ["add_arguments", "add_family_parser", "identify_checkpoint", "run_family", "run_preset"]
