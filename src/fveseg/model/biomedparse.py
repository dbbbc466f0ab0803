"""BiomedParse-V: backbone -> pixel decoder -> BoltzFormer decoder + ISD, text encoder on the side.

Inference (prompts shared by all images)::

    model = build_model("tiny").eval()
    text = model.encode_text(["nuclei", "cell membranes"])      # TextTokens (P, L, C_text), cached
    features = model.encode_image(images)                         # images (B, 3, H, W), normalised
    out = model.decode(features, text, generator=torch.Generator().manual_seed(0))
    out["mask_logits"]  # (B, P, H, W); out["edge_logits"] (B, P, H, W); out["exist_logits"] (B, P)

Training with a different prompt set per image: give text tokens of shape (B, P, L, C) (mask (B, P, L)),
e.g. ``TextTokens.stack([table.select(idx_b) for each image b])``, or ``table.select(index)`` on a (P, L, C)
table followed by ``.tokens.view(B, P, L, C)``. Image b is then paired with prompts ``tokens[b]``; every
image needs the same P (pad with any prompt and zero its loss weight). ``model(images, text)`` is
``decode(encode_image(images), text)``; in training mode the output also holds ``aux``: the mask logits
of every earlier prediction (initial + layers 1..N-1), each (B, P, H, W) upsampled to the input size,
and ``aux_edge`` likewise for the edges. Boltzmann sampling draws from the global RNG unless a generator
is given.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fveseg.model.backbone import FocalNetBackbone
from fveseg.model.decoder import BoltzFormerDecoder
from fveseg.model.pixel_decoder import PixelDecoder, PixelFeatures
from fveseg.model.text_encoder import (
    BUNDLED_TEXT_TABLE,
    MiniLMTextEncoder,
    PrecomputedTextEncoder,
    TextEncoder,
    TextTokens,
)

__all__ = ["ARCHITECTURE", "BiomedParseV"]

#: The ``architecture`` name of the networks this project builds and trains (`fveseg.inference.engines`).
ARCHITECTURE = "biomedparse-v"


class BiomedParseV(nn.Module):
    """The text-prompted 2D segmentation network that runs on FVE-encoded slices.

    Parameters
    ----------
    config : ModelConfig
        Architecture (see `fveseg.model.build.ModelConfig`).

    Attributes
    ----------
    architecture : str
        `ARCHITECTURE`: picks the engine that runs it (`fveseg.inference.engines.ENGINES`).
    metadata : dict
        Checkpoint metadata (FVE order, input size, normalisation, prompts, …); filled by
        `fveseg.model.checkpoint.load_checkpoint` or by the trainer before saving.
    attention_mode : str
        "boltz" (Boltzmann sampling, the default) or "det" (thresholded masked attention).
    """

    architecture = ARCHITECTURE

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.metadata: dict = {}
        self.attention_mode = "boltz"
        self.backbone = FocalNetBackbone(
            embed_dim=config.embed_dim,
            depths=config.depths,
            focal_levels=config.focal_levels,
            focal_windows=config.focal_windows,
            use_conv_embed=config.use_conv_embed,
            use_post_norm=config.use_post_norm,
            use_layerscale=config.use_layerscale,
            drop_path_rate=config.drop_path_rate,
        )
        self.pixel_decoder = PixelDecoder(
            self.backbone.channels,
            conv_dim=config.conv_dim,
            mask_dim=config.mask_dim,
            encoder_layers=config.encoder_layers,
            nheads=config.nheads,
            ffn_dim=config.encoder_ffn_dim,
        )
        self.decoder = BoltzFormerDecoder(
            in_channels=config.conv_dim,
            mask_dim=config.mask_dim,
            text_dim=config.text_dim,
            hidden_dim=config.hidden_dim,
            num_layers=config.decoder_layers,
            nheads=config.nheads,
            ffn_dim=config.ffn_dim,
            num_seg_queries=config.num_seg_queries,
            num_edge_queries=config.num_edge_queries,
            attention_strides=config.attention_strides,
            pre_self_attention=config.pre_self_attention,
            sample_ratio=config.sample_ratio,
            base_temperature=config.base_temperature,
        )
        self._text_encoder: TextEncoder | None = None

    # -- text ---------------------------------------------------------------------------------------
    @property
    def text_encoder(self) -> TextEncoder:
        """The frozen text encoder (created on first use from ``config.text_encoder``)."""
        if self._text_encoder is None:
            if self.config.text_encoder != "minilm":
                raise ValueError(
                    f"text encoder {self.config.text_encoder!r} has no default; call set_text_encoder()"
                )
            # the shipped table answers the trained prompts; MiniLM loads only for a new prompt
            self._text_encoder = PrecomputedTextEncoder.from_file(
                BUNDLED_TEXT_TABLE, fallback=MiniLMTextEncoder()
            )
        return self._text_encoder

    def set_text_encoder(self, encoder: TextEncoder) -> None:
        """Use ``encoder`` (e.g. a `PrecomputedTextEncoder`); its width must be ``config.text_dim``."""
        if encoder.dim != self.config.text_dim:
            raise ValueError(f"text encoder width {encoder.dim} != model text_dim {self.config.text_dim}")
        self._text_encoder = encoder

    def encode_text(self, prompts: list[str]) -> TextTokens:
        """Token embeddings (P, L, text_dim) of ``prompts`` (frozen; cached by the encoder)."""
        return self.text_encoder.encode(prompts)

    # -- image --------------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> PixelFeatures:
        """Backbone + pixel decoder on images (B, 3, H, W), H and W multiples of 32."""
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of 32")
        return self.pixel_decoder(self.backbone(images))

    def decode(
        self,
        features: PixelFeatures,
        text: TextTokens,
        generator: torch.Generator | None = None,
        mode: str | None = None,
        return_aux: bool | None = None,
    ) -> dict:
        """Masks, edges and existence for every (image, prompt) pair.

        Parameters
        ----------
        features : PixelFeatures
            From `encode_image` (B images).
        text : TextTokens
            (P, L, C): every image with every prompt; or (B, P, L, C): image b with prompts ``[b]``.
        generator : torch.Generator, optional
            Boltzmann sampling source (on the features' device); None draws from the global RNG.
        mode : {"boltz", "det"}, optional
            Attention masking; default ``self.attention_mode``.
        return_aux : bool, optional
            Also return per-layer predictions (default: in training mode).

        Returns
        -------
        dict
            ``mask_logits`` (B, P, H, W), ``edge_logits`` (B, P, H, W), ``exist_logits`` (B, P) and, with
            aux, ``aux`` / ``aux_edge``: lists of (B, P, H, W) logits of the earlier predictions.
        """
        b = features.batch_size
        tokens, mask = text.tokens, text.mask
        if tokens.dim() == 3:
            tokens = tokens[None].expand(b, *tokens.shape)
            mask = mask[None].expand(b, *mask.shape)
        elif tokens.shape[0] != b:
            raise ValueError(f"per-image text has {tokens.shape[0]} rows for {b} images")
        device = features.mask.device
        out = self.decoder(
            features, tokens.to(device), mask.to(device), mode or self.attention_mode, generator
        )
        seg = self.decoder.num_seg_queries
        size = features.image_size

        def upsample(per_query: torch.Tensor, edges: bool) -> torch.Tensor:
            mean = per_query[:, :, seg:] if edges else per_query[:, :, :seg]
            return F.interpolate(mean.mean(2), size=size, mode="bilinear", align_corners=False)

        final = out["masks"][-1]
        result = {
            "mask_logits": upsample(final, False),
            "edge_logits": upsample(final, True),
            "exist_logits": out["exist_logits"],
        }
        if self.training if return_aux is None else return_aux:
            result["aux"] = [upsample(m, False) for m in out["masks"][:-1]]
            result["aux_edge"] = [upsample(m, True) for m in out["masks"][:-1]]
        return result

    def forward(
        self,
        images: torch.Tensor,
        text: TextTokens,
        generator: torch.Generator | None = None,
        mode: str | None = None,
    ) -> dict:
        """``decode(encode_image(images), text)``."""
        return self.decode(self.encode_image(images), text, generator=generator, mode=mode)
