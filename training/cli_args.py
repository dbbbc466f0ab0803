"""Command-line pieces shared by the training scripts that score a checkpoint on the data folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def checkpoint_parser(prog: str, doc: str, out_help: str) -> argparse.ArgumentParser:
    """A parser with ``--checkpoint``, ``--data-root`` and ``--out``, described by the doc's first line."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True, help=f"{out_help} (must not exist)")
    return parser


def output_is_free(out: Path) -> bool:
    """False, with a one-line error naming the fix, when ``out`` exists (results are never overwritten)."""
    if out.exists():
        print(f"error: {out} exists; choose another --out or delete it", file=sys.stderr)
        return False
    return True
