"""Real 2D images made into short 3D stacks (training.defocus): hand-checkable geometry."""

import numpy as np
from training.data import LabelledVolume
from training.defocus import DefocusConfig, defocus_volume


class MidpointRng:
    """Stands in for numpy's Generator: every draw is the middle of its range, crops start at 0."""

    def integers(self, high):
        return 0

    def uniform(self, low, high, size=None):
        middle = (np.asarray(low) + np.asarray(high)) / 2
        return middle if size is None else np.broadcast_to(middle, (size,)).copy()


def disk_image(radius=10, size=40, value=200.0, background=20.0):
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size // 2) ** 2 + (xx - size // 2) ** 2 <= radius**2
    image = np.where(inside, value, background).astype(np.float32)
    return image[None], inside.astype(np.uint16)[None]


def test_a_nucleus_centred_on_the_focal_slice():
    image, labels = disk_image()
    volume = LabelledVolume(image, {"nuclei": labels}, name="disk")
    config = DefocusConfig(z_step=(8.0, 8.0), flatness=(1.0, 1.0), haze_reach=(1.0, 1.0))
    stack = defocus_volume(volume, MidpointRng(), reach=1, config=config)
    got = stack.classes["nuclei"]
    assert stack.image.shape == got.shape == (3, 40, 40) and stack.view == 0
    # the midpoint draw puts the ellipsoid's centre on the focal slice: its equator is the 2D outline
    assert np.array_equal(got[1], labels[0])
    np.testing.assert_array_equal(stack.image[1], image[0])
    # one slice up or down (8 px of z, half-height 10 / 8 = 1.25 slices): a smaller cross-section
    # of the same nucleus, the same on both sides, and the cut-off rim shows as dimmer, unlabelled haze
    assert np.array_equal(got[0], got[2])
    assert 0 < got[0].sum() < got[1].sum() and np.all(got[0] <= got[1])
    rim = (labels[0] > 0) & (got[0] == 0)
    assert np.all(stack.image[0][rim] > 20.0)  # blurred light lands on the rim ...
    assert stack.image[0][rim].mean() < stack.image[1][rim].mean()  # ... dimmer than in focus
    assert np.all(stack.image >= 20.0 - 1e-4)  # the image's own background stays everywhere


def test_volumes_it_cannot_use_come_back_unchanged():
    image, labels = disk_image()
    stack3d = LabelledVolume(np.repeat(image, 2, 0), {"nuclei": np.repeat(labels, 2, 0)})
    two_classes = LabelledVolume(image, {"nuclei": labels, "cells": labels})
    rng = np.random.default_rng(0)
    assert defocus_volume(stack3d, rng, 1) is stack3d
    assert defocus_volume(two_classes, rng, 1) is two_classes


def test_random_stacks_only_label_pixels_of_the_original_nuclei():
    image, labels = disk_image()
    labels[0, 20:, :] *= 2  # two instances
    volume = LabelledVolume(image, {"nuclei": labels})
    for seed in range(5):
        stack = defocus_volume(volume, np.random.default_rng(seed), reach=4)
        got = stack.classes["nuclei"]
        assert got.shape == (9, 40, 40)
        assert np.all((got == 0) | (got == labels[0]))
