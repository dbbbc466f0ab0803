"""Segmenter: shapes and orientation, tiling, determinism, ISD gating, NMS/argmax, errors, cancellation."""

import numpy as np
import pytest
import torch

from _models import micro_config
from fveseg.errors import Cancelled, InputError, OutputExistsError
from fveseg.inference.gate import regate, semantic_labels
from fveseg.inference.segmenter import Segmenter
from fveseg.inference.tiling import SliceTiler, tile_starts
from fveseg.model import PrecomputedTextEncoder, build_model

MICRO = micro_config()
PROMPTS = ["nuclei", "cells", "spots", "unheard-of thing"]


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    model = build_model(MICRO)
    g = torch.Generator().manual_seed(1)
    model.set_text_encoder(PrecomputedTextEncoder({p: torch.randn(4, 384, generator=g) for p in PROMPTS}))
    return Segmenter(model, device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def volume():
    return (np.random.default_rng(0).random((5, 37, 53)) * 1000).astype(np.uint16)


def test_shapes_odd_size(segmenter, volume):
    r = segmenter.segment(volume, ["Nuclei", "cells"], axis=0)
    assert r.probabilities.shape == r.edges.shape == (2, 5, 37, 53)
    assert r.probabilities.dtype == np.float16 and r.semantic.dtype == np.uint8
    assert r.existence.shape == (2, 5) and r.semantic.shape == (5, 37, 53)
    assert r.prompts == ["nuclei", "cells"] and set(np.unique(r.semantic)) <= {0, 1, 2}
    assert 0 <= r.probabilities.min() and r.probabilities.max() <= 1


def test_single_slice_and_2d(segmenter, volume):
    a = segmenter.segment(volume[:1], ["nuclei"], axis=0)
    b = segmenter.segment(volume[0].astype(np.float32), ["nuclei"], axis=0)
    assert a.probabilities.shape == b.probabilities.shape == (1, 1, 37, 53)


def test_anisotropic_view_and_orientation(segmenter):
    vol = (np.random.default_rng(1).random((40, 6, 40)) * 255).astype(np.uint8)
    r = segmenter.segment(vol, ["nuclei"], spacing=(1.0, 1.0, 1.0))
    assert r.axis == 1  # (40, 40) planes are the squarest
    assert r.probabilities.shape == (1, 40, 6, 40) and r.existence.shape == (1, 6)
    # slicing along axis 1 of the volume equals slicing axis 0 of its transpose
    t = segmenter.segment(np.ascontiguousarray(vol.transpose(1, 0, 2)), ["nuclei"], axis=0)
    np.testing.assert_array_equal(r.probabilities, t.probabilities.transpose(0, 2, 1, 3))


def test_tiled_slices(segmenter):
    vol = (np.random.default_rng(2).random((2, 150, 70)) * 255).astype(np.uint8)
    r = segmenter.segment(vol, ["nuclei", "cells"], axis=0)
    assert r.probabilities.shape == (2, 2, 150, 70) and np.isfinite(r.probabilities).all()


def test_tiler_merge_inverts_split():
    image = torch.rand(2, 3, 150, 70)
    tiler = SliceTiler(150, 70, tile=64, overlap=16)
    assert tiler.tiles_per_slice == 3 * 2
    torch.testing.assert_close(tiler.merge(tiler.split(image)), image)
    assert tile_starts(150, 64, 16) == [0, 48, 86] and tile_starts(40, 64, 16) == [0]


def test_same_input_same_output(segmenter, volume):
    a = segmenter.segment(volume, PROMPTS[:2], axis=0)
    b = segmenter.segment(volume, PROMPTS[:2], axis=0)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.semantic, b.semantic)


def test_isd_gate_zeroes_slices(segmenter, volume):
    head = segmenter.model.decoder.cls_head
    saved = head.bias.data.clone()
    try:
        head.bias.data.fill_(-1e4)
        off = segmenter.segment(volume, ["nuclei"], axis=0, mask_threshold=0.0)
        head.bias.data.fill_(1e4)
        on = segmenter.segment(volume, ["nuclei"], axis=0, mask_threshold=0.0)
    finally:
        head.bias.data.copy_(saved)
    assert off.existence.max() == 0 and not off.semantic.any() and off.probabilities.any()
    assert on.existence.min() == 1 and on.semantic.all()
    np.testing.assert_array_equal(on.rethreshold(0.0, 0.5), on.semantic)
    assert not on.rethreshold(0.0, 1.0).any()


def test_unknown_prompt_runs(segmenter, volume):
    r = segmenter.segment(volume, ["unheard-of thing"], axis=0)
    assert r.existence.shape == (1, 5)


