"""`serve`: the HTTP service over one index (`lookalike.service`); every flag comes from the
service's table of settings (`service/settings.py`), declared there once."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from ..errors import LookalikeError
from .common import whole_number


def number(lo: float, hi: float) -> Callable[[str], float]:
    """The type of an option that must be a finite number in [lo, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        if not (math.isfinite(value) and lo <= value <= hi):
            raise argparse.ArgumentTypeError(f"{text[:40]} is out of range: {lo:g} to {hi:g}")
        return value

    return parse


def register(sub) -> None:
    """Add serve to the subparsers `sub`."""
    from ..service.settings import SETTINGS

    p = sub.add_parser("serve", help="serve search by image over HTTP: an API and a web page",
                       description="Serve INDEX over HTTP: the API (/v1, described at /docs and /openapi.json), "
                                   "the page at /, /healthz, /readyz and /metrics. Binds to 127.0.0.1 unless "
                                   "--host says otherwise; SIGINT or SIGTERM finish the requests in flight, then "
                                   "stop. Needs the serve extra: pip install 'lookalike[serve]'.")
    p.add_argument("index", metavar="INDEX")
    for s in SETTINGS:
        if isinstance(s.default, bool):
            p.add_argument(s.flag, action="store_true", help=s.help)
        elif s.name == "cors_origin":
            p.add_argument(s.flag, action="append", default=[], metavar="ORIGIN", help=s.help)
        elif isinstance(s.default, int) or (s.default is None and s.lo is not None):  # a bounded whole number
            p.add_argument(s.flag, type=whole_number(int(s.lo), int(s.hi)), default=s.default, metavar="N",
                           help=s.help)
        elif isinstance(s.default, float):
            p.add_argument(s.flag, type=number(s.lo, s.hi), default=s.default,
                           metavar="MS" if s.name.endswith("_ms") else "SECONDS", help=s.help)
        else:
            p.add_argument(s.flag, default=s.default, metavar=s.name.split("_")[-1].upper(), help=s.help)
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise LookalikeError("lookalike serve needs FastAPI and uvicorn: pip install 'lookalike[serve]'") from None
    from ..service.run import serve as run
    from ..service.settings import SETTINGS, Settings

    settings = Settings.make(args.index, **{s.name: getattr(args, s.name) for s in SETTINGS})
    return run(settings)
