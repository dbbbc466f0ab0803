"""Build the ``reference-v2`` architecture.

``fveseg.model.build.build_model`` only builds `BiomedParseV` configs, so this module exposes
`build_reference_v2`; the registry dispatches to it by name (see docs/reference-v2.md).
"""

from __future__ import annotations

import torch

from fveseg.model.reference_v2.model import PIXEL_MEAN, PIXEL_STD, ReferenceV2

__all__ = ["build_reference_v2", "NAME"]

NAME = "reference-v2"


def build_reference_v2(empty: bool = False, device: str | torch.device = "cpu") -> ReferenceV2:
    """A `ReferenceV2` (eval mode).

    Parameters
    ----------
    empty : bool
        Allocate parameters without initialising them (fast; for loading weights right after).
        Otherwise the modules' default initialisation runs (slow for 371M parameters, ~1.5 GB).
    device : str or torch.device
    """
    if not empty:
        return ReferenceV2().to(device).eval()
    with torch.device("meta"):
        model = ReferenceV2()
    model = model.to_empty(device=device)
    with torch.no_grad():  # buffers are constants, not weights: rebuild them
        model.pixel_mean.fill_(PIXEL_MEAN)
        model.pixel_std.fill_(PIXEL_STD)
        n = model.text.context_length
        model.text.causal_mask.copy_(torch.full((n, n), float("-inf"), device=device).triu_(1))
    return model.eval()
