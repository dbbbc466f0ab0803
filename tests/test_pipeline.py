"""One pipeline for every door: defaults defined once, label names checked up front, the CLI writes what
`fveseg.pipeline.segment_volume` returns."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import tifffile
from tests.test_cli import micro_checkpoint, write_zyx

from fveseg.cli import build_parser, main
from fveseg.errors import InputError
from fveseg.params import SegmentParams


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return micro_checkpoint(tmp_path_factory.mktemp("model"))


def test_cli_widget_and_params_share_every_default():
    from napari_fveseg._results import Thresholds
    from napari_fveseg._settings import WidgetSettings

    defaults = SegmentParams()
    args = build_parser().parse_args(["segment", "in.tif"])
    cli_names = {  # SegmentParams field -> argparse destination
        "instances": "instances",
        "min_size": "min_size",
        "min_relative_size": "min_relative_size",
        "instance_method": "instance_method",
        "focus_fraction": "focus_fraction",
        "device": "device",
        "batch_size": "batch_size",
        "mask_threshold": "mask_threshold",
        "exist_threshold": "exist_threshold",
        "exist_low": "exist_low",
        "resize": "resize",
    }
    for field, dest in cli_names.items():
        assert getattr(args, dest) == getattr(defaults, field), field
    assert args.axis == str(defaults.axis)
    thresholds = Thresholds()
    assert thresholds.params(["nuclei"]) == SegmentParams(prompts=("nuclei",))
    settings = WidgetSettings()
    assert (settings.mask_threshold, settings.existence_threshold) == (
        defaults.mask_threshold,
        defaults.exist_threshold,
    )
    assert settings.split_instances == defaults.instances and settings.min_size == defaults.min_size
    assert {f.name for f in fields(SegmentParams)} >= set(cli_names)


@pytest.mark.parametrize(
    "prompts",
    [("nuclei", "semantic"), ("核", "🔬"), ("cell membranes", "cell/membranes"), ("Nuclei", "nuclei")],
)
def test_prompts_that_would_share_a_layer_are_refused_before_any_work(prompts):
    with pytest.raises(InputError, match="would both be written as the label layer"):
        SegmentParams(prompts=prompts).layer_names()


def test_distinct_prompts_name_distinct_layers():
    assert SegmentParams(prompts=("nuclei", "cell membranes")).layer_names() == [
        "semantic",
        "nuclei",
        "cell-membranes",
    ]
    assert SegmentParams(prompts=("nuclei",), instances=False).layer_names() == ["nuclei"]


def test_cli_refuses_a_layer_clash_without_reading_the_input(tmp_path, capsys):
    missing = tmp_path / "never-read.tif"
    write_zyx(missing, np.zeros((4, 16, 16), np.uint16))
    code = main(["segment", str(missing), "-p", "nuclei", "-p", "semantic", "-o", str(tmp_path / "o.zarr")])
    assert code != 0
    assert "would both be written" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def test_cli_writes_what_segment_volume_returns(tmp_path, checkpoint):
    from fveseg import load_segmenter, segment_volume
    from fveseg.synthetic import make_nuclei_volume

    volume = make_nuclei_volume((8, 32, 32), seed=3)
    source = tmp_path / "vol.tif"
    write_zyx(source, volume.image)
    out = tmp_path / "labels.tif"
    spacing = ("1", "0.5", "0.5")
    assert main(["segment", str(source), "--model", str(checkpoint), "-o", str(out), "--quiet", "--device",
                 "cpu", "--scale", *spacing]) == 0  # fmt: skip
    params = SegmentParams(checkpoint=str(checkpoint), device="cpu")
    layers = segment_volume(load_segmenter(str(checkpoint), "cpu"), volume.image, (1.0, 0.5, 0.5), params)
    np.testing.assert_array_equal(tifffile.imread(out), layers["nuclei"][0])


def test_the_public_face_reads_segments_and_answers_new_prompts_with_one_plan(tmp_path, checkpoint):
    """``segment(read_volume(path)).instances(prompt)`` is what the CLI writes; a prompt the run did not
    segment is segmented with the same plan (same scale), not planned again."""
    from dataclasses import replace

    from fveseg import load_segmenter, read_volume, segment
    from fveseg.pipeline import instance_labels, segment_array
    from fveseg.synthetic import make_nuclei_volume

    volume = make_nuclei_volume((8, 32, 32), seed=3)
    source = tmp_path / "vol.tif"
    tifffile.imwrite(source, volume.image, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "ZYX", "spacing": 1.0, "unit": "um"})  # fmt: skip
    out = tmp_path / "labels.tif"
    assert main(["segment", str(source), "--model", str(checkpoint), "-o", str(out), "--quiet", "--device",
                 "cpu"]) == 0  # fmt: skip
    segmenter = load_segmenter(str(checkpoint), "cpu")
    params = SegmentParams(checkpoint=str(checkpoint), device="cpu")
    result = segment(read_volume(source), segmenter, params)
    assert result.spacing == pytest.approx((1.0, 0.5, 0.5))  # the file's voxel size, in µm
    labels = result.instances("Nuclei")  # prompts are matched in canonical form
    assert labels.dtype == np.uint32 and labels.shape == volume.image.shape
    np.testing.assert_array_equal(tifffile.imread(out), labels)
    assert list(result.layers()) == ["nuclei"] and np.array_equal(result.layers()["nuclei"][0], labels)
    assert np.array_equal(result.mask("nuclei"), np.asarray(result.result.semantic) == 1)

    cells = result.instances("cells")  # a new prompt, with the plan the run made
    fixed = replace(result.params, prompts=("cells",), resize=result.plan.scale)
    alone = segment_array(segmenter, result.image, fixed, result.spacing)
    np.testing.assert_array_equal(cells, instance_labels(alone, 0, fixed, result.spacing, result.image))
    assert result.instances("cells") is not cells and list(result._more) == ["cells"]  # segmented once


def test_trust_notes_say_what_looks_wrong_and_what_to_try():
    from fveseg.pipeline import trust_notes

    params = SegmentParams()
    empty = {"nuclei": (np.zeros((8, 16, 16), np.uint32), {})}
    notes = trust_notes(empty, params, (1.0, 0.5, 0.5), "a.tif")
    assert len(notes) == 1 and 'no "nuclei" found' in notes[0] and "--resize" in notes[0]
    assert any("voxel size is unknown" in n for n in trust_notes(empty, params, None, "a.tif"))
    assert any("coarser than any" in n for n in trust_notes(empty, params, (5.0, 0.5, 0.5), "a.tif"))
    caps = np.zeros((8, 16, 16), np.uint32)
    for i in range(3):  # four objects, three of them only at the stack's ends
        caps[0 if i < 2 else 7, i * 4 : i * 4 + 2, :2] = i + 1
    caps[3, 0:2, 8:10] = 4
    notes = trust_notes({"nuclei": (caps, {})}, params, (1.0, 1.0, 1.0), "a.tif")
    assert len(notes) == 2 and "75% of the" in notes[0] and "about 2 px across" in notes[1]  # and tiny
    fine = np.zeros((8, 40, 40), np.uint32)  # objects 12 px across: inside the trained 9-24 px
    fine[2:5, 2:14, 2:14], fine[3:6, 20:32, 20:32] = 1, 2
    assert trust_notes({"nuclei": (fine, {})}, params, (1.0, 1.0, 1.0), "a.tif") == []
    # the same objects seen at resize 0.5 (6 px) or 2.5 (30 px): outside; the fix brings them to 18 px
    small = trust_notes({"nuclei": (fine, {})}, params, (1.0, 1.0, 1.0), "a.tif", scale=0.5)
    assert len(small) == 1 and "about 6 px across" in small[0] and "--resize 1.5" in small[0]
    large = trust_notes({"nuclei": (fine, {})}, params, (1.0, 1.0, 1.0), "a.tif", scale=2.5)
    assert len(large) == 1 and "about 30 px across" in large[0] and "--resize 1.5" in large[0]


def test_widget_notes_use_the_widgets_words():
    from napari_fveseg._results import Placement, Thresholds, result_notes

    empty = np.zeros((6, 16, 16), np.uint32)
    layers = [(empty, {"name": "liver instances", "metadata": {"class_name": "liver"}}, "labels")]
    place = Placement((1.0, 0.5, 0.5), (0.0, 0.0, 0.0), (1.0, 0.5, 0.5))
    notes = result_notes(layers, ["liver"], Thresholds(), place)
    assert len(notes) == 1 and notes[0].startswith('no "liver" found')
    assert "--" not in notes[0] and "resize" in notes[0]
    unknown = Placement((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), None)
    assert any("the layer's scale" in n for n in result_notes(layers, ["liver"], Thresholds(), unknown))


def test_a_noisy_stack_segmented_by_the_default_model_gets_advice():
    from types import SimpleNamespace

    from fveseg.pipeline import noisy_stack_notes

    rng = np.random.default_rng(0)
    clean = np.zeros((4, 64, 64), np.float32)
    clean[:, 16:48, 16:48] = 100.0
    noisy = clean + rng.normal(0, 40.0, clean.shape).astype(np.float32)
    default = SimpleNamespace(model="default", noise=None)
    assert noisy_stack_notes(default, clean, "a.tif") == []
    (note,) = noisy_stack_notes(default, noisy, "a.tif")
    assert note.startswith("a.tif: its noise measures") and "--model noise-robust" in note
    assert noisy_stack_notes(SimpleNamespace(model="noise-robust", noise=0.4), noisy, "a.tif") == []
    assert noisy_stack_notes(SimpleNamespace(model="default", noise=0.01), noisy, "a.tif") == []  # measured


def test_the_bundled_pipeline_still_gives_the_pinned_sample_labels():
    """The default pipeline on the bundled sample, pinned when the predictor was restructured (plan/run,
    engines, probe reuse: `tests/data/sample_nuclei_instances.npz`, the labels before that change, 39
    objects) and re-pinned when the neck merge became the default (36 objects: two pairs of touching
    nuclei and one false object merged, docs/experiments/2026-12-06-neck-merge.md). Same objects; voxels
    may differ only where another CPU rounds a probability at the threshold the other way."""
    from pathlib import Path

    from fveseg import segment
    from fveseg.synthetic import make_sample_volume

    pinned = np.load(Path(__file__).parent / "data" / "sample_nuclei_instances.npz")["labels"]
    sample = make_sample_volume()
    labels = segment(sample.image, spacing=tuple(float(s) for s in sample.spacing)).instances("nuclei")
    assert labels.shape == pinned.shape and labels.max() == pinned.max() == 36
    assert np.mean((labels > 0) == (pinned > 0)) > 0.999
    assert np.mean(labels == pinned) > 0.999  # same ids in the same order
