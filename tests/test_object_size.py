"""Object size measurement and the automatic in-plane scale (`fveseg.inference.auto_scale`,
``scale="auto"``)."""

import numpy as np
import pytest
import torch

from fveseg.inference.auto_scale import (
    ENLARGE_SCALE,
    MIN_AUTO_SCALE,
    TARGET_DIAMETER,
    ambiguous_fraction,
    scale_for_diameter,
    surer_at_half,
    typical_diameter,
)
from fveseg.inference.segmenter import Segmenter


def disks(shape, centres, radius):
    yy, xx = np.indices(shape)
    mask = np.zeros(shape, bool)
    for cy, cx in centres:
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return mask


def test_a_square_is_measured_by_its_inscribed_circle():
    mask = np.zeros((1, 40, 40), bool)
    mask[0, 10:31, 10:31] = True  # 21 px side: the centre is 11 px from the nearest background pixel
    assert typical_diameter(mask) == pytest.approx(22.0)


def test_touching_objects_do_not_look_larger():
    one = typical_diameter(disks((80, 80), [(40, 40)], 10))
    pair = typical_diameter(disks((80, 80), [(40, 30), (40, 48)], 10))  # merged into one blob
    assert 20 <= one <= 23 and pair == pytest.approx(one, abs=1.0)


def test_small_fragments_do_not_outvote_the_objects_that_make_most_of_the_mask():
    mask = disks((200, 200), [(50, 50), (50, 150), (150, 50)], 20)
    yy, xx = np.indices(mask.shape)
    mask |= (yy % 10 == 5) & (xx % 10 == 5) & (yy > 100) & (xx > 100)  # 81 one-pixel specks
    assert 40 <= typical_diameter(mask) <= 43


def test_an_object_cut_by_the_border_keeps_its_size_and_empty_or_full_masks():
    inside = typical_diameter(disks((60, 60), [(30, 30)], 12))
    cut = typical_diameter(disks((60, 60), [(30, 2)], 12))
    assert cut == pytest.approx(inside, abs=1.0)
    assert typical_diameter(np.zeros((3, 8, 8), bool)) == 0.0
    assert typical_diameter(np.ones((2, 8, 12), bool)) == 8.0


@pytest.mark.parametrize(
    "diameter, scale",
    [
        (0.0, 1.0),
        (TARGET_DIAMETER, 1.0),
        (19.0, 1.0),
        (20.0, 0.9),
        (36.0, 0.5),
        (16.0, 1.0),
        (15.9, ENLARGE_SCALE),
        (10.0, ENLARGE_SCALE),
        (1.0, ENLARGE_SCALE),
        (1e4, MIN_AUTO_SCALE),
    ],
)
def test_scale_shrinks_in_steps_of_005_and_enlarges_small_objects_once(diameter, scale):
    assert scale_for_diameter(diameter) == pytest.approx(scale)
    assert scale_for_diameter(10.0, enlarge_below=0) == 1.0  # enlarging can be turned off


class DiskModel(torch.nn.Module):
    """A stand-in network: mask where the (normalised) focal channel is bright, present everywhere
    (except "mitochondria", reported absent everywhere)."""

    metadata = {"input_size": 64, "fve": {"order": 1}}

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode_text(self, prompts):
        return torch.tensor([[float(p == "mitochondria")] for p in prompts])

    def encode_image(self, images):
        return images

    def decode(self, features, text, generator=None, return_aux=False):
        logits = (features[:, :1] > 0.5).float() * 20 - 10  # normalised intensity above the mean
        logits = logits.expand(-1, text.shape[0], -1, -1)
        return {
            "mask_logits": logits,
            "edge_logits": torch.full_like(logits, -10.0),
            "exist_logits": (10.0 - 20.0 * text[:, 0]).expand(logits.shape[:2]).clone(),
        }


@pytest.fixture(scope="module")
def disk_segmenter():
    return Segmenter(DiskModel(), device="cpu", batch_size=4)


def disk_volume(radius, depth=12):
    plane = disks((128, 128), [(40, 40), (40, 88), (88, 64)], radius).astype(np.uint8) * 200
    return np.repeat(plane[None], depth, axis=0)


def test_auto_scale_shrinks_large_objects_keeps_trained_ones_and_enlarges_small_ones(disk_segmenter):
    large = disk_segmenter.segment(disk_volume(20), ["nuclei"], axis=0)  # ~42 px across
    assert large.scale == pytest.approx(scale_for_diameter(42.0), abs=0.05) and large.scale < 1
    trained = disk_segmenter.segment(disk_volume(9), ["nuclei"], axis=0)  # ~18 px
    assert trained.scale == 1.0
    small = disk_segmenter.segment(disk_volume(5), ["nuclei"], axis=0)  # ~10 px
    assert small.scale == ENLARGE_SCALE
    truth = disk_volume(5) > 0  # found at full size
    assert 2 * ((small.semantic > 0) & truth).sum() / ((small.semantic > 0).sum() + truth.sum()) > 0.9
    fixed = disk_segmenter.segment(disk_volume(20), ["nuclei"], axis=0, scale=1.0)
    assert fixed.scale == 1.0
    # results come back at full size, and the disks are found at either scale
    assert large.semantic.shape == fixed.semantic.shape == (12, 128, 128)
    truth = disk_volume(20) > 0
    for result in (large, fixed):
        overlap = (result.semantic > 0) & truth
        assert 2 * overlap.sum() / ((result.semantic > 0).sum() + truth.sum()) > 0.9


