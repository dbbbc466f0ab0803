"""`ReferenceV2`: the BiomedParse v2 network (371.8M parameters) that loads ``biomedparse_v2.ckpt``.

::

    model = build_reference_v2().eval()                   # or load_reference_v2("biomedparse_v2.ckpt")
    text = model.encode_text(["liver in abdominal CT"])   # ReferenceText, reuse for every slice
    feats = model.encode_image(model.normalize(rgb))      # rgb (B, 3, 512, 512) float on the 0-255 scale
    out = model.decode(feats, text, mode="boltz")         # logits (B, P, 128, 128), existence (B, P)

`forward_volume` reproduces the reference ``BiomedParseModel.forward(mode="eval")`` on a (1, D, H, W)
volume: order-1 reflection packing, slice batches, and its (P, D, …) outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from fveseg.model.reference_v2.clip_text import ClipTextTower, ReferenceText
from fveseg.model.reference_v2.decoder import ReferenceBoltzFormerDecoder
from fveseg.model.reference_v2.focalnet import ReferenceFocalNet
from fveseg.model.reference_v2.pixel_decoder import ReferencePixelDecoder, ReferencePixelFeatures

__all__ = ["ReferenceV2", "PIXEL_MEAN", "PIXEL_STD", "EDGE_QUERIES", "LICENCE_NOTICE"]

PIXEL_MEAN = 114.495  # mean of the reference's ImageNet RGB means (gray_scale=True), 0-255 scale
PIXEL_STD = 57.63
EDGE_QUERIES = 4
LICENCE_NOTICE = (
    "BiomedParse v2 weights (biomedparse_v2.ckpt, Microsoft) are released under a non-commercial "
    "licence on a gated Hugging Face repository: you must accept it and download the file yourself. "
    "fveseg neither downloads nor ships them; research and non-commercial use only."
)


def tile_per_prompt(x: torch.Tensor, prompts: int) -> torch.Tensor:
    """(B, …) -> (B·P, …), image-major, prompt-minor (the reference's ``tile_feature``)."""
    return (
        x.unsqueeze(1).expand(x.shape[0], prompts, *x.shape[1:]).reshape(x.shape[0] * prompts, *x.shape[1:])
    )


class ReferenceV2(nn.Module):
    """BiomedParse v2: FocalNet-L, 512-wide pixel decoder, BoltzFormer decoder + ISD, CLIP text tower.

    Attributes
    ----------
    architecture : str
        ``"reference-v2"``.
    input_size : int
        512, the side the reference resizes every slice to.
    metadata : dict
        Filled by the loaders (source file, licence notice).
    """

    architecture = "reference-v2"
    input_size = 512

    def __init__(self):
        super().__init__()
        self.metadata: dict = {"licence": LICENCE_NOTICE}
        self.register_buffer("pixel_mean", torch.full((1, 3, 1, 1), PIXEL_MEAN))
        self.register_buffer("pixel_std", torch.full((1, 3, 1, 1), PIXEL_STD))
        self.backbone = ReferenceFocalNet()
        self.pixel_decoder = ReferencePixelDecoder(self.backbone.channels)
        self.decoder = ReferenceBoltzFormerDecoder()
        self.text = ClipTextTower()

    # -- halves -------------------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """0-255 images (B, 3, H, W) -> float32 ``(x - 114.495) / 57.63`` (one grey mean/std)."""
        return (images.float() - self.pixel_mean.mean()) / self.pixel_std.mean()

    def encode_text(self, prompts: list[str]) -> ReferenceText:
        """Encode prompts once; the result serves every slice."""
        return self.text.encode(prompts)

    def encode_image(self, images: torch.Tensor, return_backbone: bool = False):
        """Backbone + pixel decoder on normalised images (B, 3, H, W), H and W multiples of 32.

        Returns `ReferencePixelFeatures`, and the backbone's dict res2..res5 with ``return_backbone``.
        """
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of 32")
        res = self.backbone(images)
        feats = self.pixel_decoder(res)
        return (feats, res) if return_backbone else feats

    def decode(
        self,
        features: ReferencePixelFeatures,
        text: ReferenceText,
        mode: str = "boltz",
        generator: torch.Generator | None = None,
        attn_masks: list[torch.Tensor] | None = None,
        return_layers: bool = False,
    ) -> dict:
        """Masks, edges and existence of every (image, prompt) pair at stride 4.

        Returns
        -------
        dict
            ``mask_logits`` (B, P, H/4, W/4) = mean of the first 12 query logits; ``edge_logits``
            (B, P, H/4, W/4) = mean of the last 4; ``exist_logits`` (B, P); ``per_query`` (B·P, 16, H/4, W/4);
            with ``return_layers`` also ``layer_masks`` (10 × (B·P, 16, H/4, W/4)).
        """
        b, p = features.batch_size, text.num_prompts
        device = features.mask_features.device
        tokens = text.grounding_tokens.to(device)
        out = self.decoder(
            [tile_per_prompt(x, p) for x in features.multi_scale_features],
            tile_per_prompt(features.mask_features, p),
            tokens.repeat(1, b, 1),
            mode=mode,
            generator=generator,
            attn_masks=attn_masks,
            return_layers=return_layers,
        )
        per_query = out["pred_masks"]
        h, w = per_query.shape[-2:]
        result = {
            "mask_logits": per_query[:, :-EDGE_QUERIES].mean(1).view(b, p, h, w),
            "edge_logits": per_query[:, -EDGE_QUERIES:].mean(1).view(b, p, h, w),
            "exist_logits": out["existence"].view(b, p),
            "per_query": per_query,
        }
        if return_layers:
            result["layer_masks"] = out["layer_masks"]
        return result

    # -- the reference's volume forward --------------------------------------------------------------
    @staticmethod
    def pack_order1(volume: torch.Tensor) -> torch.Tensor:
        """(D, H, W) -> (D, 3, H, W): (slice d, d-1, d+1) with reflection at the ends; D = 1 repeats."""
        if volume.shape[0] == 1:
            return volume[:, None].expand(1, 3, *volume.shape[1:])
        before = torch.cat([volume[1:2], volume[:-1]])
        after = torch.cat([volume[1:], volume[-2:-1]])
        return torch.stack([volume, before, after], dim=1)

    @torch.no_grad()
    def forward_volume(
        self,
        volume: torch.Tensor,
        prompts: list[str],
        slice_batch_size: int = 4,
        mode: str = "boltz",
        generator: torch.Generator | None = None,
        attn_masks: list[list[torch.Tensor]] | None = None,
        record: dict | None = None,
    ) -> dict:
        """The reference ``forward(mode="eval")`` on a (D, H, W) or (1, D, H, W) 0-255 volume.

        Parameters
        ----------
        attn_masks : list of list of torch.Tensor, optional
            Per slice batch, the 10 recorded attention masks to inject (boltz replay).
        record : dict, optional
            Filled with ``text``, ``backbone/resN``, ``pixel_decoder/…`` (slice-batches concatenated) and
            ``layer_masks`` (per slice batch), for comparisons.

        Returns
        -------
        dict
            ``pred_gmasks`` (P, D, H/4, W/4), ``edge_masks`` (P, D, H/4, W/4), ``object_existence`` (P, D),
            all logits, and ``per_query`` (D·P, 16, H/4, W/4).
        """
        volume = volume.reshape(-1, *volume.shape[-2:])
        rgb = self.pack_order1(volume)
        text = self.encode_text(prompts)
        outs: dict[str, list] = {"mask_logits": [], "edge_logits": [], "exist_logits": [], "per_query": []}
        for batch_index, start in enumerate(range(0, rgb.shape[0], slice_batch_size)):
            images = self.normalize(rgb[start : start + slice_batch_size].to(self.pixel_mean.device))
            feats, res = self.encode_image(images, return_backbone=True)
            masks = attn_masks[batch_index] if attn_masks is not None else None
            out = self.decode(
                feats,
                text,
                mode=mode,
                generator=generator,
                attn_masks=masks,
                return_layers=record is not None,
            )
            for key in outs:
                outs[key].append(out[key])
            if record is not None:
                record["text"] = text
                for k, v in res.items():
                    record.setdefault(f"backbone/{k}", []).append(v)
                record.setdefault("pixel_decoder/mask_features", []).append(feats.mask_features)
                record.setdefault("pixel_decoder/transformer_encoder_features", []).append(
                    feats.transformer_encoder_features
                )
                for i, x in enumerate(feats.multi_scale_features):
                    record.setdefault(f"pixel_decoder/multi_scale_features_{i}", []).append(x)
                record.setdefault("layer_masks", []).append(out["layer_masks"])
        if record is not None:
            for key, value in record.items():
                if key.startswith(("backbone/", "pixel_decoder/")):
                    record[key] = torch.cat(value)
        cat = {k: torch.cat(v) for k, v in outs.items()}
        return {
            "pred_gmasks": cat["mask_logits"].transpose(0, 1),
            "edge_masks": cat["edge_logits"].transpose(0, 1),
            "object_existence": cat["exist_logits"].transpose(0, 1),
            "per_query": cat["per_query"],
        }
