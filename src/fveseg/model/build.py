"""The model registry: named configurations of this project's network (`CONFIGS`), other architectures
by name (`ARCHITECTURES`: the released BiomedParse v2 model), and `build_model`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch

from fveseg.errors import InputError
from fveseg.model.biomedparse import BiomedParseV
from fveseg.model.reference_v2 import NAME as REFERENCE_V2
from fveseg.model.reference_v2 import build_reference_v2, load_reference_v2

__all__ = ["ModelConfig", "CONFIGS", "Architecture", "ARCHITECTURES", "build_model", "config_from_dict"]


@dataclass
class ModelConfig:
    """Architecture of a `BiomedParseV` (all fields JSON-serialisable; stored in checkpoints)."""

    name: str = "custom"
    # backbone (FocalNet, fveseg.model.focalnet)
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    focal_levels: tuple[int, ...] = (2, 2, 2, 2)
    focal_windows: tuple[int, ...] = (3, 3, 3, 3)
    use_conv_embed: bool = False
    use_post_norm: bool = False
    use_layerscale: bool = False
    drop_path_rate: float = 0.1
    # pixel decoder
    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 0
    encoder_ffn_dim: int = 1024
    # decoder
    hidden_dim: int = 256
    decoder_layers: int = 9
    nheads: int = 8
    ffn_dim: int = 2048
    num_seg_queries: int = 12
    num_edge_queries: int = 4
    attention_strides: tuple[int, ...] = (16, 8, 4)
    pre_self_attention: bool = True
    sample_ratio: float = 0.1
    base_temperature: float = 1.0
    # text
    text_encoder: str = "minilm"
    text_dim: int = 384
    # input the model was built for (square side, pixels)
    input_size: int = 256
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, ModelConfig] = {
    # CPU default: ~3M parameters, ~tens of ms per 256x256 slice on two cores.
    "tiny": ModelConfig(
        name="tiny",
        embed_dim=24,
        depths=(1, 1, 2, 1),
        focal_levels=(2, 2, 2, 2),
        focal_windows=(3, 3, 3, 3),
        drop_path_rate=0.0,
        conv_dim=64,
        mask_dim=64,
        encoder_layers=0,
        encoder_ffn_dim=256,
        hidden_dim=96,
        decoder_layers=6,
        nheads=4,
        ffn_dim=256,
        num_seg_queries=6,
        num_edge_queries=2,
        attention_strides=(16, 8, 4),
        input_size=256,
    ),
    # Paper-like scale for GPUs (FocalNet-B backbone, 512-wide decoders, 9 layers, 12 + 4 queries).
    "base": ModelConfig(
        name="base",
        embed_dim=128,
        depths=(2, 2, 18, 2),
        focal_levels=(3, 3, 3, 3),
        focal_windows=(3, 3, 3, 3),
        use_conv_embed=True,
        use_post_norm=True,
        use_layerscale=True,
        drop_path_rate=0.3,
        conv_dim=512,
        mask_dim=512,
        encoder_layers=6,
        encoder_ffn_dim=2048,
        hidden_dim=512,
        decoder_layers=9,
        nheads=8,
        ffn_dim=2048,
        num_seg_queries=12,
        num_edge_queries=4,
        attention_strides=(16, 8, 4),
        input_size=512,
    ),
}


def config_from_dict(data: dict) -> ModelConfig:
    """Rebuild a `ModelConfig` from `ModelConfig.to_dict()` output (lists become tuples).

    Raises `InputError` naming unknown fields.
    """
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"unknown model config fields {unknown}; this fveseg version knows {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ModelConfig(**values)


@dataclass(frozen=True)
class Architecture:
    """An architecture with its own module tree: how to build it (random weights) and load its weights
    (``load(path, map_location=...)``); its models' ``architecture`` attribute picks the engine that runs
    them (`fveseg.inference.engines.ENGINES`)."""

    build: Callable[[], torch.nn.Module]
    load: Callable[..., torch.nn.Module]


#: Architectures other than `BiomedParseV`, by name (the name a checkpoint's JSON gives as ``architecture``).
ARCHITECTURES: dict[str, Architecture] = {REFERENCE_V2: Architecture(build_reference_v2, load_reference_v2)}


def build_model(config: str | ModelConfig | dict = "tiny"):
    """Build a randomly initialised model from a registered name (`CONFIGS` or `ARCHITECTURES`), a config
    or a config dict (`BiomedParseV`)."""
    if isinstance(config, str) and config in ARCHITECTURES:
        return ARCHITECTURES[config].build()
    if isinstance(config, str):
        if config not in CONFIGS:
            choices = sorted([*CONFIGS, *ARCHITECTURES])
            raise InputError(f"unknown model config {config!r}; choose one of {choices}")
        config = CONFIGS[config]
    elif isinstance(config, dict):
        config = config_from_dict(config)
    return BiomedParseV(config)