def test_nms_and_argmax_by_hand():
    probs = np.zeros((3, 2, 2, 4), np.float32)
    probs[0, :, :, :2] = 0.9  # prompt 1: left half
    probs[1, :, :, :3] = 0.8  # prompt 2: overlaps prompt 1 (IoU 2/3)
    probs[2, :, :, 3] = 0.7  # prompt 3: right column, disjoint
    exist = np.array([[0.9, 0.6], [0.6, 0.9], [0.8, 0.4]], np.float32)
    labels = semantic_labels(probs, exist)
    # slice 0: prompt 1 stronger -> prompt 2 suppressed; prompt 3 kept
    assert labels[0].tolist() == [[1, 1, 0, 3]] * 2
    # slice 1: prompt 2 stronger -> prompt 1 suppressed; prompt 3 gated out by existence 0.4
    assert labels[1].tolist() == [[2, 2, 2, 0]] * 2
    # without the IoU rule both kept: pixelwise argmax gives prompt 1 where it is higher
    assert semantic_labels(probs, exist, iou_threshold=1.0)[1].tolist() == [[1, 1, 2, 0]] * 2


def test_single_prompt_is_gated_mask():
    probs = np.array([[[[0.2, 0.6]], [[0.9, 0.9]]]], np.float32)  # (1, 2, 1, 2)
    labels = semantic_labels(probs, np.array([[0.7, 0.3]], np.float32))
    assert labels.tolist() == [[[0, 1]], [[0, 0]]]


@pytest.mark.parametrize(
    "volume, prompts, match",
    [
        (np.zeros((2, 8, 8)), [], "No prompts"),
        (np.zeros((2, 8, 8)), ["nuclei", "  "], "empty"),
        (np.zeros((2, 8, 8)), ["nuclei", "Nuclei"], "repeat"),
        (np.zeros((2, 2, 8, 8)), ["nuclei"], "3D volume"),
        (np.full((2, 8, 8), np.nan), ["nuclei"], "no finite"),
        (np.array([["a"]]), ["nuclei"], "not numeric"),
    ],
)
def test_bad_input(segmenter, volume, prompts, match):
    with pytest.raises(InputError, match=match):
        segmenter.segment(volume, prompts)


