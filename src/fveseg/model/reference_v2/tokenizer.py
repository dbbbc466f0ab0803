"""Offline CLIP BPE tokenizer, as the reference v2 text tower expects it.

Built from the vendored ``bpe_simple_vocab_16e6.txt.gz`` (open_clip, MIT licence: see
``LICENSE-open_clip.txt``) exactly as OpenAI's ``simple_tokenizer.py`` builds it: 48,894 merges, a
49,408-token vocabulary ending with ``<|startoftext|>`` = 49406 and ``<|endoftext|>`` = 49407.
Sequences are ``[bos, tokens..., eos]`` truncated to 77 and padded with 49407 (not 0), like the
Hugging Face ``CLIPTokenizer`` call the reference makes (``padding="max_length", truncation=True``).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["ClipTokenizer", "BOS_ID", "EOS_ID", "PAD_ID", "CONTEXT_LENGTH"]

BOS_ID = 49406
EOS_ID = 49407
PAD_ID = EOS_ID  # the reference pads with <|endoftext|>
CONTEXT_LENGTH = 77
_BPE_FILE = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@lru_cache
def _pattern():
    import regex  # Unicode classes \p{L}, \p{N}; imported lazily (a transformers dependency)

    return regex.compile(_PATTERN, regex.IGNORECASE)


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable character table of GPT-2/CLIP BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _clean(text: str) -> str:
    try:  # ftfy is optional: the reference used it, but it changes nothing for plain ASCII prompts
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """CLIP byte-pair tokenizer (no network access; the vocabulary ships with fveseg).

    Examples
    --------
    >>> ClipTokenizer().encode("a photo of a cat")
    [49406, 320, 1125, 539, 320, 2368, 49407]
    """

    def __init__(self, bpe_path: str | Path = _BPE_FILE):
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        byte_chars = list(_bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.bpe_ranks = {merge: i for i, merge in enumerate(merges)}
        self._cache: dict[str, list[str]] = {}

    def _bpe(self, token: str) -> list[str]:
        if token in self._cache:
            return self._cache[token]
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with ``<|startoftext|>`` and ``<|endoftext|>``, unpadded, untruncated."""
        table = _bytes_to_unicode()
        ids = [BOS_ID]
        for piece in _pattern().findall(_clean(text)):
            piece = "".join(table[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(piece))
        return ids + [EOS_ID]

    def __call__(
        self, texts: list[str], context_length: int = CONTEXT_LENGTH
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids and attention mask.

        Returns
        -------
        input_ids : torch.Tensor
            (N, context_length) int64; truncated texts keep their final ``<|endoftext|>``; padding 49407.
        attention_mask : torch.Tensor
            (N, context_length) int64, 1 on real tokens (bos and eos included).
        """
        ids = torch.full((len(texts), context_length), PAD_ID, dtype=torch.int64)
        mask = torch.zeros((len(texts), context_length), dtype=torch.int64)
        for row, text in enumerate(texts):
            tokens = self.encode(text)
            if len(tokens) > context_length:
                tokens = tokens[: context_length - 1] + [EOS_ID]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask
