"""Training configuration: one JSON file (see ``training/configs/``) over these defaults."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from fveseg.errors import InputError
from fveseg.model.text_encoder import BUNDLED_TEXT_TABLE
from training.augment import AugmentConfig
from training.data import SampleConfig, SyntheticSpec
from training.dataset import MixConfig


@dataclass
class TrainConfig:
    """Every knob of a training run (JSON keys have the same names; nested dicts for sub-configs)."""

    model: str = "tiny"  # a name registered in fveseg.model.build.CONFIGS
    order: int = 1  # FVE order k the model is trained (and later run) with
    input_size: int = 256
    prompts_per_image: int = 4
    absent_class_p: float = 0.5  # chance that a class the procedural image does not show is a negative
    # train only parameters whose names start with one of these (empty: all). ["decoder.cls_"] trains the
    # existence discriminator alone: its input is detached, so masks and edges stay exactly as they were
    trainable: tuple[str, ...] = ()
    batch_size: int = 8
    lr: float = 4e-4
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.01
    warmup_steps: int = 100
    steps: int = 2000  # upper bound; `minutes` (if set) ends the run earlier or later
    minutes: float | None = None
    grad_clip: float = 5.0
    pos_weight: float = 3.0
    edge_weight: float = 1.0
    z_contact_edges: bool = False  # edge targets also mark contacts with another object in the next slice
    aux_weight: float = 0.2
    num_workers: int = 1
    seed: int = 0
    log_every: int = 20
    val_every_minutes: float = 15.0
    val_synthetic: int = 2
    val_max_real: int | None = None  # None: all 53 validation images
    bf16: bool = True  # autocast on CUDA only
    real_fraction: float = 0.5
    defocus_fraction: float = 0.0  # share of real 2D examples made into short 3D stacks
    real_globs: tuple[str, ...] = ("train/dsb2018_fluo/*.npz",)
    extra_files: tuple[str, ...] = ()
    real_weights: str | None = None  # JSON {file name: weight} from training.hard_examples; None: uniform
    synthetic: dict = field(default_factory=dict)  # SyntheticSpec fields
    synthetic_pool: int = 4
    synthetic_uses: int = 12
    augment: dict = field(default_factory=dict)  # AugmentConfig fields
    text_table: str = str(BUNDLED_TEXT_TABLE)  # the table shipped with the model

    def sample_config(self) -> SampleConfig:
        return SampleConfig(
            order=self.order,
            size=self.input_size,
            n_prompts=self.prompts_per_image,
            absent_class_p=self.absent_class_p,
            z_contact_edges=self.z_contact_edges,
            augment=_fields(AugmentConfig, self.augment),
        )

    def mix_config(self) -> MixConfig:
        return MixConfig(
            real_fraction=self.real_fraction,
            defocus_fraction=self.defocus_fraction,
            real_globs=tuple(self.real_globs),
            extra_files=tuple(self.extra_files),
            real_weights=self.real_weights,
            synthetic=_fields(SyntheticSpec, self.synthetic),
            synthetic_pool=self.synthetic_pool,
            synthetic_uses=self.synthetic_uses,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fields(cls, values: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def load_config(path: str | Path | None, **overrides) -> TrainConfig:
    """Defaults, then the JSON file at `path`, then non-None `overrides` (command-line flags)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config {path} does not exist; pick one of training/configs/*.json")
        values = json.loads(path.read_text())
        values.pop("_comment", None)
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = _fields(TrainConfig, values)
    config.sample_config(), config.mix_config()  # validate nested options early
    return config
