"""reference-v2 through the Segmenter (the public pipeline, streamed) and ``fveseg convert`` / ``info``.

One randomly initialised `ReferenceV2` (371.8M parameters, ~1.5 GB) is built per module. Slices are
resized to 64 instead of 512 (the model's ``metadata["input_size"]``; ``size=`` of
`segment_volume_reference`) so each forward takes seconds on a CPU; the arithmetic is otherwise the
public pipeline's.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fveseg.errors import Cancelled, InputError
from fveseg.inference.reference_engine import (
    LICENCE_NOTICE,
    PROMPT_FORMAT,
    is_official_weights,
    order1_indices,
)
from fveseg.model.reference_v2.pipeline import segment_volume_reference

SIZE = 64
PROMPTS = ["liver in abdominal ct", "kidney in abdominal ct"]
NEEDED_GIB = 6  # model + converted copy + loaded copy at once


def _available_gib() -> float:
    try:
        with open("/proc/meminfo") as handle:
            fields = dict(line.split(":", 1) for line in handle)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):  # not Linux: assume enough
        return float("inf")


pytestmark = pytest.mark.skipif(
    _available_gib() < NEEDED_GIB,
    reason=f"the reference-v2 model needs about {NEEDED_GIB} GiB of free memory here "
    f"({_available_gib():.1f} GiB available)",
)


@pytest.fixture(scope="module")
def model():
    from fveseg.model.reference_v2 import build_reference_v2

    torch.manual_seed(0)
    model = build_reference_v2()
    model.metadata["input_size"] = SIZE
    return model


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """(48, 2, 64) uint8: the in-plane sides differ, so the reference slices along axis 1 (2 slices)."""
    rng = np.random.default_rng(0)
    z, x = np.mgrid[0:48, 0:64]
    blob = 200.0 * np.exp(-((z - 20) ** 2 + (x - 30) ** 2) / 150.0)
    vol = np.stack([blob, np.roll(blob, 3, axis=1)], axis=1) + rng.normal(0, 10, (48, 2, 64))
    return np.clip(vol, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def boltz_run(model, volume):
    from fveseg.inference.segmenter import Segmenter

    segmenter = Segmenter(model, device="cpu", batch_size=2, seed=0)
    result = segmenter.segment(volume, PROMPTS)
    reference = segment_volume_reference(model, volume, PROMPTS, slice_batch_size=2, seed=0, size=SIZE)
    return result, reference


def _reference_maps(probs: torch.Tensor, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """(P, D, S, S) reference probabilities -> (P, *shape) in the volume's geometry (centred unpadding)."""
    h, w = (s for i, s in enumerate(shape) if i != axis)
    top, left = (SIZE - h) // 2, (SIZE - w) // 2
    maps = probs.numpy()[:, :, top : top + h, left : left + w]
    return np.moveaxis(maps, 1, 1 + axis)


def test_segmenter_equals_public_pipeline(boltz_run, volume):
    result, reference = boltz_run
    assert result.axis == reference["axis"] == 1
    assert result.probabilities.shape == result.edges.shape == (2, *volume.shape)
    assert result.probabilities.dtype == np.float16
    assert result.semantic.shape == volume.shape and result.semantic.dtype == np.uint8
    assert result.existence.shape == (2, 2) and result.prompts == PROMPTS
    np.testing.assert_array_equal(result.semantic, reference["labels"])
    np.testing.assert_allclose(result.existence, reference["existence"].numpy(), rtol=0, atol=1e-6)
    # the reference keeps gated/NMS-suppressed planes at 0; ours are ungated: compare where it kept them
    ref = _reference_maps(reference["probabilities"], volume.shape, 1)
    kept = ref.max(axis=(1, 3), keepdims=True) > 0  # per prompt and slice (axis 1)
    assert kept.any()
    mine = result.probabilities.astype(np.float32) * kept
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-3)  # float16 storage
    assert set(np.unique(result.semantic)) <= {0, 1, 2} and (result.semantic > 0).any()


def test_streamed_batches_and_slice_range_equal_public_det_one_prompt(model, volume, tmp_path):
    """One slice per batch (det mode, one prompt: the existence gate); a slice range written to zarr."""
    from fveseg.inference.segmenter import Segmenter

    calls = []
    model.attention_mode = "det"
    try:
        segmenter = Segmenter(model, device="cpu", batch_size=1)
        result = segmenter.segment(volume, PROMPTS[:1], progress=lambda *done_total: calls.append(done_total))
        reference = segment_volume_reference(
            model, volume, PROMPTS[:1], slice_batch_size=1, mode="det", size=SIZE
        )
        part = segmenter.segment(volume, PROMPTS[:1], axis=1, start=1, stop=2, out=tmp_path / "part.zarr")
    finally:
        del model.attention_mode
    assert calls == [(0, 2), (1, 2), (2, 2)]
    assert part.start == 1 and part.path == tmp_path / "part.zarr"
    np.testing.assert_array_equal(np.asarray(part.probabilities), result.probabilities[:, :, 1:2])
    np.testing.assert_array_equal(np.asarray(part.edges), result.edges[:, :, 1:2])
    np.testing.assert_array_equal(np.asarray(part.semantic), result.semantic[:, 1:2])
    np.testing.assert_array_equal(part.existence, result.existence[:, 1:2])
    np.testing.assert_array_equal(result.semantic, reference["labels"])
    ref = _reference_maps(reference["probabilities"], volume.shape, 1)
    gate = (reference["existence"].numpy() > 0.5)[:, None, :, None]  # one prompt: the existence gate
    np.testing.assert_allclose(result.probabilities.astype(np.float32) * gate, ref, rtol=0, atol=1e-3)


