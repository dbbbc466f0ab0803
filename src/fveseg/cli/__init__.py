"""The ``fveseg`` command line: one entry point, six subcommands.

``segment``   volumes in (files, folders, globs), labels out (OME-Zarr or TIFF), optionally on dask
``encode``    write the Fractal Volumetric Encoding images of a volume for inspection or training
``evaluate``  predictions against ground truth: Dice, NSD, F1@0.5, Dice on true positives
``info``      installed model(s), their prompts and configuration, devices, versions
``demo``      the README's main job: segment the bundled synthetic sample end to end and score it
``convert``   the released BiomedParse v2 ``.ckpt`` once into fveseg's ``.safetensors`` + ``.json``

Exit codes: 0 success; 1 a user error at run time (any `fveseg.errors.FvesegError`: missing file, output
exists, bad checkpoint); 2 a usage error (unknown option, bad value); 130 interrupted (Ctrl-C), with no
partial output left behind. User errors print one line ``error: ...`` without a traceback; a bug still
prints its traceback so it can be reported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fveseg import __version__
from fveseg.errors import FvesegError

__all__ = ["main", "build_parser", "UsageError"]

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Raised instead of argparse's print-and-exit so `main` decides how to report it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse calls this for every usage mistake
        raise UsageError(f"{message} (fix: see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``fveseg`` and all its subcommands."""
    # Subcommand modules are imported here for their `add_arguments`; they import torch lazily.
    from fveseg.cli import convert, demo, encode, evaluate, info, segment

    parser = _Parser(
        prog="fveseg",
        description="Text-prompted 3D segmentation with Fractal Volumetric Encoding (BiomedParse-V).",
    )
    parser.add_argument("--version", action="version", version=f"fveseg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for module in (segment, encode, evaluate, info, demo, convert):
        sub = commands.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.__doc__.split("\n\n")[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fveseg`` with `argv` (default ``sys.argv[1:]``); return the exit code.

    User mistakes print ``error: <problem> (fix: <what to do>)`` on stderr; unexpected exceptions propagate
    with their traceback.
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as done:  # --help and --version exit 0 through argparse
        return int(done.code or 0)
    try:
        return int(args.run(args) or 0)
    except FvesegError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        # Outputs are written to temporary paths and renamed only when complete, so nothing partial is left.
        print("interrupted: no partial output was kept", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:  # pragma: no cover - thin wrapper for console scripts
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
