"""Official BiomedParse v2 state-dict names <-> `ReferenceV2` module names.

Official names are those of ``BiomedParseModel.state_dict()`` (the checkpoint's keys less ``model.``).
Only the backbone needs more than a prefix change (timm's FocalNet layout):

=================================================  ===================================================
official                                           ReferenceV2
=================================================  ===================================================
backbone.patch_embed.{proj,norm}.*                 backbone.body.stem.{proj,norm}.*
backbone.layers.i.downsample.*                     backbone.body.layers.(i+1).downsample.*
backbone.layers.i.blocks.j.gamma_1 / gamma_2       backbone.body.layers.i.blocks.j.ls1.gamma / ls2.gamma
backbone.layers.i.blocks.j.norm1 / norm2           backbone.body.layers.i.blocks.j.norm1_post / norm2_post
backbone.layers.i.blocks.j.{modulation,mlp}.*      same under backbone.body (Linear -> 1x1 conv weights)
backbone.normK.*                                   backbone.out_norms.K.*
sem_seg_head.pixel_decoder.*                       pixel_decoder.*
sem_seg_head.predictor.language_encoder.
    encoder_transformer.* / lang_proj / logit_scale text.* / text.lang_proj / text.logit_scale
sem_seg_head.predictor.*                           decoder.*
pixel_mean, pixel_std                              pixel_mean, pixel_std
=================================================  ===================================================
"""

from __future__ import annotations

import re

__all__ = ["to_module_name", "to_official_name", "LINEAR_AS_CONV"]

_TEXT = "sem_seg_head.predictor.language_encoder."
_BLOCK = re.compile(r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWN = re.compile(r"^backbone\.layers\.(\d+)\.downsample\.(.+)$")
_OUT_NORM = re.compile(r"^backbone\.norm(\d+)\.(.+)$")
_BLOCK_RENAMES = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma"}
_BLOCK_PREFIX_RENAMES = {"norm1.": "norm1_post.", "norm2.": "norm2_post."}
# official nn.Linear weights (out, in) that timm holds as 1x1 convolutions (out, in, 1, 1)
LINEAR_AS_CONV = re.compile(
    r"^backbone\.body\.layers\.\d+\.blocks\.\d+\.(modulation\.(f|proj)|mlp\.fc[12])\.weight$"
)


def to_module_name(name: str) -> str:
    """Official state-dict name -> `ReferenceV2` state-dict name (KeyError if it has no counterpart)."""
    if name in ("pixel_mean", "pixel_std"):
        return name
    if name.startswith("backbone."):
        if name.startswith("backbone.patch_embed."):
            return "backbone.body.stem." + name[len("backbone.patch_embed.") :]
        if m := _DOWN.match(name):
            return f"backbone.body.layers.{int(m[1]) + 1}.downsample.{m[2]}"
        if m := _OUT_NORM.match(name):
            return f"backbone.out_norms.{m[1]}.{m[2]}"
        if m := _BLOCK.match(name):
            rest = _BLOCK_RENAMES.get(m[3], m[3])
            for old, new in _BLOCK_PREFIX_RENAMES.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
            return f"backbone.body.layers.{m[1]}.blocks.{m[2]}.{rest}"
    elif name.startswith(_TEXT):
        rest = name[len(_TEXT) :]
        return "text." + rest.removeprefix("encoder_transformer.")
    elif name.startswith("sem_seg_head.pixel_decoder."):
        return "pixel_decoder." + name[len("sem_seg_head.pixel_decoder.") :]
    elif name.startswith("sem_seg_head.predictor."):
        return "decoder." + name[len("sem_seg_head.predictor.") :]
    raise KeyError(name)


def to_official_name(name: str) -> str:
    """`ReferenceV2` state-dict name -> official name (inverse of `to_module_name`)."""
    if name in ("pixel_mean", "pixel_std"):
        return name
    if name.startswith("backbone.body.stem."):
        return "backbone.patch_embed." + name[len("backbone.body.stem.") :]
    if m := re.match(r"^backbone\.body\.layers\.(\d+)\.downsample\.(.+)$", name):
        return f"backbone.layers.{int(m[1]) - 1}.downsample.{m[2]}"
    if m := re.match(r"^backbone\.out_norms\.(\d+)\.(.+)$", name):
        return f"backbone.norm{m[1]}.{m[2]}"
    if m := re.match(r"^backbone\.body\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$", name):
        rest = {v: k for k, v in _BLOCK_RENAMES.items()}.get(m[3], m[3])
        for old, new in _BLOCK_PREFIX_RENAMES.items():
            if rest.startswith(new):
                rest = old + rest[len(new) :]
        return f"backbone.layers.{m[1]}.blocks.{m[2]}.{rest}"
    if name.startswith("text."):
        rest = name[len("text.") :]
        if rest in ("lang_proj", "logit_scale"):
            return _TEXT + rest
        return _TEXT + "encoder_transformer." + rest
    if name.startswith("pixel_decoder."):
        return "sem_seg_head." + name
    if name.startswith("decoder."):
        return "sem_seg_head.predictor." + name[len("decoder.") :]
    raise KeyError(name)
