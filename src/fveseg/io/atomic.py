"""Atomic output: write to a hidden temporary sibling, then rename it into place.

A crash or an exception mid-write leaves neither a half-written output nor the temporary path behind,
and an existing output is only replaced when the caller asked for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from fveseg.errors import InputError, OutputExistsError


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
    """Move the finished `temporary` onto `target` (file or directory).

    An existing target is moved aside first and deleted only after the new output is in place, so a
    failure at any step leaves either the old or the new output, never neither.
    """
    if target.exists():
        if not overwrite:
            remove_path(temporary)
            raise OutputExistsError(
                f"{target} appeared while it was being written. Pass overwrite=True (--overwrite) to "
                "replace it, or choose another path."
            )
        if target.is_dir() or temporary.is_dir():
            # os.replace cannot put a directory over a non-empty directory: swap through a trash name.
            trash = temporary_sibling(target, "old")
            os.replace(target, trash)
            try:
                os.replace(temporary, target)
            except BaseException:
                os.replace(trash, target)
                raise
            remove_path(trash)
            return
    os.replace(temporary, target)


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
    target = check_writable(path, overwrite)
    suffix = "".join(target.suffixes)
    temporary = temporary_sibling(target)
    temporary = temporary.with_name(temporary.name + suffix)
    try:
        yield temporary
        if not temporary.exists():
            raise FileNotFoundError(f"nothing was written to the temporary path {temporary}")
        commit(temporary, target, overwrite)
    except BaseException:
        remove_path(temporary)
        raise
