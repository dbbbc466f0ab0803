"""A micro model configuration shared by the model, checkpoint and inference tests (fast on a CPU)."""

import dataclasses

from fveseg.model import CONFIGS


def micro_config(**overrides):
    """The `tiny` architecture shrunk to a few thousand parameters and 64-pixel inputs."""
    values = dict(
        name="micro",
        embed_dim=8,
        depths=(1, 1, 1, 1),
        conv_dim=16,
        mask_dim=16,
        hidden_dim=32,
        decoder_layers=2,
        nheads=2,
        ffn_dim=32,
        num_seg_queries=2,
        num_edge_queries=1,
        input_size=64,
    )
    values.update(overrides)
    return dataclasses.replace(CONFIGS["tiny"], **values)
