"""Named pipeline variants for the evaluation protocol: NAME → overrides of `fveseg.params.SegmentParams`.

``default`` is the product as shipped (no overrides). Each ``no-*`` ablation removes one stage of the
default pipeline, so the protocol can tell whether the stage earns its place (a stage stays only if
removing it lowers the worst row; docs/experiments/2026-12-06-evaluation-protocol.md).

Inline variants on the command line: ``--variant 'NAME:field=value,field=value'`` (`parse_variant`).
Values are read as None, a bool (true/false), an int, a float or else a string; a field whose default
is a tuple takes ``;``-separated items (``prompts=nuclei;cells``). Any `SegmentParams` field is accepted,
including fields added after this file was written; an unknown field is an error.
"""

from __future__ import annotations

import dataclasses

__all__ = ["VARIANTS", "parse_value", "parse_variant", "resolve_variant", "check_overrides"]

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    # the automatic in-plane resize before the network (fveseg.inference.auto_scale)
    "no-auto-resize": {"resize": 1.0},
    # the choice of the noise-robust model by the volume's noise (fveseg.inference.model_choice)
    "no-model-choice": {"checkpoint": "default"},
    # trimming each instance's out-of-focus (haze) cross-sections (fveseg.instances.haze)
    "no-haze-trim": {"focus_fraction": 0.0},
    # dropping specks much smaller than the typical object (fveseg.instances.split)
    "no-speck-filter": {"min_relative_size": 0.0},
    # the existence gate's hysteresis (fveseg.inference.gate): low threshold = high threshold
    "no-hysteresis": {"exist_low": 0.5},
}


def parse_value(text: str):
    """``"None"`` → None, ``"true"``/``"false"`` → bool, then int, then float, else the string."""
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered == "none":
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(stripped)
        except ValueError:
            pass
    return stripped


def _fields() -> dict[str, dataclasses.Field]:
    from fveseg.params import SegmentParams

    return {f.name: f for f in dataclasses.fields(SegmentParams)}


def check_overrides(name: str, overrides: dict[str, object]) -> dict[str, object]:
    """Raise ValueError naming the valid fields when ``overrides`` sets a field SegmentParams lacks."""
    fields = _fields()
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(
            f"variant {name!r}: unknown SegmentParams field(s) {unknown}; valid fields: {', '.join(fields)}"
        )
    return overrides


def parse_variant(spec: str) -> tuple[str, dict[str, object]]:
    """``'NAME:field=value,field=value'`` → (NAME, overrides); ``'NAME'`` alone → a named variant."""
    if ":" not in spec:
        return resolve_variant(spec)
    name, _, body = spec.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"variant {spec!r}: give a name before ':'")
    fields = _fields()
    overrides: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"variant {spec!r}: {item!r} is not field=value")
        value = parse_value(text)
        field = fields.get(key)
        if field is not None and isinstance(field.default, tuple) and isinstance(value, str):
            value = tuple(parse_value(part) for part in value.split(";"))
        overrides[key] = value
    return name, check_overrides(name, overrides)


def resolve_variant(name: str) -> tuple[str, dict[str, object]]:
    """A named variant of `VARIANTS`; ValueError listing the names for an unknown one."""
    if name not in VARIANTS:
        raise ValueError(
            f"unknown variant {name!r}; named variants: {', '.join(VARIANTS)} "
            "(or inline: 'NAME:field=value,field=value')"
        )
    return name, check_overrides(name, dict(VARIANTS[name]))
