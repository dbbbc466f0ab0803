"""The ``fveseg`` command line: one entry point, six subcommands.

``segment``   volumes in (files, folders, globs), labels out (OME-Zarr or TIFF), optionally on dask
``encode``    write the Fractal Volumetric Encoding images of a volume for inspection or training
``evaluate``  predictions against ground truth: Dice, NSD, F1@0.5, Dice on true positives
``info``      installed model(s), their prompts and configuration, devices, versions
``demo``      the README's main job: segment the bundled synthetic sample end to end and score it
``convert``   the released BiomedParse v2 ``.ckpt`` once into fveseg's ``.safetensors`` + ``.json``

Exit codes: 0 success; 2 a user error — a usage mistake (unknown option, bad value) or any
`fveseg.errors.FvesegError` at run time (missing file, output exists, bad checkpoint) —, printed as one
line ``error: <problem> (fix: <what to do>)``; 1 an internal error (a bug, or an environment failure such
as a full disk), printed as one line naming a log file that holds the traceback; 130 interrupted by
Ctrl-C (SIGINT) and 143 by SIGTERM, printed as one line. No traceback ever reaches the terminal, and an
interrupted run leaves either the old outputs or the new ones (`fveseg.io.atomic`).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from fveseg import __version__
from fveseg.cli._memory import keep_freed_memory
from fveseg.errors import FvesegError

__all__ = ["main", "console", "build_parser", "UsageError"]

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


#: OSError numbers that describe the user's machine, not a bug: full disk, quota, read-only, no permission.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup path that handles an interrupt handles it too."""


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


def console() -> NoReturn:
    """The installed ``fveseg`` program (and ``python -m fveseg.cli``): `main` in a one-shot process,
    unlike callers of `main` from Python. It keeps the memory it frees for its next arrays
    (`fveseg.cli._memory`), and it ends without the interpreter's teardown: by the time `main` returns,
    every output is complete and closed (written to a temporary path, renamed when done:
    `fveseg.io.atomic`) and a dask cluster it started is shut down, and unloading torch's modules
    would keep the user waiting another 0.45-0.55 s (measured: ``import fveseg.pipeline`` alone exits
    in 2.0-2.2 s, 1.6 s this way)."""
    keep_freed_memory()
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`fveseg ... | head`), or a closed stream
            pass
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fveseg`` with `argv` (default ``sys.argv[1:]``); return the exit code (see the module doc).

    User mistakes print ``error: <problem> (fix: <what to do>)`` on stderr; unexpected exceptions print
    one line with the path of a log file holding the traceback.
    """
    previous = _handle_sigterm()
    try:
        return _run(argv)
    except Terminated:
        print(
            "terminated (SIGTERM): outputs already finished were kept, unfinished ones removed",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        # Outputs are written to temporary paths and renamed only when complete: nothing partial is left.
        print("interrupted: outputs already finished were kept, unfinished ones removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as done:  # --help and --version exit 0 through argparse
        return int(done.code or 0)
    except Exception as error:
        return _internal_error(error)
    try:
        return int(args.run(args) or 0)
    except FvesegError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            return _internal_error(error)
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"error: {error.strerror or error}{where}; nothing partial was kept "
            "(fix: free disk space, or choose a writable output folder with -o)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except MemoryError as error:
        print(
            f"error: out of memory ({error or 'MemoryError'}) (fix: segment in blocks with --workers N "
            "--block-slices 64, or free memory)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except Exception as error:
        return _internal_error(error)


def _handle_sigterm():
    """Make SIGTERM raise `Terminated` (a KeyboardInterrupt) in the main thread; return the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except (ValueError, OSError):  # pragma: no cover - not the main interpreter
        return None


def log_folder() -> Path:
    """Where tracebacks of internal errors go: ``$FVESEG_LOG_DIR``, else the user cache folder."""
    configured = os.environ.get("FVESEG_LOG_DIR")
    if configured:
        return Path(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(cache) / "fveseg" / "logs"


def _internal_error(error: BaseException) -> int:
    """Write the traceback to a log file and print one line naming it and the error."""
    import datetime
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    where = None
    for folder in (log_folder(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix=f"fveseg-{stamp}-", suffix=".log", dir=folder)
            with os.fdopen(handle, "w") as log:
                log.write(f"fveseg {__version__}\nargv: {sys.argv!r}\n\n{text}")
            where = name
            break
        except OSError:
            continue
    summary = f"{type(error).__name__}: {error}".splitlines()[0][:300] if str(error) else type(error).__name__
    detail = f"the traceback is in {where}" if where else "no log file could be written"
    print(f"internal error: {summary} ({detail}; please report it with that file)", file=sys.stderr)
    return EXIT_INTERNAL_ERROR
