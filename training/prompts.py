"""The prompt table: which words train which class, and which words are kept out of training.

Training draws a paraphrase for every class a volume holds and adds "negative" prompts (targets that are
not in the image, whose masks are empty) so the ISD learns to say "absent". Two groups of prompts never
appear in training and exist only for evaluation: held-out paraphrases of "nuclei" (do unseen phrasings
work?) and held-out absent targets (does the ISD reject prompts it has never seen?).
"""

from __future__ import annotations

import numpy as np

# class name (as in the label files) -> paraphrases used in training; the first is the canonical prompt
TRAIN_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "nuclei": (
        "nuclei",
        "cell nuclei",
        "nucleus",
        "DAPI-stained nuclei",
        "Hoechst nuclei",
        "fluorescent nuclei",
        "stained nuclei",
    ),
    "cell membranes": ("cell membranes", "membrane", "plasma membrane", "cell membrane"),
    "cells": ("cells", "whole cells", "cell bodies"),
    "spots": ("spots", "puncta", "foci"),
}

# targets that are never present in our training images: their masks are empty (ISD negatives)
TRAIN_NEGATIVES: tuple[str, ...] = (
    "blood vessels",
    "tumour",
    "kidney",
    "lung",
    "bone",
    "axons",
    "background",
    "golgi apparatus",
    "cytoplasm",
    "heart",
    "brain",
    "bacteria",
    "red blood cells",
    "endoplasmic reticulum",
    "actin filaments",
    "microtubules",
    "spleen",
    "pancreas",
    # other organelles and small structures, so that "not a nucleus" is learnt beyond organs
    "lysosomes",
    "endosomes",
    "peroxisomes",
    "lipid droplets",
    "vesicles",
    "cilia",
    "synapses",
    "dendrites",
)

# never trained on: evaluation only
HELDOUT_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "nuclei": ("nuclear stain", "cell nucleus in fluorescence microscopy"),
}
HELDOUT_NEGATIVES: tuple[str, ...] = ("mitochondria", "liver")

# class names other loaders may use for nuclei instances
CLASS_ALIASES: dict[str, str] = {"instances": "nuclei", "nucleus": "nuclei", "cell nuclei": "nuclei"}


def canonical_class(name: str) -> str:
    """Map a label file's class name to the prompt table's class name (unknown names pass through)."""
    key = name.strip()
    return CLASS_ALIASES.get(key.lower(), key)


def training_prompts() -> list[str]:
    """Every prompt training may draw, in a fixed order (paraphrases, then negatives)."""
    prompts = [p for group in TRAIN_PARAPHRASES.values() for p in group]
    return prompts + list(TRAIN_NEGATIVES)


def evaluation_prompts() -> list[str]:
    """Prompts used only by evaluation (held-out paraphrases and held-out negatives)."""
    prompts = [p for group in HELDOUT_PARAPHRASES.values() for p in group]
    return prompts + list(HELDOUT_NEGATIVES)


def all_prompts(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Training prompts, evaluation prompts and `extra` ones, without duplicates, order kept."""
    return list(dict.fromkeys(training_prompts() + evaluation_prompts() + list(extra)))


def paraphrases_for(class_name: str, table: dict[str, tuple[str, ...]] | None = None) -> tuple[str, ...]:
    """Training paraphrases of a class; a class missing from the table is prompted by its own name."""
    table = TRAIN_PARAPHRASES if table is None else table
    return table.get(canonical_class(class_name), (class_name,))


def sample_prompts(
    classes: list[str],
    rng: np.random.Generator,
    n_prompts: int = 4,
    table: dict[str, tuple[str, ...]] | None = None,
    negatives: tuple[str, ...] = TRAIN_NEGATIVES,
    min_negatives: int = 1,
) -> list[tuple[str, str | None]]:
    """Draw `n_prompts` (prompt, class) pairs for one training slice.

    Parameters
    ----------
    classes : list of str
        Classes labelled in the volume (present or not in this particular slice).
    rng : numpy.random.Generator
    n_prompts : int
        Prompts per slice; always returned exactly (negatives fill the rest).
    table : dict, optional
        Class -> paraphrases (defaults to `TRAIN_PARAPHRASES`).
    negatives : tuple of str
        Absent targets to draw negatives from.
    min_negatives : int
        At least this many absent-target prompts per slice (so every batch teaches the ISD "absent").

    Returns
    -------
    list of (prompt, class_name or None)
        ``None`` marks an absent target: empty mask, existence 0.
    """
    n_classes = min(len(classes), max(n_prompts - min_negatives, 0))
    chosen = list(rng.permutation(len(classes))[:n_classes]) if classes else []
    pairs: list[tuple[str, str | None]] = []
    for i in chosen:
        options = paraphrases_for(classes[i], table)
        pairs.append((str(options[rng.integers(len(options))]), classes[i]))
    n_neg = n_prompts - len(pairs)
    picks = rng.choice(len(negatives), size=n_neg, replace=n_neg > len(negatives))
    pairs.extend((negatives[j], None) for j in picks)
    order = rng.permutation(len(pairs))
    return [pairs[j] for j in order]
