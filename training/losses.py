"""The training loss of BiomedParse-V (REFERENCE §2).

For every (image, prompt) pair: existence BCE with positive weight 3. For the positive pairs only (the
prompted object is in the slice): Dice + pixel BCE on the mask and the same on the edge map. Negative
pairs teach only the ISD, so empty slices never push the mask head towards "nothing".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per map.

    Parameters
    ----------
    logits : Tensor (N, H, W)
    target : Tensor (N, H, W) in {0, 1}

    Returns
    -------
    Tensor (N,)
    """
    prob = torch.sigmoid(logits.float()).flatten(1)
    tgt = target.float().flatten(1)
    overlap = (prob * tgt).sum(1)
    return 1.0 - (2.0 * overlap + eps) / (prob.sum(1) + tgt.sum(1) + eps)


def mask_losses(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean Dice loss, mean pixel BCE) over N maps (N, H, W); zero when N is 0."""
    if logits.shape[0] == 0:
        zero = logits.sum() * 0.0
        return zero, zero
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(
            logits[:, None].float(), size=target.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
    dice = soft_dice_loss(logits, target).mean()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return dice, bce


def segmentation_loss(
    outputs: dict,
    masks: torch.Tensor,
    edges: torch.Tensor,
    exists: torch.Tensor,
    pos_weight: float = 3.0,
    edge_weight: float = 1.0,
    aux_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for one batch.

    Parameters
    ----------
    outputs : dict
        Model outputs: ``mask_logits`` (B, P, H, W), ``edge_logits`` (B, P, H, W), ``exist_logits`` (B, P)
        and optionally ``aux`` (list of (B, P, h, w) mask logits of earlier decoder layers).
    masks, edges : Tensor (B, P, H, W) {0, 1}
        Targets (empty for absent prompts).
    exists : Tensor (B, P) {0, 1}
        1 where the prompted object is in the slice.
    pos_weight : float
        Weight of the positive class in the existence BCE (3 in the reference).
    edge_weight : float
        Weight of the edge Dice + BCE relative to the mask's.
    aux_weight : float
        Weight of the deep-supervision mask losses of the auxiliary layers (averaged over layers).

    Returns
    -------
    loss : Tensor ()
    parts : dict of float
        ``exist``, ``mask_dice``, ``mask_bce``, ``edge_dice``, ``edge_bce``, ``aux`` for logging.
    """
    exists = exists.float()
    exist = F.binary_cross_entropy_with_logits(
        outputs["exist_logits"].float(), exists, pos_weight=torch.tensor(pos_weight, device=exists.device)
    )
    positive = exists.flatten() > 0.5
    mask_logits = outputs["mask_logits"].flatten(0, 1)[positive]
    edge_logits = outputs["edge_logits"].flatten(0, 1)[positive]
    mask_target = masks.flatten(0, 1)[positive]
    edge_target = edges.flatten(0, 1)[positive]
    mask_dice, mask_bce = mask_losses(mask_logits, mask_target)
    edge_dice, edge_bce = mask_losses(edge_logits, edge_target)
    total = exist + mask_dice + mask_bce + edge_weight * (edge_dice + edge_bce)
    aux_total = total.new_zeros(())
    aux_layers = outputs.get("aux") or []
    if aux_weight > 0 and len(aux_layers) > 0:
        for layer_logits in aux_layers:
            d, b = mask_losses(layer_logits.flatten(0, 1)[positive], mask_target)
            aux_total = aux_total + (d + b) / len(aux_layers)
        total = total + aux_weight * aux_total
    parts = {
        "exist": float(exist.detach()),
        "mask_dice": float(mask_dice.detach()),
        "mask_bce": float(mask_bce.detach()),
        "edge_dice": float(edge_dice.detach()),
        "edge_bce": float(edge_bce.detach()),
        "aux": float(aux_total.detach()),
    }
    return total, parts
