"""How the command-line entry points (``hf-vtok``, ``training_scripts/*.py``) report an error: one line on stderr
and a non-zero exit status; the traceback only with ``--debug``."""

import argparse
import sys
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
MAX_MESSAGE = 1000  # characters of an error line (a list of mismatched keys can be long)
# errors a user's input, files, machine or network cause: their message is the whole story
USER_ERRORS = (ValueError, OSError, RuntimeError, LookupError, ImportError, EOFError, MemoryError, ArithmeticError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``prog: error: ... (--help shows the options)``), like every other
    error of the entry points."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help shows the options)\n")


def error_line(error: BaseException) -> str:
    """An exception as one line: whitespace (the newlines of multi-line messages) collapsed, the type named when it
    is not an error of the user's input, long messages cut."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, USER_ERRORS):
        message = f"{type(error).__name__}: {message}"
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + f"... ({DEBUG_FLAG} shows all)"
    return message


def split_debug_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (anywhere before a ``--``), and whether it was there."""
    arguments = list(argv)
    separator = arguments.index("--") if "--" in arguments else len(arguments)
    debug = DEBUG_FLAG in arguments[:separator]
    if debug:
        arguments = [item for index, item in enumerate(arguments) if item != DEBUG_FLAG or index > separator]
    return arguments, debug


def print_error(line: str) -> None:
    """``line`` on stderr, on a line of its own where a progress bar is drawn (terminals only)."""
    tqdm = sys.modules.get("tqdm.std")
    if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
        tqdm.tqdm.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def report_error(prog: str, error: BaseException, debug: bool = False) -> int:
    """Print ``error`` as ``prog: error: ...`` (after its traceback with ``debug``); returns the exit status."""
    if isinstance(error, KeyboardInterrupt):
        print_error(f"{prog}: interrupted")
        return 130
    if debug:
        import traceback

        traceback.print_exception(error)
    print_error(f"{prog}: error: {error_line(error)}")
    return 1


def run_script(main: Callable, prog: str, argv: Sequence[str] | None = None) -> int:
    """``main(argv)`` of a script's ``__main__`` block with one-line errors (``--debug``: the traceback too);
    returns the exit status for ``sys.exit``. ``SystemExit`` (argparse, a training run stopped by a signal)
    passes through."""
    arguments, debug = split_debug_flag(sys.argv[1:] if argv is None else argv)
    try:
        main(arguments)
    except (Exception, KeyboardInterrupt) as error:
        return report_error(prog, error, debug)
    return 0


__all__ = [
    "DEBUG_FLAG",
    "ArgumentParser",
    "error_line",
    "print_error",
    "report_error",
    "run_script",
    "split_debug_flag",
]
