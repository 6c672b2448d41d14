"""The `lookalike` command: a thin shell over the library.

Each command family has a module that registers its own subcommands (`data`: fetch, show,
embed, model; `index`: index build|add|info, search, grid; `bench`; `demo`), each subcommand
naming the function that runs it. Library errors become one-line messages here and nowhere
else: `lookalike: error: ...` on stderr, exit status 2, no traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import LookalikeError
from . import bench, data, demo, index

COMMAND_MODULES = (data, index, bench, demo)


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line that names the command and the option."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each command module registers its own subcommands."""
    parser = Parser(prog="lookalike", description="Search by image: CNN features + exact kNN.")
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line (default: `sys.argv[1:]`); returns the exit status.

    `--help`, `--version` and usage errors end in `SystemExit`, as argparse does.
    """
    argv = index.expand_shorthand(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except LookalikeError as exc:
        print(f"lookalike: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (ValueError, TypeError) as exc:
        if not _is_user_error(exc):
            raise
        print(f"lookalike: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lookalike: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"lookalike: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _is_user_error(exc: Exception) -> bool:
    """ValueErrors raised by our own input checks (estimator parameters, arrays)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "lookalike" in tb.tb_frame.f_code.co_filename
