"""The ``wsss`` command line (also ``python -m wsss_lib``).

Subcommands live in small modules, each exposing ``register(subparsers)``; a subcommand's
handler takes the parsed ``argparse.Namespace`` and returns an exit code. User errors
(:class:`~wsss_lib.core.errors.WsssError`, bad paths, unwritable folders) are printed as one line on
stderr with a non-zero exit; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..core.errors import WsssError

# modules under wsss_lib.cli that register subcommands (missing ones are skipped)
COMMAND_MODULES = ("run", "data", "paper1", "paper2", "reproduce", "study", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss",
        description="Weakly-supervised semantic segmentation from image tags (Saleh et al. ECCV'16 / ICCV'17).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("wsss: interrupted", file=sys.stderr)
        return 130
    except (WsssError, PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, WsssError):
            print(f"wsss: error: {str(exc)}", file=sys.stderr)
        else:
            print(f"wsss: error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
