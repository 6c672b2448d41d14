"""`python -m lookalike`: the command line. Ctrl-C, even while Python imports it, ends in
one line and exit status 130, not a traceback."""

import signal
import sys


def entry() -> int:
    """Import the command line and run it; an interrupt during the import is one line too."""
    try:
        from .cli import EXIT_INTERRUPTED, main
    except KeyboardInterrupt:
        print("lookalike: interrupted", file=sys.stderr, flush=True)
        return 130
    try:
        return main()
    except KeyboardInterrupt:  # between main's own handlers, or while it reports
        print("lookalike: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    finally:  # done and reported: a Ctrl-C while Python shuts down changes nothing
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(entry())
