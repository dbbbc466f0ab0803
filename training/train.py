"""Train a BiomedParse-V model on real images mixed with procedural volumes.

    PYTHONPATH=src:. python -m training.train --config training/configs/tiny-cpu.json \
        --data-root /work/shared/data --out runs/tiny-cpu [--minutes 100] [--device cpu|cuda]

One process trains on one device; under ``torchrun`` every process trains on its own GPU with
DistributedDataParallel (see ``training/launch_multi_gpu.sh``). With ``--minutes`` the cosine schedule is
laid over the time budget (progress = elapsed / budget, the step count follows from the measured step
time), so the learning rate reaches its floor exactly when the time is up. Validation (real validation
images: instance F1; held-out procedural volumes: Dice, F1) runs every ``val_every_minutes``; the
checkpoint with the best real-image F1 is kept as ``best.safetensors``, the last as ``last.safetensors``,
and ``log.csv`` records every logged step.

Nothing on this import path needs zarr, dask, napari or transformers (the GPU machine lacks them).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from fveseg.errors import InputError
from training.config import TrainConfig, load_config
from training.losses import segmentation_loss
from training.prompts import TRAIN_NEGATIVES, TRAIN_PARAPHRASES, training_prompts
from training.validation import PIXEL_MEAN, PIXEL_STD, load_validation, to_model_input, validate


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then cosine from `lr` to `lr * min_lr_ratio` as progress -> 1."""
    floor = config.lr * config.min_lr_ratio
    cosine = floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    if step < config.warmup_steps:
        return cosine * (step + 1) / config.warmup_steps
    return cosine


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ×{max(int(os.environ.get('WORLD_SIZE', 1)), 1)}"
    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}"
    )


def build_text_table(model, config: TrainConfig, vocabulary: list[str], device):
    """Frozen token embeddings (V, L, C) of every prompt, from the precomputed table file."""
    from fveseg.model.text_encoder import PrecomputedTextEncoder

    encoder = PrecomputedTextEncoder.from_file(config.text_table)
    model.set_text_encoder(encoder)
    return encoder.encode(vocabulary).to(device)


def make_loader(
    config: TrainConfig,
    data_root,
    vocabulary: list[str],
    rank: int,
    table=None,
    negatives=TRAIN_NEGATIVES,
    volumes=None,
):
    from torch.utils.data import DataLoader

    from training.dataset import MixedSlices, find_real_files, sampling_probabilities

    mix = config.mix_config()
    real_files = find_real_files(data_root, mix)
    sampling_probabilities(
        real_files, mix.real_weights, len(volumes or [])
    )  # a bad table fails here, not in a worker
    dataset = MixedSlices(
        real_files,
        mix,
        config.sample_config(),
        {p: i for i, p in enumerate(vocabulary)},
        seed=config.seed,
        rank=rank,
        table=table,
        negatives=negatives,
        volumes=volumes,
    )
    workers = config.num_workers
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        num_workers=workers,
        pin_memory=workers > 0 and torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    return loader, len(real_files)


def save(model, path: Path, metadata: dict) -> None:
    from fveseg.model.checkpoint import save_checkpoint

    module = getattr(model, "module", model)
    save_checkpoint(module, path, metadata, overwrite=True)


def select_trainable(model: torch.nn.Module, prefixes) -> list[torch.nn.Parameter]:
    """Freeze every parameter whose name starts with none of ``prefixes`` (empty: train all); return the
    trained ones."""
    prefixes = tuple(prefixes)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not prefixes or name.startswith(prefixes))
    trained = [p for p in model.parameters() if p.requires_grad]
    if not trained:
        example = next(name for name, _ in model.named_parameters())
        raise InputError(
            f"trainable {list(prefixes)} matches no parameter of the model; names look like {example!r} "
            "(fix: use name prefixes such as 'decoder.cls_', or leave trainable empty to train all)"
        )
    return trained


