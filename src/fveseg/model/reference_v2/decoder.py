"""The reference v2 BoltzFormer decoder with the existence classifier (ISD).

Hidden 512, 9 layers, 8 heads, FFN 2048, 16 queries (the first 12 make the mask, the last 4 the edges),
one initial self-attention + FFN over [queries; text tokens], and a classifier query that cross-attends
to the detached [queries; text tokens] after every layer. Module names follow the official
``BoltzFormerTextDecoder`` (less its language encoder, which is `ClipTextTower`).

Attention masking per layer (``mode``):

* ``"det"``: the reference with ``do_boltzmann=False``. Its threshold 1.1 exceeds every sigmoid, so each
  row is fully masked and then reset to all-False: plain unmasked cross-attention, deterministic.
* ``"boltz"``: the reference default. Keys whose sigmoid is below 1.1 (all of them) stay masked with
  probability ``(1 - p)**n`` where p ∝ exp(sigmoid(logit) / T), T = 1 / (2 + layer), n = 10 % of the keys;
  the draws are ``torch.rand`` of shape (B·P·heads, 16, h·w), from ``generator`` or the global RNG in the
  reference's order (so ``torch.manual_seed(0)`` reproduces the reference exactly).
* ``attn_masks``: a list of recorded bool masks, one per prediction-head call, injected instead.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fveseg.model.reference_v2.pixel_decoder import sine_position_embedding

__all__ = ["ReferenceBoltzFormerDecoder"]


class _SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = x + pos
        return self.norm(x + self.self_attn(q, k, value=x, need_weights=False)[0])


class _CrossAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d, heads)
        self.norm = nn.LayerNorm(d)

    def forward(self, x, memory, mask=None, pos=None, query_pos=None) -> torch.Tensor:
        q = x if query_pos is None else x + query_pos
        k = memory if pos is None else memory + pos
        out = self.multihead_attn(q, k, value=memory, attn_mask=mask, need_weights=False)[0]
        return self.norm(x + out)


class _FFN(nn.Module):
    def __init__(self, d: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(d, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class _MLP(nn.Module):
    def __init__(self, d: int, out_dim: int, layers: int = 3):
        super().__init__()
        dims = [d] * layers + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class ReferenceBoltzFormerDecoder(nn.Module):
    """BoltzFormer decoder + existence classifier, as in BiomedParse v2."""

    def __init__(
        self,
        hidden_dim: int = 512,
        num_queries: int = 16,
        nheads: int = 8,
        ffn_dim: int = 2048,
        layers: int = 9,
        mask_dim: int = 512,
        dim_proj: int = 512,
        mask_threshold: float = 1.1,
        sample_ratio: float = 0.1,
        base_temp: float = 1.0,
    ):
        super().__init__()
        self.num_queries, self.num_heads, self.num_layers = num_queries, nheads, layers
        self.mask_threshold, self.sample_ratio, self.base_temp = mask_threshold, sample_ratio, base_temp
        self.transformer_self_attention_layers = nn.ModuleList(
            _SelfAttention(hidden_dim, nheads) for _ in range(layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            _CrossAttention(hidden_dim, nheads) for _ in range(layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(_FFN(hidden_dim, ffn_dim) for _ in range(layers))
        self.classifier_cross_attention_layers = nn.ModuleList(
            _CrossAttention(hidden_dim, nheads) for _ in range(layers)
        )
        self.classifier_ffn_layers = nn.ModuleList(_FFN(hidden_dim, ffn_dim) for _ in range(layers))
        self.classifier = nn.Linear(hidden_dim, 1)
        self.initial_self_attention_layer = _SelfAttention(hidden_dim, nheads)
        self.initial_ffn_layer = _FFN(hidden_dim, ffn_dim)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat_ = nn.Embedding(num_queries, hidden_dim)
        self.query_embed_ = nn.Embedding(num_queries, hidden_dim)
        self.classifier_query = nn.Embedding(1, hidden_dim)
        self.level_embed = nn.Embedding(3, hidden_dim)
        self.mask_embed = _MLP(hidden_dim, mask_dim)
        # Kept for weight compatibility: the reference computes an unused query-text similarity with it.
        self.class_embed = nn.Parameter(torch.zeros(hidden_dim, dim_proj))

    def _attention_mask(
        self, logits: torch.Tensor, size, layer_id: int, mode: str, generator: torch.Generator | None
    ) -> torch.Tensor:
        prob = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        prob = prob.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)
        below = prob < self.mask_threshold
        if mode == "det":
            return below
        temp = self.base_temp / (2 + layer_id)
        weight = torch.exp(prob / temp) * below.float()
        weight = weight / weight.sum(dim=-1, keepdim=True)
        still_masked = (1 - weight) ** int(prob.shape[-1] * self.sample_ratio)
        draws = torch.rand(weight.shape, generator=generator, device=weight.device, dtype=weight.dtype)
        return below & (draws < still_masked)

    def forward(
        self,
        multi_scale: list[torch.Tensor],
        mask_features: torch.Tensor,
        text_tokens: torch.Tensor,
        mode: str = "det",
        generator: torch.Generator | None = None,
        attn_masks: list[torch.Tensor] | None = None,
        return_layers: bool = False,
    ) -> dict:
        """Decode B·P (image, prompt) pairs.

        Parameters
        ----------
        multi_scale : list of 3 torch.Tensor
            (N, 512, h_i, w_i) at strides 32, 16, 8, already repeated per prompt (N = B·P).
        mask_features : torch.Tensor
            (N, 512, H/4, W/4).
        text_tokens : torch.Tensor
            (L, N, 512) grounding tokens.
        mode : {"det", "boltz"}
        generator : torch.Generator, optional
            Source of the Boltzmann draws (default: the global RNG, as the reference).
        attn_masks : list of torch.Tensor, optional
            One bool mask (N·heads, 16, h·w) per prediction-head call (10), replacing the sampled ones.
        return_layers : bool
            Also return ``layer_masks``: the mask logits of every head call (10 × (N, 16, H/4, W/4)).

        Returns
        -------
        dict
            ``pred_masks`` (N, 16, H/4, W/4) logits, ``existence`` (N, 1) logits, optional ``layer_masks``.
        """
        if mode not in ("det", "boltz"):
            raise ValueError(f"mode must be 'det' or 'boltz', not {mode!r}")
        sizes = [x.shape[-2:] for x in multi_scale]
        pos = [sine_position_embedding(x, x.shape[1] // 2).flatten(2).permute(2, 0, 1) for x in multi_scale]
        src = [
            (x.flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            for i, x in enumerate(multi_scale)
        ]
        n = src[0].shape[1]
        query_pos = self.query_embed_.weight.unsqueeze(1).repeat(1, n, 1)
        output = self.query_feat_.weight.unsqueeze(1).repeat(1, n, 1)
        cls_output = self.classifier_query.weight.unsqueeze(1).repeat(1, n, 1)
        text_output, text_pos = text_tokens, text_tokens.detach().clone()
        combined_pos = torch.cat([query_pos, text_pos], dim=0)
        combined = self.initial_self_attention_layer(torch.cat([output, text_output], dim=0), combined_pos)
        output, text_output = combined[: self.num_queries], combined[self.num_queries :]
        output = self.initial_ffn_layer(output)

        calls = iter(attn_masks) if attn_masks is not None else None

        def head(output: torch.Tensor, size, layer_id: int):
            decoded = self.decoder_norm(output).transpose(0, 1)
            logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
            if calls is not None:
                mask = next(calls).to(logits.device)
            else:
                mask = self._attention_mask(logits.detach(), size, layer_id, mode, generator)
            return logits, mask

        logits, attn_mask = head(output, sizes[0], -1)
        layer_masks = [logits]
        for i in range(self.num_layers):
            level = i % 3
            attn_mask = attn_mask.clone()
            attn_mask[attn_mask.all(dim=-1)] = False  # a query with nothing to attend sees everything
            output = self.transformer_cross_attention_layers[i](
                output, src[level], attn_mask, pos[level], query_pos
            )
            combined = self.transformer_self_attention_layers[i](
                torch.cat([output, text_output], dim=0), combined_pos
            )
            output, text_output = combined[: self.num_queries], combined[self.num_queries :]
            output = self.transformer_ffn_layers[i](output)
            logits, attn_mask = head(output, sizes[(i + 1) % 3], i)
            layer_masks.append(logits)
            cls_output = self.classifier_cross_attention_layers[i](
                cls_output, combined.detach(), None, combined_pos.detach(), None
            )
            cls_output = self.classifier_ffn_layers[i](cls_output)
        out = {"pred_masks": logits, "existence": self.classifier(cls_output[0])}
        if return_layers:
            out["layer_masks"] = layer_masks
        return out
