"""The training stream: real images and procedural volumes mixed, one augmented example at a time.

Each DataLoader worker (and each DDP rank) seeds its own generator from (seed, rank, worker), loads real
files lazily (cached once read) and keeps a small pool of procedural volumes that it renews after a few
uses, so generation costs little per example.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from fveseg.errors import InputError
from fveseg.fve.encoding import slices_per_side
from training.data import (
    LabelledVolume,
    SampleConfig,
    SyntheticSpec,
    load_volume_file,
    make_sample,
    synthetic_volume,
)
from training.defocus import defocus_volume
from training.prompts import TRAIN_NEGATIVES, TRAIN_PARAPHRASES


@dataclass
class MixConfig:
    """Where examples come from and in what proportion."""

    real_fraction: float = 0.5  # share of examples cut from real files (the rest: procedural volumes)
    defocus_fraction: float = 0.0  # share of real 2D examples made into 3D stacks (`training.defocus`)
    real_globs: tuple[str, ...] = ("train/dsb2018_fluo/*.npz",)  # relative to the data root
    extra_files: tuple[str, ...] = ()  # more labelled volumes (any path), sampled with the real ones
    real_weights: str | None = None  # JSON {file name: weight} (`training.hard_examples`); None: uniform
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    synthetic_pool: int = 4  # procedural volumes held per worker
    synthetic_uses: int = 12  # examples cut from one procedural volume before it is replaced


def find_real_files(data_root: str | Path | None, mix: MixConfig) -> list[str]:
    """The real labelled files of the mix, sorted (empty when there is no data root)."""
    files: list[str] = [str(p) for p in mix.extra_files]
    if data_root is not None:
        for pattern in mix.real_globs:
            files.extend(sorted(glob.glob(str(Path(data_root) / pattern))))
    return files


def sampling_probabilities(
    files: list[str], weights_path: str | Path | None, n_volumes: int = 0
) -> np.ndarray:
    """Probability of drawing each of ``n_volumes`` in-memory volumes, then each file.

    ``weights_path`` is a JSON object mapping file names (without folders) to non-negative weights, as
    `training.hard_examples` writes it. Files it does not name, and in-memory volumes, get the mean
    weight, so a table made for one data set does not silence others. None: uniform.
    """
    n = n_volumes + len(files)
    if weights_path is None or n == 0:
        return np.full(n, 1.0 / max(n, 1))
    path = Path(weights_path)
    if not path.is_file():
        raise InputError(
            f"real_weights file {path} does not exist; make one with `python -m training.hard_examples`"
        )
    try:
        table = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError, AttributeError) as error:
        raise InputError(
            f"real_weights file {path} is not a JSON object of file name: weight ({error})"
        ) from None
    if not table or min(table.values()) < 0 or not np.isfinite(list(table.values())).all():
        raise InputError(f"real_weights file {path} must map file names to finite weights >= 0")
    default = float(np.mean(list(table.values())))
    weights = np.array([default] * n_volumes + [table.get(Path(f).name, default) for f in files])
    if weights.sum() <= 0:
        raise InputError(f"real_weights file {path} gives every file weight 0")
    return weights / weights.sum()


class MixedSlices(IterableDataset):
    """Endless stream of training examples (dicts of tensors, see `training.data.make_sample`).

    Parameters
    ----------
    real_files : list of str
        Labelled ``.npz`` files (either format); may be empty (procedural data only).
    mix : MixConfig
    sample : SampleConfig
    vocabulary : dict[str, int]
        Prompt -> index into the text-embedding table.
    seed : int
    rank : int
        DDP rank (0 for a single process), so ranks draw different examples.
    table, negatives
        Prompt table and negative prompts (fine-tuning passes its own).
    """

    def __init__(
        self,
        real_files: list[str],
        mix: MixConfig,
        sample: SampleConfig,
        vocabulary: dict[str, int],
        seed: int = 0,
        rank: int = 0,
        table: dict[str, tuple[str, ...]] | None = None,
        negatives: tuple[str, ...] = TRAIN_NEGATIVES,
        volumes: list[LabelledVolume] | None = None,
    ) -> None:
        self.real_files = list(real_files)
        self.mix = mix
        self.sample = sample
        self.vocabulary = vocabulary
        self.seed = seed
        self.rank = rank
        self.table = TRAIN_PARAPHRASES if table is None else table
        self.negatives = negatives
        self.volumes = list(volumes or [])  # in-memory volumes (tests, fine-tuning)

    def __iter__(self):
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if info is not None:
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, self.rank, worker])
        cache: dict[int, LabelledVolume] = {}
        pool: list[list] = []  # [volume, uses_left]
        n_real = len(self.real_files) + len(self.volumes)
        probabilities = sampling_probabilities(self.real_files, self.mix.real_weights, len(self.volumes))
        real_fraction = self.mix.real_fraction if n_real else 0.0
        if self.mix.synthetic_pool <= 0:
            real_fraction = 1.0
        synth_seed = int(rng.integers(2**31)) * 1000  # training seeds stay far below evaluation's 10**12
        while True:
            if rng.random() < real_fraction:
                if self.mix.real_weights is None:  # the uniform draw of earlier runs, same stream
                    i = int(rng.integers(n_real))
                else:
                    i = int(rng.choice(n_real, p=probabilities))
                if i < len(self.volumes):
                    volume = self.volumes[i]
                else:
                    if i not in cache:
                        cache[i] = load_volume_file(self.real_files[i - len(self.volumes)])
                    volume = cache[i]
            else:
                slot = int(rng.integers(self.mix.synthetic_pool))
                if slot >= len(pool) or pool[slot][1] <= 0:
                    synth_seed += 1
                    entry = [
                        synthetic_volume(synth_seed % 10**11, self.mix.synthetic),
                        self.mix.synthetic_uses,
                    ]
                    if slot >= len(pool):
                        pool.append(entry)
                        slot = len(pool) - 1
                    else:
                        pool[slot] = entry
                pool[slot][1] -= 1
                volume = pool[slot][0]
            focal = None
            if volume.image.shape[0] == 1 and rng.random() < self.mix.defocus_fraction:
                focal = slices_per_side(self.sample.order)
                volume = defocus_volume(volume, rng, focal)
            example = make_sample(
                volume, rng, self.sample, self.vocabulary, self.table, self.negatives, focal=focal
            )
            yield {key: torch.from_numpy(value) for key, value in example.items()}