def test_auto_scale_ignores_prompts_reported_absent(disk_segmenter):
    """An absent prompt has no objects to measure: it must not pull the scale back to 1."""
    alone = disk_segmenter.segment(disk_volume(20), ["nuclei"], axis=0)
    both = disk_segmenter.segment(disk_volume(20), ["nuclei", "mitochondria"], axis=0)
    assert both.scale == alone.scale < 1
    assert both.existence[1].max() < 0.01 and not (both.semantic == 2).any()
    nothing = disk_segmenter.segment(disk_volume(20), ["mitochondria"], axis=0)
    assert nothing.scale == 1.0 and not nothing.semantic.any()


def test_auto_scale_is_the_same_for_every_slice_range(disk_segmenter):
    volume = disk_volume(20, depth=30)
    whole = disk_segmenter.segment(volume, ["nuclei"], axis=0)
    assert disk_segmenter.auto_scale(volume, ["nuclei"], axis=0) == whole.scale < 1
    part = disk_segmenter.segment(volume, ["nuclei"], axis=0, start=9, stop=23)
    assert part.scale == whole.scale
    np.testing.assert_array_equal(part.semantic, whole.semantic[9:23])


def test_bad_scale_is_refused(disk_segmenter):
    from fveseg.errors import InputError

    for bad in ("big", 0, -1.0, float("nan"), True):
        with pytest.raises(InputError, match="scale must be"):
            disk_segmenter.segment(disk_volume(6, depth=2), ["nuclei"], scale=bad)


def test_ambiguous_fraction_counts_the_open_band():
    assert ambiguous_fraction(np.array([0.0, 0.2, 0.3, 0.5, 0.79, 0.8, 1.0, 0.1])) == 3 / 8
    assert ambiguous_fraction(np.zeros((0, 4))) == 0.0
    assert surer_at_half(np.full(10, 0.5), np.r_[np.full(4, 0.5), np.zeros(6)])  # 0.4 < 0.5 * 1.0
    assert not surer_at_half(np.full(10, 0.5), np.r_[np.full(6, 0.5), np.zeros(6)])
    assert not surer_at_half(np.zeros(10), np.zeros(10))  # nothing unsure: keep the scale


class TextureModel(DiskModel):
    """A stand-in network that is unsure (p = 0.5) wherever the focal channel has texture finer than
    3 px, and sure elsewhere: bright -> nucleus, dark -> background."""

    def decode(self, features, text, generator=None, return_aux=False):
        focal = features[:, :1]
        smooth = torch.nn.functional.avg_pool2d(focal, 3, stride=1, padding=1, count_include_pad=False)
        rough = (focal - smooth).abs() > 0.3
        logits = torch.where(rough, torch.zeros_like(focal), (smooth > 0.5).float() * 20 - 10)
        logits = logits.expand(-1, text.shape[0], -1, -1)
        return {
            "mask_logits": logits,
            "edge_logits": torch.full_like(logits, -10.0),
            "exist_logits": (10.0 - 20.0 * text[:, 0]).expand(logits.shape[:2]).clone(),
        }


def test_a_first_pass_unsure_on_fine_texture_is_caught_at_half_the_scale():
    # three large disks filled with a one-pixel checkerboard: at native size the network is unsure
    # inside them and finds no object (so the diameter rule alone keeps scale 1); at half the scale
    # the antialiased checkerboard is smooth and the disks are sure.
    yy, xx = np.indices((128, 128))
    inside = disks((128, 128), [(40, 40), (40, 88), (88, 64)], 22)
    plane = np.where(inside, np.where((yy + xx) % 2 == 0, 250, 130), 0).astype(np.uint8)
    volume = np.repeat(plane[None], 4, axis=0)
    segmenter = Segmenter(TextureModel(), device="cpu", batch_size=4)
    native = segmenter.segment(volume, ["nuclei"], axis=0, scale=1.0)
    assert not native.semantic.any()
    result = segmenter.segment(volume, ["nuclei"], axis=0)
    assert result.scale == 0.5
    found = result.semantic > 0
    assert 2 * (found & inside).sum() / (found.sum() + 4 * inside.sum()) > 0.9
    # smooth disks near the trained size: half the scale only blurs their edges, so the diameter
    # rule's choice stays (1, or the enlargement: the unsure rims make them measure a little small)
    smooth = Segmenter(TextureModel(), device="cpu", batch_size=4)
    assert smooth.segment(disk_volume(8, depth=4), ["nuclei"], axis=0).scale in (1.0, ENLARGE_SCALE)
    assert smooth.segment(disk_volume(10, depth=4), ["nuclei"], axis=0).scale == 1.0
