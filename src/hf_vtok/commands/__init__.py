"""The ``hf-vtok`` sub-commands (application layer): each module has ``add_arguments(parser)`` and ``run(args)``, and a
docstring whose first paragraph after the title holds an example command line (shown by ``--help``).

This package module stays light (argparse only): ``hf_vtok.cli`` imports it to parse before anything heavy."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its example lines kept) and every option's default, where it has one worth
    showing (not None / False / empty) that its help does not already mention."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and default != []
            and "default" not in text.lower()
            and "%(default)" not in text
        )
        return f"{text} (default: %(default)s)" if shown else text


def describe(docstring: str | None) -> str:
    """A module docstring as an argparse description: its reST literals (````x````) as plain ``x``."""
    return (docstring or "").strip().replace("``", "")