def test_cancel_leaves_nothing(segmenter, tmp_path):
    vol = np.zeros((9, 16, 16), np.uint8)
    seen = []
    calls = iter([False, True])
    with pytest.raises(Cancelled):
        segmenter.segment(
            vol,
            ["nuclei"],
            axis=0,
            scale=1.0,
            out=tmp_path / "o.zarr",
            progress=lambda d, t: seen.append((d, t)),
            cancel=lambda: next(calls),
        )
    assert seen == [(0, 9), (4, 9)]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(Cancelled):  # the automatic scale's first pass can be cancelled too
        segmenter.segment(vol, ["nuclei"], axis=0, out=tmp_path / "o.zarr", cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []


def test_zarr_output_matches_memory(segmenter, volume, tmp_path):
    mem = segmenter.segment(volume, ["nuclei", "cells"], axis=0)
    disk = segmenter.segment(volume, ["nuclei", "cells"], axis=0, out=tmp_path / "o.zarr")
    np.testing.assert_array_equal(disk.probabilities[:], mem.probabilities)
    np.testing.assert_array_equal(disk.semantic[:], mem.semantic)
    np.testing.assert_array_equal(disk.rethreshold(), mem.semantic)
    assert [p.name for p in tmp_path.iterdir()] == ["o.zarr"]
    with pytest.raises(OutputExistsError):
        segmenter.segment(volume, ["nuclei"], axis=0, out=tmp_path / "o.zarr")


# -- slice ranges: blocks of one volume concatenate to the whole-volume result -----------------------------


@pytest.fixture(scope="module")
def uneven_volume():
    """(7, 20, 11) float32 whose last slices along axis 2 are 10x brighter: a block's own intensity range
    differs from the volume's."""
    vol = np.random.default_rng(3).random((7, 20, 11)).astype(np.float32)
    vol[..., 8:] *= 10
    return vol


@pytest.mark.parametrize("axis", [0, 2])
def test_slice_range_blocks_equal_whole_volume(segmenter, uneven_volume, axis):
    from fveseg.normalize.intensity import intensity_range

    whole = segmenter.segment(uneven_volume, ["nuclei", "cells"], axis=axis, exist_threshold=0.3)
    global_range = intensity_range(uneven_volume)
    depth = uneven_volume.shape[axis]
    cuts = [0, 3, 5, depth] if axis == 0 else [0, 3, 9, depth]  # batch_size 4: ends off the batch grid
    seen = []
    blocks = [
        segmenter.segment(
            uneven_volume,
            ["nuclei", "cells"],
            axis=axis,
            exist_threshold=0.3,
            start=a,
            stop=b,
            intensity_range=global_range,
            progress=lambda done, total: seen.append((done, total)),
            exist_low=None,  # the hysteresis needs the whole existence profile: applied below
        )
        for a, b in zip(cuts[:-1], cuts[1:])
    ]
    assert [b.start for b in blocks] == cuts[:-1]
    assert blocks[1].probabilities.shape[axis + 1] == blocks[1].existence.shape[1] == cuts[2] - cuts[1]
    joined = {}
    for name, at in (("probabilities", axis + 1), ("edges", axis + 1), ("semantic", axis), ("existence", 1)):
        joined[name] = np.concatenate([getattr(b, name) for b in blocks], axis=at)
    regate(joined["probabilities"], joined["semantic"], joined["existence"], axis, 0.5, 0.3)
    for name, value in joined.items():
        np.testing.assert_array_equal(value, getattr(whole, name), err_msg=name)
    assert 0 < whole.semantic.mean() and not whole.semantic.all()  # labels that can differ
    assert seen[-1] == (depth - cuts[2], depth - cuts[2])
    np.testing.assert_array_equal(blocks[1].rethreshold(0.5, 0.3, exist_low=None), blocks[1].semantic)


def test_existence_gate_hysteresis_keeps_weak_slices_of_a_run(segmenter, volume):
    """With ``exist_low`` below every slice's existence, one slice above the threshold keeps them all;
    ``exist_low=None`` is the plain per-slice gate."""
    plain = segmenter.segment(volume, ["nuclei"], axis=0, scale=1.0, mask_threshold=0.0, exist_threshold=0.0)
    threshold = float(np.median(plain.existence))  # some slices above, some not
    gated = segmenter.segment(
        volume, ["nuclei"], axis=0, scale=1.0, mask_threshold=0.0, exist_threshold=threshold
    )
    assert plain.existence.min() > 0.1 and gated.semantic.all()  # default exist_low 0.1 chains them all
    kept = segmenter.segment(
        volume, ["nuclei"], axis=0, scale=1.0, mask_threshold=0.0, exist_threshold=threshold, exist_low=0.0
    )
    assert kept.semantic.all()
    off = segmenter.segment(
        volume, ["nuclei"], axis=0, scale=1.0, mask_threshold=0.0, exist_threshold=threshold, exist_low=None
    )
    expected = (plain.existence[0] > threshold)[:, None, None] & np.ones(volume.shape[1:], bool)
    np.testing.assert_array_equal(off.semantic.astype(bool), expected)
    np.testing.assert_array_equal(off.rethreshold(0.0, threshold, exist_low=0.0), kept.semantic)


def test_slice_range_defaults_to_the_whole_volume_intensity_range(segmenter, uneven_volume):
    from fveseg.normalize.intensity import intensity_range

    whole_range = intensity_range(uneven_volume)
    block_range = intensity_range(uneven_volume[..., :4])
    assert block_range != whole_range  # the block alone would be normalised differently
    default = segmenter.segment(uneven_volume, ["nuclei"], axis=2, start=0, stop=4)
    given = segmenter.segment(uneven_volume, ["nuclei"], axis=2, start=0, stop=4, intensity_range=whole_range)
    other = segmenter.segment(uneven_volume, ["nuclei"], axis=2, start=0, stop=4, intensity_range=block_range)
    np.testing.assert_array_equal(default.probabilities, given.probabilities)
    assert not np.array_equal(other.probabilities, given.probabilities)


def test_slice_range_zarr_output(segmenter, volume, tmp_path):
    mem = segmenter.segment(volume, ["nuclei"], axis=0, start=1, stop=4)
    disk = segmenter.segment(volume, ["nuclei"], axis=0, start=1, stop=4, out=tmp_path / "o.zarr")
    assert disk.start == 1 and disk.probabilities.shape == (1, 3, 37, 53)
    np.testing.assert_array_equal(disk.probabilities[:], mem.probabilities)
    np.testing.assert_array_equal(disk.semantic[:], mem.semantic)


@pytest.mark.parametrize(
    "keywords, match",
    [
        (dict(start=3, stop=3), "start=3, stop=3"),
        (dict(stop=6), "outside the 5 slices"),
        (dict(start=-1), "outside"),
        (dict(start=1.5), "integer"),
        (dict(intensity_range=(1.0,)), "pair"),
        (dict(intensity_range=(5.0, 1.0)), "lo <= hi"),
        (dict(intensity_range=(0.0, float("nan"))), "finite"),
    ],
)
def test_bad_slice_range(segmenter, volume, keywords, match):
    with pytest.raises(InputError, match=match):
        segmenter.segment(volume, ["nuclei"], axis=0, **keywords)


# -- the predictor in two steps: plan once, run many prompts ----------------------------------------------


def test_a_pickled_plan_answers_each_prompt_as_segment_does(segmenter, volume):
    """`plan` decides once; `run` with that plan (shipped as the dask path ships it) gives exactly what
    `segment` gives, for prompt sets the plan never saw."""
    import pickle

    plan = segmenter.plan(volume, (2.0, 1.0, 1.0), ["nuclei"], intensity_range=None)
    shipped = pickle.loads(pickle.dumps(plan))
    assert len(pickle.dumps(plan)) < 1000 and shipped == plan
    assert (plan.shape, plan.axis, plan.order) == ((5, 37, 53), 0, 1) and plan.scale > 0
    for prompts in (["nuclei"], ["cells", "spots"]):
        ran = segmenter.run(volume, shipped, prompts)
        whole = segmenter.segment(volume, prompts, spacing=(2.0, 1.0, 1.0), scale=plan.scale)
        for name in ("probabilities", "edges", "semantic", "existence"):
            np.testing.assert_array_equal(getattr(ran, name), getattr(whole, name))
        assert ran.scale == plan.scale and ran.prompts == prompts


def test_a_plan_is_refused_for_another_volume_and_needs_prompts_for_the_automatic_scale(segmenter, volume):
    plan = segmenter.plan(volume, scale=1.0)  # a fixed scale needs no prompts
    assert plan.scale == 1.0 and plan.intensity_range[0] <= plan.intensity_range[1]
    with pytest.raises(InputError, match="plan was made for a volume of shape"):
        segmenter.run(volume[:3], plan, ["nuclei"])
    with pytest.raises(InputError, match="pass prompts, or a scale"):
        segmenter.plan(volume)
    iso = segmenter.plan(volume, (3.0, 1.0, 1.0), ["nuclei"], scale=1.0, isotropic=True)
    assert iso.z_factor == 3.0 and iso.shape == volume.shape
    with pytest.raises(InputError, match="runs the whole volume"):
        segmenter.run(volume, iso, ["nuclei"], start=1, stop=3)


def test_engines_are_chosen_by_architecture(segmenter):
    from fveseg.inference.engines import ENGINES, NetworkEngine, engine_for
    from fveseg.inference.reference_engine import ReferenceEngine

    assert ENGINES == {"biomedparse-v": NetworkEngine, "reference-v2": ReferenceEngine}
    assert isinstance(segmenter.engine, NetworkEngine)
    stranger = torch.nn.Linear(1, 1)
    stranger.architecture = "something-else"
    with pytest.raises(InputError, match="no engine runs architecture 'something-else'"):
        engine_for(stranger, segmenter.metadata, torch.device("cpu"), 4, 0)


def test_the_run_reuses_the_batches_the_automatic_scale_probed(segmenter, monkeypatch):
    """Slices the probe segmented at the scale it chose are not segmented again, and the result is
    exactly that of a run at that fixed scale (same batches, seeds and inputs)."""
    from fveseg.inference.engines import NetworkEngine

    volume = (np.random.default_rng(5).random((20, 40, 44)) * 1000).astype(np.uint16)
    predicted = []
    original = NetworkEngine.predict

    def counting(self, images, text, plan, *args, **kwargs):
        predicted.append((plan.scale, len(images)))
        return original(self, images, text, plan, *args, **kwargs)

    monkeypatch.setattr(NetworkEngine, "predict", counting)
    auto = segmenter.segment(volume, ["nuclei"], axis=0)  # probe windows 4:12 and 12:20 (batch 4)
    at_final = sum(n for scale, n in predicted if scale == auto.scale)
    assert at_final == 20  # every slice once at the chosen scale, the probed ones included
    fixed = segmenter.segment(volume, ["nuclei"], axis=0, scale=auto.scale)
    for name in ("probabilities", "edges", "semantic", "existence"):
        np.testing.assert_array_equal(getattr(auto, name), getattr(fixed, name))


def test_iter_segment_reports_the_probe_then_the_run_and_returns_what_segment_returns(segmenter):
    volume = (np.random.default_rng(6).random((20, 40, 44)) * 1000).astype(np.uint16)
    steps = segmenter.iter_segment(volume, ["nuclei"], axis=0)
    updates = []
    while True:
        try:
            updates.append(next(steps))
        except StopIteration as end:
            result = end.value
            break
    stages = [stage for stage, _, _ in updates]
    assert (
        stages[0] == "probe" and stages[-1] == "segment" and "probe" not in stages[stages.index("segment") :]
    )
    for stage in ("probe", "segment"):
        mine = [(done, total) for s, done, total in updates if s == stage]
        assert all(0 <= done <= total for done, total in mine)
        assert [done for done, _ in mine] == sorted(done for done, _ in mine)  # never goes back
        assert mine[-1][0] == mine[-1][1]  # ends complete
    assert updates[-1][1:] == (20, 20)
    whole = segmenter.segment(volume, ["nuclei"], axis=0)
    for name in ("probabilities", "edges", "semantic", "existence"):
        np.testing.assert_array_equal(getattr(result, name), getattr(whole, name))