def test_cancel_and_options_that_do_not_apply(model, volume):
    from fveseg.inference.segmenter import Segmenter

    segmenter = Segmenter(model, device="cpu")
    assert segmenter.input_size == SIZE
    with pytest.raises(Cancelled):
        segmenter.segment(volume, PROMPTS, cancel=lambda: True)
    with pytest.raises(InputError, match="order 1"):
        segmenter.segment(volume, PROMPTS, order=2)
    with pytest.raises(InputError, match="scale"):
        segmenter.segment(volume, PROMPTS, scale=0.5)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_order1_indices_match_pack_order1(depth):
    from fveseg.model.reference_v2.model import ReferenceV2

    vol = torch.arange(depth).view(depth, 1, 1)
    packed = ReferenceV2.pack_order1(vol)[:, :, 0, 0].numpy()
    np.testing.assert_array_equal(order1_indices(0, depth, depth), packed)
    np.testing.assert_array_equal(order1_indices(depth - 1, depth, depth), packed[-1:])


# -- fveseg convert / info on a small weights-only .ckpt -------------------------------------------------
def _official_value(index: int) -> float:
    return round((index % 89) / 89 - 0.5, 6)


@pytest.fixture(scope="module")
def fake_ckpt(tmp_path_factory):
    """A Lightning-style weights-only .ckpt with every official key; each tensor is one value broadcast
    (a zero-stride view), so the file is small while the shapes are the released model's."""
    from fveseg.model.reference_v2.model import ReferenceV2
    from fveseg.model.reference_v2.names import LINEAR_AS_CONV, to_official_name

    with torch.device("meta"):
        shapes = {k: v.shape for k, v in ReferenceV2().state_dict().items()}
    state, expected = {}, {}
    for index, (name, shape) in enumerate(shapes.items()):
        if name in ("pixel_mean", "pixel_std"):
            continue
        official_shape = shape[:2] if LINEAR_AS_CONV.match(name) else shape
        value = _official_value(index)
        one = torch.full((1,) * len(official_shape), value)
        state["model." + to_official_name(name)] = one.expand(official_shape)
        expected[name] = value
    state["model.loss_function.cls_loss_fn.pos_weight"] = torch.ones(1)
    path = tmp_path_factory.mktemp("weights") / "biomedparse_v2.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert os.path.getsize(path) < 2_000_000
    return path, expected


def test_convert_round_trips_and_refuses_to_overwrite(fake_ckpt, tmp_path, capsys):
    from fveseg.cli import main
    from fveseg.inference.segmenter import Segmenter

    ckpt, expected = fake_ckpt
    assert main(["convert", str(ckpt), str(tmp_path / "bp2")]) == 0
    assert "bp2.json" in capsys.readouterr().out
    json_path = tmp_path / "bp2.json"
    assert json_path.is_file() and (tmp_path / "bp2.safetensors").is_file()
    segmenter = Segmenter(str(json_path), device="cpu")  # what `segment --model` and the widget do
    state = segmenter.model.state_dict()
    assert segmenter.model.architecture == "reference-v2" and segmenter.input_size == 512
    for name, value in expected.items():  # values differ between neighbours: a mis-mapped key shows
        ends = state[name].reshape(-1)[[0, -1]]
        assert ends.tolist() == pytest.approx([value, value], abs=1e-7), name
    del segmenter, state

    assert main(["convert", str(ckpt), str(tmp_path / "bp2")]) == 2  # a user error
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "already exists" in err and "\n" not in err

    loaded = Segmenter(str(ckpt), device="cpu").model  # the .ckpt itself, through load_checkpoint
    name = next(iter(expected))
    assert float(loaded.state_dict()[name][0].reshape(-1)[0]) == pytest.approx(expected[name], abs=1e-7)


def test_info_prints_architecture_prompt_format_and_licence(fake_ckpt, tmp_path, capsys):
    from fveseg.cli import main

    ckpt, _ = fake_ckpt
    assert main(["info", "--model", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "reference-v2" in out and LICENCE_NOTICE in out and PROMPT_FORMAT in out
    assert "[ok]" in out.split(str(ckpt))[1].splitlines()[0]
    assert main(["info", "--model", str(tmp_path / "absent.ckpt")]) == 0
    assert "[missing]" in capsys.readouterr().out


def test_official_safetensors_detected_by_header(tmp_path):
    from safetensors.torch import save_file

    official = tmp_path / "official.safetensors"
    save_file({"model.sem_seg_head.predictor.class_embed": torch.zeros(2)}, str(official))
    other = tmp_path / "other.safetensors"
    save_file({"decoder.weight": torch.zeros(2)}, str(other))
    assert is_official_weights(official) and not is_official_weights(other)
    (tmp_path / "official.json").write_text("{}")  # a converted pair is load_checkpoint's business
    assert not is_official_weights(official)
