"""Write the prompt-embedding table the trainer uses on machines without the MiniLM weights.

    python -m training.precompute_text [--out TABLE] [--extra "a" "b"]   (default TABLE: the shipped one)

The table holds the token embeddings of every training prompt plus the evaluation-only prompts
(held-out paraphrases and held-out negatives: embedding them is harmless, they are never trained on),
computed by the same frozen MiniLM encoder the shipped model uses at inference, so training and
inference see identical tokens.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fveseg.model.text_encoder import BUNDLED_TEXT_TABLE
from training.prompts import all_prompts

DEFAULT_TABLE = BUNDLED_TEXT_TABLE


def write_table(
    path: str | Path = DEFAULT_TABLE, extra: list[str] | tuple[str, ...] = (), encoder=None
) -> Path:
    """Encode `all_prompts(extra)` with MiniLM (or `encoder`) and save them to `path` (safetensors)."""
    from fveseg.model.text_encoder import MiniLMTextEncoder, save_text_table

    encoder = MiniLMTextEncoder() if encoder is None else encoder
    written = save_text_table(path, encoder, all_prompts(extra))
    written.chmod(0o644)  # readable by the other users of a shared checkout
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(DEFAULT_TABLE), help="safetensors file to write")
    parser.add_argument("--extra", nargs="*", default=[], help="more prompts to embed")
    args = parser.parse_args(argv)
    path = write_table(args.out, args.extra)
    print(f"wrote {len(all_prompts(args.extra))} prompt embeddings to {path}")


if __name__ == "__main__":
    main()
