"""Convert the released BiomedParse v2 weights once into fveseg's safetensors + JSON checkpoint format.

``fveseg convert biomedparse_v2.ckpt models/biomedparse_v2`` reads the Lightning checkpoint (safe
unpickling only: ``torch.load(weights_only=True)``), checks every key against the ``reference-v2``
architecture and writes ``models/biomedparse_v2.safetensors`` and ``models/biomedparse_v2.json``. Pass the
``.json`` to ``--model`` (or the widget) from then on: it loads without unpickling anything. An official
``.safetensors`` file is accepted as SRC too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "convert"
HELP = "convert the BiomedParse v2 .ckpt once to fveseg's .safetensors + .json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        type=Path,
        metavar="SRC",
        help="biomedparse_v2.ckpt (or an official .safetensors) that you downloaded",
    )
    parser.add_argument(
        "dst", type=Path, metavar="DST", help="output base path: DST.safetensors and DST.json are written"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST pair")


def run(args: argparse.Namespace) -> int:
    from fveseg.errors import CheckpointError
    from fveseg.inference.reference_engine import LICENCE_NOTICE
    from fveseg.model.reference_v2 import convert_checkpoint

    try:
        json_path = convert_checkpoint(args.src, args.dst, overwrite=args.overwrite)
    except OSError as error:  # disk full, permissions: a user problem, reported in one line
        raise CheckpointError(
            f"cannot convert {args.src} to {args.dst}: {error} (fix: check free space and write permission)"
        ) from error
    weights = json_path.with_suffix(".safetensors")
    print(f"wrote {json_path} and {weights}", file=sys.stdout)
    print(f"use it with: fveseg segment INPUT --model {json_path}", file=sys.stdout)
    print(f"licence: {LICENCE_NOTICE}", file=sys.stdout)
    return 0
