"""Average the weights of two checkpoints of one architecture (a weight average, or "model soup").

    PYTHONPATH=src:. python -m training.average_checkpoints A B --weight 0.5 --out OUT \
        [--stage "what this average is"] [--description TEXT] [--overwrite]

Gives ``weight × A + (1 − weight) × B`` for every floating-point tensor (integer buffers are B's).
Averaging works for checkpoints of one lineage (B fine-tuned from A, or both from one parent): their
weights lie in one basin, so the average keeps much of what each learnt (docs/model-card.md, "Choosing
the model from the measured noise": the bundled default is 0.5 × v3 + 0.5 × the noise-robust run). The
metadata are B's, with B's own run and then this average appended to ``training_history``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def average_checkpoints(first, second, weight: float = 0.5):
    """The ``second`` model (loaded) with weights ``weight × first + (1 − weight) × second``.

    Parameters
    ----------
    first, second : str or Path
        Checkpoints (base path or file) of one architecture.
    weight : float
        Share of ``first``, in [0, 1].

    Returns
    -------
    torch.nn.Module
        With ``metadata`` copied from ``second``.
    """
    import torch

    from fveseg.errors import CheckpointError
    from fveseg.model.checkpoint import load_checkpoint

    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    model_a, model_b = load_checkpoint(first), load_checkpoint(second)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    mismatch = [k for k in state_a.keys() | state_b.keys() if k not in state_a or k not in state_b]
    mismatch += [k for k in state_a.keys() & state_b.keys() if state_a[k].shape != state_b[k].shape]
    if mismatch:
        raise CheckpointError(
            f"{first} and {second} are different architectures ({len(mismatch)} tensors differ, e.g. "
            f"{sorted(mismatch)[0]}); only checkpoints of one configuration can be averaged"
        )
    with torch.no_grad():
        averaged = {
            k: weight * state_a[k] + (1.0 - weight) * v if v.is_floating_point() else v
            for k, v in state_b.items()
        }
        model_b.load_state_dict(averaged)
    return model_b


def main(argv: list[str] | None = None) -> Path:
    from fveseg.errors import FvesegError
    from fveseg.model.checkpoint import save_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="checkpoint A (base path or file)")
    parser.add_argument("second", help="checkpoint B, whose metadata the average keeps")
    parser.add_argument("--weight", type=float, default=0.5, help="share of A (default 0.5)")
    parser.add_argument("--out", required=True, help="base path of the averaged checkpoint")
    parser.add_argument("--stage", default="weight average", help="how training_history names this step")
    parser.add_argument("--description", default=None, help="the checkpoint's description (default: none)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if not args.overwrite and any(Path(f"{args.out}{s}").exists() for s in (".json", ".safetensors")):
        raise SystemExit(f"error: {args.out}.json exists (fix: pass --overwrite or choose another --out)")
    start = time.monotonic()
    try:
        model = average_checkpoints(args.first, args.second, args.weight)
    except (FvesegError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    meta = dict(getattr(model, "metadata", {}) or {})
    history = list(meta.get("training_history") or [])
    own = {k: meta[k] for k in ("hardware", "wall_time_s", "steps", "command") if k in meta}
    if own.get("command") and all(h.get("command") != own["command"] for h in history):
        history.append({"stage": f"{Path(args.second).name} (B)", **own})  # B's own run
    command = (
        f"PYTHONPATH=src:. python -m training.average_checkpoints {args.first} {args.second} "
        f"--weight {args.weight} --out OUT"
    )
    seconds = round(time.monotonic() - start, 1)
    history.append({"stage": args.stage, "wall_time_s": seconds, "command": command})
    for key in ("checkpoint", "validation", "steps", "wall_time_s", "description"):  # B's, not the average's
        meta.pop(key, None)
    if args.description:
        meta["description"] = args.description
    meta.update(training_history=history, command=command)
    model.metadata = meta  # save_checkpoint merges the model's own metadata under the given ones
    path = save_checkpoint(model, args.out, meta, overwrite=args.overwrite)
    print(f"wrote {path} = {args.weight} x {args.first} + {1 - args.weight:g} x {args.second}")
    return path


if __name__ == "__main__":
    main()
