"""BoltzFormer text-conditioned mask decoder with Boltzmann attention sampling and the ISD head.

Layout of the work (B images, P prompts per image, Q queries, L text tokens, D hidden width):

* Queries are held as (B, P*Q, D). Cross-attention is per query (a softmax over keys), so putting all P
  prompts' queries of one image into one row attends to that image's keys once: this *is* the paper's
  repeat-interleave of image features, without copying them.
* Self-attention and the FFN run per (image, prompt) over ``[queries; text tokens]`` as (B*P, Q+L, D).
* Layer ``i`` cross-attends to the scale ``attention_strides[i % n]`` (default 16 -> 8 -> 4) with an
  attention mask from the previous prediction: ``mode="boltz"`` draws ``ratio * keys`` keys per query with
  p ∝ exp(sigmoid(logit) / T), T = base_temperature / (2 + i) (all keys start masked, drawn keys are
  unmasked); ``mode="det"`` is Mask2Former's mask (key masked where logit < 0). A query with nothing
  unmasked attends everywhere.
* ISD: one classification query per (image, prompt), after every layer
  ``c <- LN(c + CrossAttn(c, stopgrad([seg queries; text])))`` then ``c <- LN(c + FFN(c))``; a final linear
  layer gives the existence logit. The stop-gradient keeps negative slices out of the mask branch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fveseg.model.pixel_decoder import PixelFeatures, sine_position_encoding

__all__ = ["BoltzFormerDecoder", "boltzmann_attention_mask", "threshold_attention_mask"]


def boltzmann_attention_mask(
    logits: torch.Tensor, layer: int, ratio: float, base_temperature: float, generator=None
) -> torch.Tensor:
    """Boltzmann-sampled attention mask.

    Parameters
    ----------
    logits : Tensor (R, K)
        Previous mask logits of R queries over K keys.
    layer : int
        Decoder layer index; temperature T = base_temperature / (2 + layer).

    Returns
    -------
    Tensor (R, K) bool, True where the key is *masked* (not attended).
    """
    rows, keys = logits.shape
    temperature = base_temperature / (2 + layer)
    probs = torch.softmax(torch.sigmoid(logits.float()) / temperature, dim=-1)
    draws = max(1, int(ratio * keys))
    picked = torch.multinomial(probs, draws, replacement=True, generator=generator)
    masked = torch.ones(rows, keys, dtype=torch.bool, device=logits.device)
    masked.scatter_(1, picked, False)
    return masked


_POSITION_CACHE: dict = {}


def _cached_position(dim: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """Sine position encoding as (1, h*w, dim), cached per size/device/dtype (a few entries)."""
    key = (dim, h, w, str(device), dtype)
    if key not in _POSITION_CACHE:
        if len(_POSITION_CACHE) > 32:
            _POSITION_CACHE.clear()
        with torch.inference_mode(False):  # a normal tensor, usable by later training steps too
            pos = sine_position_encoding(dim, h, w, device, dtype).flatten(1).T[None].contiguous()
        _POSITION_CACHE[key] = pos
    return _POSITION_CACHE[key]


def threshold_attention_mask(logits: torch.Tensor) -> torch.Tensor:
    """Mask2Former attention mask (R, K) bool: True (masked) where the logit is below 0."""
    masked = logits < 0
    masked[masked.all(dim=-1)] = False
    return masked


class _MLP(nn.Sequential):
    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int):
        dims = [dim_in] + [hidden] * (layers - 1) + [dim_out]
        modules: list[nn.Module] = []
        for i in range(layers):
            modules.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                modules.append(nn.ReLU(inplace=True))
        super().__init__(*modules)


class _AttentionBlock(nn.Module):
    """Post-norm attention sub-layer: x <- LN(x + Attn(x + pos_q, kv + pos_k, kv))."""

    def __init__(self, dim: int, nheads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, nheads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, kv, pos_q=None, pos_k=None, attn_mask=None, key_padding_mask=None, keys=None):
        q = x if pos_q is None else x + pos_q
        k = keys if keys is not None else kv if pos_k is None else kv + pos_k
        if key_padding_mask is not None and attn_mask is None:
            attn_mask, key_padding_mask = self._padding_as_attention_mask(key_padding_mask, q), None
        out = self.attn(q, k, kv, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)[
            0
        ]
        return self.norm(x + out)

    def _padding_as_attention_mask(self, key_padding_mask: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The (B * heads, L, S) float mask, 0 or -inf, that MultiheadAttention makes of a (B, S) key padding
        mask (the same values, so the same outputs): given as a key padding mask, torch's shape check
        imports sympy, 0.3 s of the first call in every process."""
        heads = self.attn.num_heads
        pad = torch.zeros(key_padding_mask.shape, dtype=q.dtype, device=q.device)
        pad.masked_fill_(key_padding_mask, float("-inf"))
        return pad[:, None, None, :].expand(-1, heads, q.shape[1], -1).reshape(-1, q.shape[1], pad.shape[1])


