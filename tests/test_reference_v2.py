"""reference-v2: tokenizer, name mapping, safe loading, pipeline; equivalence with the public code.

The equivalence tests need the fixture folder ``shared/reference-v2`` (or ``$FVESEG_REFERENCE_V2_DIR``)
and skip otherwise. By hand: ``.venv/bin/python -m pytest tests/test_reference_v2.py -q``.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from tests._reference_v2_fixture import fixture_dir, read_manifest, unpack_attention_mask

from fveseg.errors import CheckpointError
from fveseg.model.reference_v2 import ClipTokenizer, load_official_state_dict
from fveseg.model.reference_v2.loading import read_official_state_dict
from fveseg.model.reference_v2.model import ReferenceV2
from fveseg.model.reference_v2.names import to_module_name, to_official_name
from fveseg.model.reference_v2.pipeline import (
    gate_or_nms,
    merge_classes,
    nms_masks,
    pad_and_resize,
    restore_geometry,
)

FIXTURE = fixture_dir()
needs_fixture = pytest.mark.skipif(
    FIXTURE is None,
    reason="reference-v2 fixture not found (set FVESEG_REFERENCE_V2_DIR or add ../shared/reference-v2)",
)
PROMPTS = ["nuclei in fluorescence microscopy", "liver in abdominal CT"]


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return ReferenceV2()


# -- tokenizer ------------------------------------------------------------------------------------
def test_tokenizer_known_ids():
    tok = ClipTokenizer()
    assert tok.encode("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.encode("A photo of a  dog ")[-2:] == [1929, 49407]  # lower-cased, spaces collapsed
    assert tok.encode("liver in abdominal CT") == [49406, 12639, 530, 39328, 1122, 49407]


def test_tokenizer_pads_with_eot_and_truncates():
    ids, mask = ClipTokenizer()(["a photo of a cat", " ".join(["cat"] * 100)])
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    assert (ids[0, 7:] == 49407).all() and mask[0].sum() == 7
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407 and mask[1].all()


# -- names ----------------------------------------------------------------------------------------
def test_name_mapping_round_trip(meta_model):
    names = list(meta_model.state_dict())
    assert sum(p.numel() for p in meta_model.parameters()) == 371_798_778
    assert len(names) == 1050
    officials = [to_official_name(n) for n in names]
    assert len(set(officials)) == 1050
    assert [to_module_name(o) for o in officials] == names
    assert (
        to_official_name("backbone.body.layers.1.downsample.proj.weight")
        == "backbone.layers.0.downsample.proj.weight"
    )
    assert to_module_name("sem_seg_head.predictor.language_encoder.lang_proj") == "text.lang_proj"


@needs_fixture
def test_mapping_covers_manifest(meta_model):
    own = meta_model.state_dict()
    for e in read_manifest(FIXTURE / "state_dict_manifest.tsv"):
        target = own[to_module_name(e.name)]
        assert target.numel() == int(np.prod(e.shape)), e.name


# -- loading --------------------------------------------------------------------------------------
def test_load_lists_missing_unexpected_and_misshaped(meta_model):
    state = {to_official_name(k): torch.zeros(v.shape) for k, v in list(meta_model.state_dict().items())[:5]}
    state["backbone.patch_embed.proj.bias"] = torch.zeros(7)
    state["sem_seg_head.predictor.not_a_weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_official_state_dict(meta_model, state)
    text = str(err.value)
    assert "missing keys" in text and "unexpected keys: sem_seg_head.predictor.not_a_weight" in text
    assert "backbone.patch_embed.proj.bias (7,) vs (192,)" in text


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_ckpt_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "bad.ckpt"
    torch.save(
        {"state_dict": {"model.pixel_mean": torch.zeros(3)}, "callbacks": _Evil(), "pad": b"x" * 2048}, path
    )
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_official_state_dict(path)


def test_ckpt_prefix_and_loss_keys_stripped(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save(
        {
            "state_dict": {
                "model.pixel_mean": torch.zeros(600),
                "model.loss_function.cls_loss_fn.pos_weight": torch.ones(1),
            },
            "epoch": 3,
        },
        path,
    )
    assert list(read_official_state_dict(path)) == ["pixel_mean"]
    tiny = tmp_path / "pointer.ckpt"
    tiny.write_bytes(pickle.dumps("x"))
    with pytest.raises(CheckpointError, match="Git LFS"):
        read_official_state_dict(tiny)


# -- pipeline -------------------------------------------------------------------------------------
def test_pad_and_resize_centres_and_restores():
    vol = np.zeros((2, 4, 8), np.uint8)
    resized, pad, side = pad_and_resize(vol + 100, size=8)
    assert pad == (2, 2, 0, 0) and side == 8 and resized.shape == (2, 8, 8) and resized.dtype == torch.int32
    labels = torch.arange(8)[None, :, None].expand(2, 8, 8)
    back = restore_geometry(labels, pad, side, axis=0)
    assert back.shape == (2, 4, 8) and (back[:, :, 0] == [2, 3, 4, 5]).all()


def test_nms_suppresses_overlap_and_low_scores():
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2] = True  # 8 px
    masks[1, :2, :3] = True  # IoU with 0 = 6/8 > 0.5
    masks[2, 2:] = True
    assert nms_masks(masks, torch.tensor([0.9, 0.95, 0.6])) == [1, 2]
    assert nms_masks(masks, torch.tensor([0.9, 0.95, 0.4])) == [1]


def test_gating_and_argmax_against_background():
    probs = torch.tensor([0.7, 0.4, 0.9]).view(1, 1, 1, 3).repeat(2, 2, 1, 1)
    probs[1] = torch.tensor([0.8, 0.3, 0.2]).view(1, 1, 3)
    single = gate_or_nms(probs[:1], torch.tensor([[5.0, -5.0]]))
    assert single[0, 0].flatten().tolist() == pytest.approx([0.7, 0.4, 0.9]) and single[0, 1].abs().sum() == 0
    classes = merge_classes(probs, ids=[3, 7])
    assert classes[0, 0].tolist() == [7, 0, 3]


# -- equivalence with the public code (fixture) ----------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    from tests._reference_v2_fixture import fill_model

    from fveseg.model.reference_v2 import build_reference_v2

    model = build_reference_v2(empty=True)
    fill_model(model, FIXTURE / "state_dict_manifest.tsv", check_sums=True)  # asserts every sum
    arrays = np.load(FIXTURE / "reference_small_full.npz")
    vol = torch.from_numpy(arrays["small/input_volume_uint8"].astype(np.int32))[0]
    rgb = model.pack_order1(vol)
    text = model.encode_text(PROMPTS)
    runs = {"det": [], "boltz": []}
    keys = sorted(k for k in arrays.files if k.startswith("small/boltz/pred_heads/"))
    packed = [arrays[k] for k in keys]
    res, pix, call = [], [], 0
    with torch.no_grad():
        for start in range(0, rgb.shape[0], 2):  # the fixture's slice_batch_size=2
            feats, backbone = model.encode_image(
                model.normalize(rgb[start : start + 2]), return_backbone=True
            )
            res.append(backbone)
            pix.append(feats)
            runs["det"].append(model.decode(feats, text, mode="det", return_layers=True))
            n = feats.batch_size * len(PROMPTS) * 8
            sizes = [f.shape[-2] * f.shape[-1] for f in feats.multi_scale_features]
            masks = [unpack_attention_mask(packed[call + i], (n, 16, sizes[i % 3])) for i in range(10)]
            call += 10
            runs["boltz"].append(model.decode(feats, text, mode="boltz", attn_masks=masks))
    return {"arrays": arrays, "text": text, "res": res, "pix": pix, "runs": runs}


def _max_diff(a: torch.Tensor, b: np.ndarray) -> float:
    assert tuple(a.shape) == b.shape
    return float(np.abs(a.detach().numpy().astype(np.float64) - b).max())


@needs_fixture
def test_text_matches(reference):
    arrays, text = reference["arrays"], reference["text"]
    assert (text.input_ids.numpy() == arrays["small/text/input_ids"]).all()
    for key in ("token_emb", "class_emb", "grounding_tokens"):
        assert _max_diff(getattr(text, key), arrays[f"small/text/{key}"]) <= 1e-4, key


@needs_fixture
def test_backbone_and_pixel_decoder_match(reference):
    arrays = reference["arrays"]
    for level in ("res2", "res3", "res4", "res5"):
        got = torch.cat([r[level] for r in reference["res"]])
        assert _max_diff(got, arrays[f"small/backbone/{level}"]) <= 1e-4, level
    pix = reference["pix"]
    pairs = {
        "mask_features": [p.mask_features for p in pix],
        "transformer_encoder_features": [p.transformer_encoder_features for p in pix],
    }
    pairs.update({f"multi_scale_features_{i}": [p.multi_scale_features[i] for p in pix] for i in range(3)})
    for key, parts in pairs.items():
        assert _max_diff(torch.cat(parts), arrays[f"small/pixel_decoder/{key}"]) <= 1e-4, key


def _finals(outs):
    cat = {
        k: torch.cat([o[k] for o in outs])
        for k in ("mask_logits", "edge_logits", "exist_logits", "per_query")
    }
    return {
        "pred_gmasks": cat["mask_logits"].transpose(0, 1),
        "edge_masks": cat["edge_logits"].transpose(0, 1),
        "object_existence": cat["exist_logits"].transpose(0, 1),
        "per_query": cat["per_query"],
    }


@needs_fixture
@pytest.mark.parametrize("mode", ["det", "boltz"])
def test_decoder_outputs_match(reference, mode):
    arrays, outs = reference["arrays"], reference["runs"][mode]
    final = _finals(outs)
    for key in ("pred_gmasks", "edge_masks", "object_existence"):
        assert _max_diff(final[key], arrays[f"small/{mode}/final/{key}"]) <= 1e-3, key
    assert _max_diff(final["per_query"], arrays[f"small/{mode}/predictor/pred_gmasks_per_query"]) <= 1e-3
    if mode == "det":
        layers = [m for o in outs for m in o["layer_masks"]]
        keys = sorted(k for k in arrays.files if k.startswith("small/det/pred_heads/"))
        assert len(layers) == len(keys) == 20
        for got, key in zip(layers, keys):
            assert _max_diff(got, arrays[key]) <= 1e-3, key


@needs_fixture
def test_fixture_files_consistent():
    prompts = json.loads((FIXTURE / "prompts.json").read_text())
    tok = ClipTokenizer()
    for text, ids in prompts["token_ids_unpadded"].items():
        assert tok.encode(text) == ids
