"""Fine-tune a checkpoint on your own labelled volumes, with your own prompts.

    python -m training.finetune --checkpoint src/fveseg/weights/default \
        --data my_volume1.npz my_volume2.npz --prompts "nuclei=my nuclei" "cells=my cell bodies" \
        --out runs/finetuned [--steps 300 | --minutes 20] [--device cpu|cuda]

Data files are ``.npz`` in the project format (``image``, ``labels``, ``spacing_zyx``, ``class_names``)
or the challenge format (``imgs``, ``gts``, ``spacing``, ``text_prompts``). ``--prompts CLASS=PROMPT``
adds a prompt for a class in the files (repeat the flag's values for more; ``|`` separates several
prompts for one class). New prompts are embedded on the fly with the MiniLM text encoder on the CPU,
so the fine-tuned model answers them at inference. Some procedural volumes stay in the mix
(``--own-fraction``, default 0.8 own data) so the model keeps what it knew.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fveseg.errors import InputError
from training.prompts import TRAIN_NEGATIVES, TRAIN_PARAPHRASES, canonical_class, training_prompts


def parse_prompts(items: list[str]) -> dict[str, list[str]]:
    """``["cls=p1|p2", ...]`` -> {cls: [p1, p2]} (class names canonicalised like the loaders do)."""
    mapping: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise InputError(
                f"--prompts value {item!r} must look like CLASS=PROMPT, e.g. 'nuclei=my nuclei'."
            )
        name, prompts = item.split("=", 1)
        words = [p.strip() for p in prompts.split("|") if p.strip()]
        if not name.strip() or not words:
            raise InputError(f"--prompts value {item!r} needs a class name and at least one prompt.")
        mapping.setdefault(canonical_class(name), []).extend(words)
    return mapping


def finetune(
    checkpoint: str,
    data: list[str],
    prompts: dict[str, list[str]],
    out: Path,
    steps: int = 300,
    minutes: float | None = None,
    device: str = "auto",
    batch_size: int = 4,
    lr: float = 1e-4,
    own_fraction: float = 0.8,
    num_workers: int = 0,
) -> dict:
    """Fine-tune `checkpoint` on the volumes in `data`; returns the training summary."""
    from fveseg.model.checkpoint import load_checkpoint
    from training.config import load_config
    from training.data import load_volume_file
    from training.precompute_text import write_table
    from training.train import train

    volumes = [load_volume_file(path) for path in data]
    if not volumes:
        raise InputError("no --data files given; pass one or more labelled .npz volumes.")
    classes = sorted({c for v in volumes for c in v.classes})
    unknown = sorted(set(prompts) - set(classes))
    if unknown:
        raise InputError(
            f"--prompts names classes {unknown} that the data does not have; its classes are {classes}."
        )
    table = {k: tuple(v) for k, v in TRAIN_PARAPHRASES.items()}
    for name in classes:
        table[name] = tuple(dict.fromkeys(prompts.get(name, []) + list(table.get(name, (name,)))))
    new_prompts = [p for name in classes for p in table[name]]
    vocabulary = list(dict.fromkeys(training_prompts() + new_prompts))
    out.mkdir(parents=True, exist_ok=True)
    text_table = out / "prompt_embeddings.safetensors"
    write_table(text_table, extra=vocabulary)  # MiniLM on the CPU: new prompts get embeddings too

    base = load_checkpoint(checkpoint)
    meta = base.metadata
    config = load_config(
        None,
        model=base.config.name,
        order=int(meta.get("fve", {}).get("order", 1)),
        input_size=int(meta.get("input_size", base.config.input_size)),
        steps=steps,
        minutes=minutes,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=min(50, max(steps // 10, 1)),
        num_workers=num_workers,
        real_fraction=own_fraction,
        real_globs=(),
        val_synthetic=0,
        val_every_minutes=1e9,
        text_table=str(text_table),
        log_every=10,
    )
    extra = {
        "finetuned_from": str(checkpoint),
        "finetune_data": [str(p) for p in data],
        "finetune_prompts": {k: list(v) for k, v in table.items() if k in classes},
    }
    return train(
        config,
        None,
        out,
        device=device,
        init_checkpoint=checkpoint,
        vocabulary=vocabulary,
        table=table,
        negatives=TRAIN_NEGATIVES,
        volumes=volumes,
        extra_metadata=extra,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint to start from (base path or file)")
    parser.add_argument("--data", nargs="+", required=True, help="labelled .npz volumes")
    parser.add_argument("--prompts", nargs="*", default=[], help="CLASS=PROMPT[|PROMPT...] pairs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--own-fraction", type=float, default=0.8, help="share of examples from --data")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    return finetune(
        args.checkpoint,
        args.data,
        parse_prompts(args.prompts),
        Path(args.out),
        args.steps,
        args.minutes,
        args.device,
        args.batch_size,
        args.lr,
        args.own_fraction,
        args.num_workers,
    )


if __name__ == "__main__":
    main()
