"""The `lookalike` command: a thin shell over the library.

Each command family has a module that registers its own subcommands (`data`: fetch, show,
embed, model; `index`: index build|add|info|remove|compact|verify|duplicates, search, grid; `bench`;
`calibrate`; `eval`; `demo`; `serve`), each subcommand
naming the function that runs it. Errors become messages here and nowhere else, by type:

==== ==================================================================================
exit meaning
==== ==================================================================================
0    done
1    some inputs failed (a query image could not be read), a file could not be written
     or read (`WriteError`, `OSError`), memory ran out, or a bench backend disagreed with
     the float64 reference: one line on stderr
2    a usage or data error: a bad option (argparse) or a `LookalikeError` (a missing
     index, an unreadable source, `-k 0`, ...): one line on stderr, no traceback
70   an internal error, that is a bug: the traceback, then a line that says so
130  interrupted (Ctrl-C); finished work is kept
==== ==================================================================================
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import LookalikeError
from ..text import printable
from . import bench, calibrate, data, demo, eval, index, serve
from .common import bound_options

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed; a file could not be written or read
EXIT_USAGE = 2  # bad options, LookalikeError (its own exit_code may say otherwise)
EXIT_INTERNAL = 70  # a bug (EX_SOFTWARE in BSD's sysexits.h)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

COMMAND_MODULES = (data, index, bench, calibrate, eval, demo, serve)
BUG = "lookalike: internal error (a bug; please report it with the traceback above)"


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line that names the command and the option."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each command module registers its own subcommands."""
    parser = Parser(prog="lookalike", description="Search by image: CNN features + exact kNN.",
                    epilog="Exit status: 0 done, 1 some inputs failed or a file could not be written, "
                           "2 usage or data error, 70 internal error (a bug), 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    bound_options(parser)  # every number a user can type has its bound (common.BOUNDS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line (default: `sys.argv[1:]`); returns the exit status.

    `--help`, `--version` and usage errors end in `SystemExit`, as argparse does. Ctrl-C is
    exit status 130 from the first moment: while the parser loads (torch, ~1 s) too.
    """
    args = None
    try:
        argv = index.expand_shorthand(sys.argv[1:] if argv is None else argv)
        args = _interrupts_held(build_parser).parse_args(argv)
        _notices(not args.quiet)
        return args.run(args) or EXIT_OK
    except LookalikeError as exc:  # a user's mistake or an unusable input, InvalidParameter included
        _say(f"lookalike: error: {printable(exc)}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("lookalike: interrupted" + ("; finished work is kept, run the same command again to resume"
                                         if _resumes(args) else ""))
        return EXIT_INTERRUPTED
    except MemoryError as exc:  # the machine's answer too: sizes are bounded up front, this is the net below
        _say(f"lookalike: error: out of memory ({str(exc).splitlines()[0][:200] if str(exc) else 'MemoryError'}); "
             "ask for less")
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (`lookalike index info ix | head -3`): nothing to say
        _silence_stdout()
        return EXIT_FAILED
    except OSError as exc:  # the machine's answer (disk full, no permission), not a bug
        reason = printable(exc.strerror or str(exc) or type(exc).__name__)
        where = f"{printable(exc.filename)}: " if exc.filename else ""
        _say(f"lookalike: error: {where}{reason}")
        return EXIT_FAILED
    except Exception:  # anything else is a bug: keep its traceback
        traceback.print_exc()
        _say(BUG)
        return EXIT_INTERNAL
    finally:  # a command's notices end with it (main may run in a process that goes on)
        _notices(False)


class _Notice(logging.Handler):
    """A library notice as a line on stderr (whichever stderr is current: tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        _say(f"lookalike: {record.getMessage()}")


_NOTICE = _Notice()


# the commands whose finished work an interrupted run keeps (downloads, chunks of features,
# an index's staging folder); the others write their outputs whole or not at all
RESUMABLE = {"fetch", "embed", "demo", "index build", "index add"}


def _resumes(args) -> bool:
    """Whether the interrupted command line `args` (None: not parsed yet) keeps its finished work."""
    if args is None:
        return False
    name = args.command if args.command != "index" else f"index {getattr(args.run, '__name__', '')}"
    return name in RESUMABLE


def _notices(shown: bool) -> None:
    """Show the library's notices of long one-off work (a calibration measured on first use),
    unless -q: a first search that measures for a minute should not sit silent."""
    log = logging.getLogger("lookalike.calibrate")
    log.setLevel(logging.INFO)
    log.propagate = False
    if shown and _NOTICE not in log.handlers:
        log.addHandler(_NOTICE)
    elif not shown:
        log.removeHandler(_NOTICE)


def _interrupts_held(fn):
    """fn(), with Ctrl-C held back until it returns: building the parser imports torch and
    numba, whose C++ initialisation aborts the whole process when an interrupt lands inside it
    (SIGABRT: "terminate called after throwing an instance of 'pybind11::error_already_set'",
    seen at 0.4 s). Held back, the interrupt comes right after, as exit 130. Only the main
    thread (the one Python delivers signals to) blocks it, where the platform can: enough at
    a command line's start, when it is the only thread (threads started meanwhile inherit the
    block); a process-directed signal would reach another thread that does not block it."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        return fn()
    before = mask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return fn()
    finally:
        mask(signal.SIG_SETMASK, before)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit finds no closed pipe to report."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured in a test): nothing to flush into a pipe
        pass


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