def train(
    config: TrainConfig,
    data_root,
    out: Path,
    device: str = "auto",
    resume: str | None = None,
    init_checkpoint: str | None = None,
    vocabulary: list[str] | None = None,
    table=None,
    negatives=TRAIN_NEGATIVES,
    volumes=None,
    extra_metadata: dict | None = None,
    quiet: bool = False,
) -> dict:
    """Run one training; returns a summary (steps, wall time, best validation, paths).

    `init_checkpoint` starts from trained weights (fine-tuning); `resume` continues a run from its
    ``state.pt`` (model, optimiser, step). `vocabulary`, `table`, `negatives`, `volumes` let fine-tuning
    train new prompts on in-memory volumes.
    """
    from fveseg.model import build_model

    rank, world, local_rank = _distributed()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local_rank}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config.seed + rank)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    say = (lambda *a: None) if (quiet or rank != 0) else (lambda *a: print(*a, flush=True))

    if init_checkpoint is not None:
        from fveseg.model.checkpoint import load_checkpoint

        model = load_checkpoint(init_checkpoint)
    else:
        model = build_model(config.model)
    vocabulary = training_prompts() if vocabulary is None else vocabulary
    model.to(dev).train()
    text = build_text_table(model, config, vocabulary, dev)
    trained = select_trainable(model, config.trainable)
    optim = torch.optim.AdamW(
        [
            {"params": [p for p in trained if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in trained if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.999),
    )
    step, best_f1, train_seconds = 0, -1.0, 0.0
    if resume:
        state = torch.load(resume, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        step, best_f1, train_seconds = state["step"], state["best_f1"], state["train_seconds"]
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    loader, n_real = make_loader(config, data_root, vocabulary, rank, table, negatives, volumes)
    val_data = load_validation(data_root, config.val_synthetic, config.val_max_real) if rank == 0 else None
    say(
        f"model {config.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; "
        f"device {dev}; world {world}; {n_real} real files; order {config.order}; "
        f"validation {len(val_data.real) if val_data else 0} real + "
        f"{len(val_data.synthetic) if val_data else 0} synthetic"
    )

    budget = None if config.minutes is None else config.minutes * 60.0
    val_seconds = 30.0  # duration of one validation (measured after the first), reserved at the end
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda" and config.bf16
        else torch.autocast("cpu", enabled=False)
    )
    log_path = out / "log.csv"
    log_file = open(log_path, "a", newline="") if rank == 0 else None
    writer = None
    metadata_base = {
        "fve": {"order": config.order, "pad": "edge", "downsample": "mean"},
        "input_size": config.input_size,
        "normalization": {"mean": [PIXEL_MEAN] * 3, "std": [PIXEL_STD] * 3},
        "intensity": {"modality": "auto", "window": None},
        "prompts": [p for p in vocabulary if p not in negatives],
        "negatives_trained": list(negatives),
        "classes": {k: list(v) for k, v in (table or TRAIN_PARAPHRASES).items()},
        "data": {
            "root": str(data_root),
            "real_files": n_real,
            "real_fraction": config.real_fraction,
            "defocus_fraction": config.defocus_fraction,
            "real_globs": list(config.real_globs),
            "synthetic": config.mix_config().synthetic.__dict__,
        },
        "trained_on": "real 2D fluorescence nuclei (dsb2018 train) mixed with procedural 3D volumes"
        if n_real
        else "procedural 3D volumes",
        "training_config": config.to_dict(),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "hardware": _hardware(dev),
        "world_size": world,
        "torch": torch.__version__,
        **(extra_metadata or {}),
    }
    best_path, last_path = out / "best.safetensors", out / "last.safetensors"
    last_val = time.monotonic()
    loop_start = time.monotonic() - train_seconds
    history: dict[str, float] = {}
    tick, seen = time.monotonic(), 0

    def run_validation() -> dict[str, float]:
        nonlocal best_f1, val_seconds
        t0 = time.monotonic()
        scores = validate(model, val_data, config.order, dev)
        val_seconds = time.monotonic() - t0
        wall = time.monotonic() - start
        meta = {**metadata_base, "steps": step, "wall_time_s": round(wall, 1), "validation": scores}
        save(model, last_path, meta)
        real = scores["real_f1"] if not math.isnan(scores["real_f1"]) else scores["synthetic_f1"]
        real = 0.0 if math.isnan(real) else real  # no validation data: the first save is "best"
        if real > best_f1:
            best_f1 = real
            save(model, best_path, meta)
        torch.save(
            {
                "model": model.state_dict(),
                "optim": optim.state_dict(),
                "step": step,
                "best_f1": best_f1,
                "train_seconds": time.monotonic() - loop_start,
            },
            out / "state.pt",
        )
        say(
            f"validation at step {step}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
            + f" ({val_seconds:.0f} s; best {best_f1:.3f})"
        )
        return scores

    for batch in loader:
        elapsed = time.monotonic() - loop_start
        progress = step / config.steps if budget is None else elapsed / max(budget - val_seconds - 5, 1)
        stop = step >= config.steps if budget is None else progress >= 1.0
        if world > 1:
            import torch.distributed as dist

            flags = torch.tensor([progress, float(stop)], device=dev)
            dist.broadcast(flags, 0)
            progress, stop = float(flags[0]), bool(flags[1] > 0)
        if stop:
            break
        lr = learning_rate(config, step, progress)
        for group in optim.param_groups:
            group["lr"] = lr
        images = to_model_input(batch["image"].to(dev, non_blocking=True))
        ids = batch["prompt_ids"].to(dev)
        tokens = type(text)(text.tokens[ids], text.mask[ids])
        with autocast:
            outputs = net(images, tokens)
        outputs = {
            k: ([t.float() for t in v] if isinstance(v, list) else v.float()) for k, v in outputs.items()
        }
        loss, parts = segmentation_loss(
            outputs,
            batch["masks"].to(dev),
            batch["edges"].to(dev),
            batch["exists"].to(dev),
            pos_weight=config.pos_weight,
            edge_weight=config.edge_weight,
            aux_weight=config.aux_weight,
        )
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optim.step()
        step += 1
        seen += images.shape[0]
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            history[key] = 0.9 * history.get(key, value) + 0.1 * value
        if rank == 0 and (step % config.log_every == 0 or step == 1):
            now = time.monotonic()
            rate = seen * world / max(now - tick, 1e-9)
            tick, seen = now, 0
            est_total = step / progress if budget is not None and progress > 0 else config.steps
            row = {
                "step": step,
                "wall_s": round(now - start, 1),
                "lr": f"{lr:.3g}",
                "images_per_s": round(rate, 2),
                "grad_norm": round(float(grad_norm), 3),
                "est_total_steps": int(est_total),
                **{k: round(v, 4) for k, v in history.items()},
            }
            if writer is None:
                writer = csv.DictWriter(
                    log_file, fieldnames=list(row) + ["real_f1", "synthetic_dice", "synthetic_f1"]
                )
                if log_file.tell() == 0:
                    writer.writeheader()
            writer.writerow(row)
            log_file.flush()
            say(" ".join(f"{k} {v}" for k, v in row.items()))
        if rank == 0 and time.monotonic() - last_val > config.val_every_minutes * 60:
            scores = run_validation()
            writer.writerow({"step": step, "wall_s": round(time.monotonic() - start, 1), **scores})
            last_val = time.monotonic()
    scores = run_validation() if rank == 0 else {}
    if writer is not None:
        writer.writerow({"step": step, "wall_s": round(time.monotonic() - start, 1), **scores})
    if log_file is not None:
        log_file.close()
    wall = time.monotonic() - start
    summary = {
        "steps": step,
        "wall_time_s": round(wall, 1),
        "best_real_f1": best_f1,
        "final": scores,
        "best": str(best_path),
        "last": str(last_path),
        "log": str(log_path),
    }
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        say(json.dumps(summary))
    if world > 1:
        torch.distributed.destroy_process_group()
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="training/configs/tiny-cpu.json")
    parser.add_argument(
        "--data-root", default=None, help="folder holding train/ and val/ (shared data format)"
    )
    parser.add_argument("--out", required=True, help="output folder (checkpoints, log.csv, summary.json)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--minutes", type=float, default=None, help="time budget; the schedule ends with it")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--order", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--val-every-minutes", type=float, default=None)
    parser.add_argument("--resume", default=None, help="state.pt of an interrupted run")
    parser.add_argument("--init-checkpoint", default=None, help="start from these weights")
    parser.add_argument(
        "--real-weights", default=None, help="JSON {file: weight} from training.hard_examples (hard examples)"
    )
    args = parser.parse_args(argv)
    config = load_config(
        args.config,
        minutes=args.minutes,
        steps=args.steps,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        order=args.order,
        lr=args.lr,
        val_every_minutes=args.val_every_minutes,
        real_weights=args.real_weights,
    )
    if args.data_root is None:
        print("no --data-root: training on procedural volumes only (no real validation)", flush=True)
    return train(config, args.data_root, Path(args.out), args.device, args.resume, args.init_checkpoint)


if __name__ == "__main__":
    main()
