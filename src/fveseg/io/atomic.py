"""Atomic output: write to a hidden temporary sibling, then rename it into place.

A crash, an exception, Ctrl-C or SIGTERM mid-write leaves neither a half-written output nor the
temporary path behind, and an existing output is only replaced when the caller asked for it. The final
renames (`commit_all`) run with SIGINT and SIGTERM deferred, so an interrupt there lands after them:
the user finds either every old output or every new one, never a mix, and no hidden ``.old-*`` or
``.tmp-*`` sibling.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fveseg.errors import InputError, OutputExistsError


def _rename(source: Path, target: Path) -> None:
    """`os.replace`, the one step every commit is made of (tests interrupt it here)."""
    os.replace(source, target)


def temporary_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """Return an unused hidden path beside `path`: ``<dir>/.<name>.<tag>-<uuid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def remove_path(path: str | os.PathLike) -> None:
    """Delete a file or a directory tree; a missing path is not an error."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def discard(path: str | os.PathLike, settle: float = 0.05, tries: int = 20) -> None:
    """Delete `path` for good, with SIGINT/SIGTERM deferred: a second Ctrl-C cannot leave half of it.

    Writer threads still finishing a chunk (zarr's I/O pool) can recreate files right after a delete, so
    the path is checked again after `settle` seconds and deleted again, up to `tries` times.
    """
    path = Path(path)
    interrupted: BaseException | None = None
    with deferred_signals(deliver=False):
        for _ in range(tries):
            try:
                remove_path(path)
            except KeyboardInterrupt as error:  # raised from inside the delete: finish it, then go on
                interrupted = error
                continue
            time.sleep(settle if path.parent.exists() else 0)
            if not path.exists() and not path.is_symlink():
                break
    if interrupted is not None:
        raise interrupted


_deferring = False


@contextlib.contextmanager
def deferred_signals(deliver: bool = True) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them (as `KeyboardInterrupt`).

    Only the main thread can handle signals; elsewhere this does nothing. With `deliver` false, or when
    the block raised, a signal that arrived meanwhile is dropped in favour of the exception already
    under way (the run ends either way).
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield  # nested: the outermost block holds the signals
        return
    _deferring = True
    pending: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[number] = signal.signal(number, lambda signum, frame: pending.append(signum))
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            pass
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _deferring = False
        for number, handler in previous.items():
            signal.signal(number, handler)
        handler = previous.get(pending[0]) if pending and deliver and not failed else signal.SIG_IGN
        if handler is not signal.SIG_IGN:
            if callable(handler):
                handler(pending[0], None)
            raise KeyboardInterrupt


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Raise `OutputExistsError` when `path` exists and `overwrite` is false; return it as a Path."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists. Pass overwrite=True (--overwrite on the command line) to replace it, "
            "or choose another path."
        )
    if not path.parent.is_dir():
        raise InputError(
            f"Cannot write {path}: the folder {path.parent} does not exist. Create it first or choose "
            "another path."
        )
    return path


def commit(temporary: Path, target: Path, overwrite: bool) -> None:
    """Move the finished `temporary` onto `target` (file or directory); see `commit_all`."""
    commit_all([(Path(temporary), Path(target))], overwrite)


def commit_all(
    pairs: Sequence[tuple[Path, Path]], overwrite: bool, then: Callable[[], None] | None = None
) -> None:
    """Move every finished ``temporary`` onto its ``target``, all or none.

    Existing targets are moved aside first and deleted only once every new output is in place; a
    failure at any step (a full disk, a refused rename, a KeyboardInterrupt raised inside it) puts
    the old outputs back, so the caller sees either all old or all new outputs. SIGINT/SIGTERM are
    deferred meanwhile. ``then`` runs after the renames, before the old outputs are deleted: when it fails
    the renames are undone too. The temporaries of a failed commit are left for the caller to discard.
    """
    pairs = [(Path(t), Path(p)) for t, p in pairs]
    with deferred_signals():
        clashes = [target for _, target in pairs if target.exists() or target.is_symlink()]
        if clashes and not overwrite:
            raise OutputExistsError(
                f"{clashes[0]} appeared while it was being written. Pass overwrite=True (--overwrite) to "
                "replace it, or choose another path."
            )
        aside: list[tuple[Path, Path]] = []  # (target, where its old content went)
        placed: list[tuple[Path, Path]] = []  # (temporary, target) renames attempted
        try:
            for temporary, target in pairs:
                if target.exists() or target.is_symlink():
                    trash = temporary_sibling(target, "old")
                    aside.append((target, trash))
                    _rename(target, trash)
                placed.append((temporary, target))
                _rename(temporary, target)
            if then is not None:
                then()
        except BaseException:
            for temporary, target in reversed(placed):  # undo the renames that happened
                if not temporary.exists() and target.exists():
                    _rename(target, temporary)
            for target, trash in reversed(aside):
                if trash.exists() or trash.is_symlink():
                    _rename(trash, target)
            raise
        for _, trash in aside:
            discard(trash)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Context manager giving a temporary path to write; renamed to `path` when the block succeeds.

    Parameters
    ----------
    path : str or PathLike
        Final output path (a file, or a directory such as an ``.ome.zarr`` container).
    overwrite : bool
        Replace an existing `path`. Without it an existing `path` raises `OutputExistsError` before
        anything is written.

    Yields
    ------
    Path
        A hidden sibling ``.<name>.tmp-<uuid>`` that does not exist yet; write the output there.
        Its suffixes are kept (``.ome.tif``) so libraries that look at extensions behave the same.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    with atomic_paths([path], overwrite) as (temporary,):
        yield temporary


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike], overwrite: bool = False) -> Iterator[list[Path]]:
    """`atomic_path` for a set of outputs that appear together or not at all (`commit_all`).

    Every existing path is refused (without `overwrite`) before anything is written.
    """
    targets = [check_writable(path, overwrite) for path in paths]
    temporaries = []
    for target in targets:
        temporary = temporary_sibling(target)
        temporaries.append(temporary.with_name(temporary.name + "".join(target.suffixes)))
    try:
        yield temporaries
        for temporary in temporaries:
            if not temporary.exists():
                raise FileNotFoundError(f"nothing was written to the temporary path {temporary}")
        commit_all(list(zip(temporaries, targets)), overwrite)
    except BaseException:
        for temporary in temporaries:
            discard(temporary)
        raise