class _FFNBlock(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, nheads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = _AttentionBlock(dim, nheads)
        self.self_attn = _AttentionBlock(dim, nheads)
        self.ffn = _FFNBlock(dim, ffn_dim)


class _ISDLayer(nn.Module):
    def __init__(self, dim: int, nheads: int, ffn_dim: int):
        super().__init__()
        self.cross_attn = _AttentionBlock(dim, nheads)
        self.ffn = _FFNBlock(dim, ffn_dim)


class BoltzFormerDecoder(nn.Module):
    """Text-conditioned query decoder (see module docstring).

    Parameters
    ----------
    in_channels : int
        Channels of the pixel-decoder maps.
    mask_dim : int
        Channels of the stride-4 mask feature.
    text_dim : int
        Width of the text-encoder tokens (projected to ``hidden_dim`` here, trainable).
    hidden_dim, num_layers, nheads, ffn_dim : int
        Decoder width, depth, heads and feed-forward width.
    num_seg_queries, num_edge_queries : int
        Queries averaged into the mask logit and the edge logit.
    attention_strides : tuple of int
        Scales cycled over by the layers' cross-attention.
    pre_self_attention : bool
        One self-attention over [queries; text] before the first layer.
    sample_ratio, base_temperature : float
        Boltzmann sampling: share of keys drawn per query, and the temperature numerator.
    """

    def __init__(
        self,
        in_channels: int,
        mask_dim: int,
        text_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 9,
        nheads: int = 8,
        ffn_dim: int = 2048,
        num_seg_queries: int = 12,
        num_edge_queries: int = 4,
        attention_strides: tuple[int, ...] = (16, 8, 4),
        pre_self_attention: bool = True,
        sample_ratio: float = 0.1,
        base_temperature: float = 1.0,
    ):
        super().__init__()
        self.num_seg_queries = num_seg_queries
        self.num_queries = num_seg_queries + num_edge_queries
        self.attention_strides = tuple(attention_strides)
        self.nheads = nheads
        self.sample_ratio = sample_ratio
        self.base_temperature = base_temperature
        self.text_proj = nn.Linear(text_dim, hidden_dim)
        self.input_proj = nn.ModuleList(
            [
                nn.Conv2d(in_channels, hidden_dim, 1) if in_channels != hidden_dim else nn.Identity()
                for _ in self.attention_strides
            ]
        )
        self.level_embed = nn.Embedding(len(self.attention_strides), hidden_dim)
        self.query_feat = nn.Embedding(self.num_queries, hidden_dim)
        self.query_embed = nn.Embedding(self.num_queries, hidden_dim)
        self.pre_self_attn = _AttentionBlock(hidden_dim, nheads) if pre_self_attention else None
        self.layers = nn.ModuleList([_DecoderLayer(hidden_dim, nheads, ffn_dim) for _ in range(num_layers)])
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.mask_embed = _MLP(hidden_dim, hidden_dim, mask_dim, 3)
        # ISD (independent segmentation discriminator)
        self.cls_query = nn.Embedding(1, hidden_dim)
        self.cls_layers = nn.ModuleList([_ISDLayer(hidden_dim, nheads, ffn_dim) for _ in range(num_layers)])
        self.cls_head = nn.Linear(hidden_dim, 1)

    # ----------------------------------------------------------------------------------------------
    def _predict(self, x: torch.Tensor, mask_feature: torch.Tensor) -> torch.Tensor:
        """Per-query mask logits (B, M, h4, w4) for queries x (B, M, D)."""
        embed = self.mask_embed(self.decoder_norm(x))
        return torch.einsum("bmc,bchw->bmhw", embed, mask_feature)

    def _attention_mask(self, masks, size, layer, mode, generator) -> torch.Tensor:
        """(B * nheads, M, K) bool attention mask (True = masked) from per-query masks (B, M, h4, w4)."""
        b, m = masks.shape[:2]
        logits = F.interpolate(masks.detach().float(), size=size, mode="bilinear", align_corners=False)
        logits = logits.flatten(0, 1).flatten(1)
        if mode == "boltz":
            masked = boltzmann_attention_mask(
                logits, layer, self.sample_ratio, self.base_temperature, generator
            )
        elif mode == "det":
            masked = threshold_attention_mask(logits)
        else:
            raise ValueError(f"attention mode must be 'boltz' or 'det', got {mode!r}")
        masked = masked.view(b, 1, m, -1).expand(b, self.nheads, m, masked.shape[-1])
        return masked.reshape(b * self.nheads, m, -1)

    def forward(
        self,
        features: PixelFeatures,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        mode: str = "boltz",
        generator: torch.Generator | None = None,
    ) -> dict:
        """Decode masks for every (image, prompt) pair.

        Parameters
        ----------
        features : PixelFeatures
            B images.
        text_tokens : Tensor (B, P, L, text_dim)
            Prompt tokens per image (shared prompts expanded over B by the caller).
        text_mask : Tensor (B, P, L) bool
            True for real tokens.

        Returns
        -------
        dict with ``masks`` list of (B, P, Q, h4, w4) per prediction (initial + one per layer) and
        ``exist_logits`` (B, P).
        """
        b, p, n_text = text_tokens.shape[:3]
        q = self.num_queries
        mask_feature = features.mask
        dim = self.query_feat.weight.shape[1]
        srcs, keys = [], []  # values (B, K, D) and keys = values + position (computed once per level)
        for level, stride in enumerate(self.attention_strides):
            src = self.input_proj[level](features.maps[stride])
            h, w = src.shape[-2:]
            pos = _cached_position(dim, h, w, src.device, src.dtype)
            src = src.flatten(2).transpose(1, 2) + self.level_embed.weight[level][None, None]
            srcs.append(src)
            keys.append(src + pos)

        text = self.text_proj(text_tokens.to(mask_feature.dtype)).reshape(b * p, n_text, dim)
        pad = ~text_mask.reshape(b * p, n_text)
        joint_pad = torch.cat([pad.new_zeros(b * p, q), pad], dim=1)
        query_pos = self.query_embed.weight[None].expand(b * p, q, dim)
        joint_pos = torch.cat([query_pos, query_pos.new_zeros(b * p, n_text, dim)], dim=1)
        x = self.query_feat.weight[None].expand(b * p, q, dim)
        if self.pre_self_attn is not None:
            joint = self.pre_self_attn(
                torch.cat([x, text], 1),
                torch.cat([x, text], 1),
                joint_pos,
                joint_pos,
                key_padding_mask=joint_pad,
            )
            x, text = joint[:, :q], joint[:, q:]
        x = x.reshape(b, p * q, dim)
        cls = self.cls_query.weight[None].expand(b * p, 1, dim)
        cls_pad = torch.cat([pad.new_zeros(b * p, self.num_seg_queries), pad], dim=1)

        masks = self._predict(x, mask_feature)
        outputs = [masks]
        for i, layer in enumerate(self.layers):
            level = i % len(srcs)
            size = features.maps[self.attention_strides[level]].shape[-2:]
            attn_mask = self._attention_mask(masks, size, i, mode, generator)
            x = layer.cross_attn(
                x, srcs[level], query_pos.reshape(b, p * q, dim), attn_mask=attn_mask, keys=keys[level]
            )
            joint = torch.cat([x.reshape(b * p, q, dim), text], 1)
            joint = layer.self_attn(joint, joint, joint_pos, joint_pos, key_padding_mask=joint_pad)
            joint = layer.ffn(joint)
            text = joint[:, q:]
            x = joint[:, :q].reshape(b, p * q, dim)
            # ISD sees the decoder state only through a stop-gradient
            kv = torch.cat([joint[:, : self.num_seg_queries], text], 1).detach()
            cls = self.cls_layers[i].cross_attn(cls, kv, key_padding_mask=cls_pad)
            cls = self.cls_layers[i].ffn(cls)
            masks = self._predict(x, mask_feature)
            outputs.append(masks)

        h4, w4 = mask_feature.shape[-2:]
        per_pair = [m.reshape(b, p, q, h4, w4) for m in outputs]
        exist = self.cls_head(cls[:, 0]).reshape(b, p)
        return {"masks": per_pair, "exist_logits": exist}
