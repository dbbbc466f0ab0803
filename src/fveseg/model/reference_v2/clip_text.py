"""The reference v2 text tower: a CLIP-style causal transformer (12 layers, width 512, 77 tokens).

Token embeddings (after ``ln_final``, times ``lang_proj``) of the attended tokens are what the decoder's
queries see ("grounding tokens"); the projected end-of-text row is the class embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fveseg.model.reference_v2.tokenizer import CONTEXT_LENGTH, ClipTokenizer

__all__ = ["ClipLayerNorm", "ClipTextTower", "ReferenceText"]


class ClipLayerNorm(nn.Module):
    """LayerNorm computed in float32 with the text tower's own epsilon (1e-12, as in X-Decoder)."""

    def __init__(self, width: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight * x.to(dtype) + self.bias


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResidualBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = ClipLayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = ClipLayerNorm(width)

    def forward(self, x: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=causal)[0]
        return x + self.mlp(self.ln_2(x))


@dataclass
class ReferenceText:
    """Encoded prompts, ready for the decoder.

    Attributes
    ----------
    prompts : list of str
    input_ids, attention_mask : torch.Tensor
        (P, 77) int64.
    token_emb : torch.Tensor
        (P, 77, 512) float32, projected token embeddings.
    class_emb : torch.Tensor
        (P, 512) float32, projected end-of-text embedding.
    grounding_tokens : torch.Tensor
        (L, P, 512) float32, the attended tokens of each prompt (L = longest prompt), zero-padded.
    """

    prompts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_emb: torch.Tensor
    class_emb: torch.Tensor
    grounding_tokens: torch.Tensor

    @property
    def num_prompts(self) -> int:
        return len(self.prompts)


class ClipTextTower(nn.Module):
    """Causal CLIP-style text transformer plus the ``lang_proj`` projection and ``logit_scale``.

    Parameters
    ----------
    vocab_size, width, layers, heads, context_length, proj_dim : int
        Reference values 49408, 512, 12, 8, 77, 512.
    """

    def __init__(
        self,
        vocab_size: int = 49408,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        context_length: int = CONTEXT_LENGTH,
        proj_dim: int = 512,
    ):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context_length, width))
        self.resblocks = nn.ModuleList([_ResidualBlock(width, heads) for _ in range(layers)])
        self.ln_final = ClipLayerNorm(width)
        self.lang_proj = nn.Parameter(torch.zeros(width, proj_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        causal = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self._tokenizer: ClipTokenizer | None = None

    @property
    def tokenizer(self) -> ClipTokenizer:
        if self._tokenizer is None:
            self._tokenizer = ClipTokenizer()
        return self._tokenizer

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(N, 77) int64 ids -> (N, 77, width) states after ``ln_final`` (before projection)."""
        x = self.token_embedding(input_ids) + self.positional_embedding
        x = x.permute(1, 0, 2)
        causal = self.causal_mask.to(x.dtype)
        for block in self.resblocks:
            x = block(x, causal)
        return self.ln_final(x.permute(1, 0, 2))

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> ReferenceText:
        """Tokenise and encode ``prompts`` (one string each; no ``[SEP]`` joining needed)."""
        device = self.lang_proj.device
        ids, mask = self.tokenizer(list(prompts), self.context_length)
        ids, mask = ids.to(device), mask.to(device)
        hidden = self.hidden_states(ids)
        token_emb = hidden @ self.lang_proj
        eot = hidden[torch.arange(hidden.shape[0], device=device), ids.argmax(dim=-1)]
        class_emb = eot @ self.lang_proj
        grounding = nn.utils.rnn.pad_sequence(
            [emb[m.bool()] for emb, m in zip(token_emb, mask)], padding_value=-1.0
        )
        # The reference pads with -1 then zeroes rows that sum to -width (its padding marker).
        grounding[grounding.sum(dim=-1) == -grounding.shape[-1]] = 0
        return ReferenceText(list(prompts), ids, mask, token_emb, class_emb, grounding)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Projected token embeddings (N, 77, proj_dim)."""
        return self.hidden_states(input_ids) @ self.lang_proj
