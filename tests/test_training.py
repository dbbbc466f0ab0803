"""Training package: targets, prompt sampling, loss, a few real optimisation steps, the GPU import path."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from training.augment import (
    AugmentConfig,
    edge_target,
    random_crop_scale,
    random_intensity,
    size_normalising_scale,
    z_contact_target,
)
from training.data import LabelledVolume, SampleConfig, load_volume_file, make_sample
from training.losses import segmentation_loss
from training.prompts import (
    HELDOUT_NEGATIVES,
    HELDOUT_PARAPHRASES,
    TRAIN_NEGATIVES,
    all_prompts,
    sample_prompts,
    training_prompts,
)

ROOT = Path(__file__).resolve().parents[1]
NO_AUG = AugmentConfig(
    scale=(1.0, 1.0), flip=False, rot90=False, blur_p=0, contrast_p=0, gamma_p=0, noise_p=0, swap_context_p=0
)


def _touching_pair() -> np.ndarray:
    labels = np.zeros((8, 10), np.uint32)
    labels[2:6, 1:5] = 1
    labels[2:6, 5:9] = 2  # touches object 1 along columns 4 | 5
    return labels


def test_edge_target_marks_interface_between_touching_instances():
    edges = edge_target(_touching_pair())
    assert edges[3, 4] and edges[3, 5]  # both sides of the contact
    assert edges[2, 2] and edges[1, 2]  # outer border, inside and outside
    assert not edges[3, 2] and not edges[3, 7]  # interiors
    # a binary mask of the same pixels has no interface: the instances are what make it an edge
    assert not edge_target((_touching_pair() > 0).astype(np.uint8))[3, 4]


def test_z_contact_target_marks_objects_touching_another_in_a_neighbouring_slice():
    focal = np.zeros((4, 6), np.uint32)
    focal[1:3, 0:4] = 1
    below = np.zeros_like(focal)
    below[1:3, 2:6] = 2  # another nucleus under columns 2-3 of object 1
    above = focal.copy()  # object 1 continues upward: the same object is no contact
    target = z_contact_target(focal, below, above)
    expected = np.zeros_like(target)
    expected[1:3, 2:4] = True
    np.testing.assert_array_equal(target, expected)
    # background under a different object above is not marked: only object pixels of the focal slice
    assert not z_contact_target(np.zeros_like(focal), below, above).any()


def test_make_sample_z_contact_edges_add_the_contact_of_stacked_nuclei():
    labels = np.zeros((4, 32, 32), np.uint16)
    labels[:2, 8:24, 8:24] = 1
    labels[2:, 8:24, 8:24] = 2  # stacked on object 1 along z: no in-plane edge between them
    volume = LabelledVolume((labels > 0) * 200.0 + 10.0, {"nuclei": labels}, (1.0, 0.5, 0.5), "stack")
    vocab = {p: i for i, p in enumerate(training_prompts())}
    plain = SampleConfig(order=1, size=32, n_prompts=2, augment=NO_AUG)
    stacked = dataclasses.replace(plain, z_contact_edges=True)

    def positive_edges(config, focal):
        sample = make_sample(volume, np.random.default_rng(0), config, vocab, focal=focal)
        return sample, sample["edges"][int(np.flatnonzero(sample["exists"])[0])]

    a, plain_edges = positive_edges(plain, 1)
    b, stacked_edges = positive_edges(stacked, 1)
    np.testing.assert_array_equal(plain_edges, edge_target(labels[1]))  # the outline only
    # the whole contact face (all of the slice's object lies on the other nucleus), and the outline
    np.testing.assert_array_equal(stacked_edges, edge_target(labels[1]) | (labels[1] > 0))
    np.testing.assert_array_equal(a["masks"], b["masks"])
    np.testing.assert_array_equal(a["image"], b["image"])
    # an end slice (no neighbour beyond the volume) of a single nucleus gets no contact
    np.testing.assert_array_equal(positive_edges(stacked, 3)[1], edge_target(labels[3]))


def test_training_prompts_exclude_heldout_and_sampling_adds_negatives():
    train = set(training_prompts())
    held = {p for group in HELDOUT_PARAPHRASES.values() for p in group} | set(HELDOUT_NEGATIVES)
    assert not train & held
    assert held <= set(all_prompts())
    rng = np.random.default_rng(0)
    for _ in range(20):
        pairs = sample_prompts(["nuclei"], rng, n_prompts=4)
        assert len(pairs) == 4
        assert sum(c is None for _, c in pairs) == 3
        assert all(p in TRAIN_NEGATIVES for p, c in pairs if c is None)


def _volume() -> LabelledVolume:
    rng = np.random.default_rng(1)
    labels = np.zeros((5, 64, 64), np.uint16)
    labels[:, 10:30, 10:30] = 1
    labels[:, 30:50, 20:40] = 2
    image = (labels > 0) * 200.0 + rng.normal(20, 5, labels.shape)
    return LabelledVolume(image.astype(np.float32), {"nuclei": labels}, (1.0, 0.5, 0.5), "toy")


def test_make_sample_targets_negatives_empty_and_positive_matches_labels():
    volume = _volume()
    vocab = {p: i for i, p in enumerate(training_prompts())}
    config = SampleConfig(order=1, size=64, n_prompts=4, augment=NO_AUG)
    sample = make_sample(volume, np.random.default_rng(0), config, vocab, focal=2)
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == np.uint8
    names = {i: p for p, i in vocab.items()}
    prompts = [names[int(i)] for i in sample["prompt_ids"]]
    for j, prompt in enumerate(prompts):
        if prompt in TRAIN_NEGATIVES:
            assert (
                sample["exists"][j] == 0 and sample["masks"][j].sum() == 0 and sample["edges"][j].sum() == 0
            )
        else:
            assert sample["exists"][j] == 1
            np.testing.assert_array_equal(sample["masks"][j], volume.classes["nuclei"][2] > 0)
            np.testing.assert_array_equal(sample["edges"][j], edge_target(volume.classes["nuclei"][2]))
    assert sum(p in TRAIN_NEGATIVES for p in prompts) == 3
    # focal slice is channel 0; with no augmentation it equals the normalised slice
    np.testing.assert_array_equal(sample["image"][0], volume.normalized_image()[2])


def test_random_crop_scale_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(3)
    labels = np.zeros((1, 40, 50), np.int64)
    labels[0, 5:25, 10:30] = 7
    slab = (labels > 0).astype(np.float32) * 255
    for _ in range(5):
        img, lab = random_crop_scale(slab, labels, 32, rng, scale=(0.5, 2.0))
        assert img.shape == (1, 32, 32) and lab.shape == (1, 32, 32)
        inside = lab[0] > 0
        if inside.any():  # label pixels sit on bright image pixels (bilinear edges aside)
            assert img[0][inside].mean() > 150


def test_noise_renormalisation_stretches_the_noisy_slab_like_inference_does():
    slab = np.full((3, 64, 64), 20.0, np.float32)
    slab[:, 16:48, 16:48] = 200.0  # one bright object on a dark background
    noisy = dataclasses.replace(NO_AUG, noise_p=1.0, noise_sigma=(40.0, 40.0))
    plain = random_intensity(slab, np.random.default_rng(0), noisy).astype(float)
    renormalised = random_intensity(
        slab, np.random.default_rng(0), dataclasses.replace(noisy, noise_renormalise=True)
    ).astype(float)
    # the same noise draw; renormalised, the noisy slab's 0.5-99.5 percentiles span 0-255 (up to rounding)
    low, high = np.percentile(renormalised, (0.5, 99.5))
    assert low <= 1 and high >= 254
    inside, outside = (slice(None), slice(20, 44), slice(20, 44)), (slice(None), slice(0, 8), slice(0, 64))
    # noise widened the range, so the object stands out less than it does without renormalising
    contrast = renormalised[inside].mean() - renormalised[outside].mean()
    assert contrast < plain[inside].mean() - plain[outside].mean()
    assert np.array_equal(random_intensity(slab, np.random.default_rng(0), NO_AUG), slab.astype(np.uint8))


def test_size_normalising_scale_maps_diameter_onto_target_range():
    rng = np.random.default_rng(0)
    config = AugmentConfig(scale=(0.6, 1.6), target_diameter=(9.0, 24.0), size_norm_p=1.0)
    assert size_normalising_scale(30.0, config, rng) == pytest.approx((0.3, 0.8))
    assert size_normalising_scale(6.0, config, rng) == pytest.approx((1.5, 3.0))  # 4.0 capped at 3
    assert size_normalising_scale(300.0, config, rng) == pytest.approx((0.15, 0.15))  # both capped
    assert size_normalising_scale(0.0, config, rng) == (0.6, 1.6)  # no nuclei: the plain range
    assert size_normalising_scale(30.0, AugmentConfig(scale=(0.6, 1.6)), rng) == (0.6, 1.6)  # off
    never = AugmentConfig(scale=(0.6, 1.6), target_diameter=(9.0, 24.0), size_norm_p=0.0)
    assert size_normalising_scale(30.0, never, rng) == (0.6, 1.6)


def test_size_normalised_samples_show_nuclei_at_the_target_size():
    from fveseg.inference.auto_scale import typical_diameter

    # 40 px squares (inscribed diameter 40) on a 400 px image; target 12-16 px means zoom 0.3-0.4
    labels = np.zeros((1, 400, 400), np.uint16)
    for i, (y, x) in enumerate([(20, 20), (20, 200), (200, 20), (200, 200), (300, 320)], start=1):
        labels[0, y : y + 40, x : x + 40] = i
    volume = LabelledVolume((labels > 0).astype(np.uint16) * 1000, {"nuclei": labels}, name="squares")
    assert volume.nuclei_diameter(0) == 40.0
    augment = dataclasses.replace(NO_AUG, target_diameter=(12.0, 16.0), size_norm_p=1.0)
    vocabulary = {p: i for i, p in enumerate(training_prompts())}
    rng = np.random.default_rng(1)
    for _ in range(4):
        sample = make_sample(volume, rng, SampleConfig(size=128, augment=augment), vocabulary)
        positive = sample["masks"][sample["exists"] > 0]
        assert positive.shape[0] > 0
        assert 11.0 <= typical_diameter(positive[0] > 0) <= 17.0  # 40 px x zoom, +-1 px of resampling


def test_config_passes_absent_class_chance_and_size_normalisation_to_samples():
    from training.config import load_config

    path = ROOT / "training/configs/tiny-cpu-size-normalised.json"
    sample = load_config(path, absent_class_p=0.0).sample_config()
    assert sample.absent_class_p == 0.0
    assert sample.augment.target_diameter == (9.0, 24.0) and sample.augment.size_norm_p == 0.75
    assert load_config(None).sample_config().absent_class_p == 0.5


def test_loads_shared_and_challenge_npz(tmp_path):
    image = np.arange(2 * 6 * 6, dtype=np.uint16).reshape(2, 6, 6)
    labels = np.zeros_like(image)
    labels[:, 1:3, 1:3] = 1
    labels[:, 3:5, 3:5] = 2
    shared = tmp_path / "shared.npz"
    np.savez(
        shared,
        image=image,
        labels=labels,
        spacing_zyx=np.array([2.0, 1.0, 1.0]),
        class_names=json.dumps({"instances": "nuclei"}),
    )
    vol = load_volume_file(shared)
    assert list(vol.classes) == ["nuclei"] and vol.spacing == (2.0, 1.0, 1.0)
    np.savez(tmp_path / "plain2d.npz", image=image[0], labels=labels[0])
    assert load_volume_file(tmp_path / "plain2d.npz").image.shape == (1, 6, 6)
    challenge = tmp_path / "challenge.npz"
    np.savez(
        challenge,
        imgs=image.astype(np.uint8),
        gts=labels,
        spacing=np.array([2.0, 1.0, 1.0]),
        text_prompts=np.array({"1": "liver", "2": "kidney", "instance_label": 0}, dtype=object),
    )
    vol = load_volume_file(challenge)
    assert sorted(vol.classes) == ["kidney", "liver"]
    assert vol.classes["kidney"].sum() == 8 and set(np.unique(vol.classes["liver"])) == {0, 1}


def test_loss_ignores_masks_of_negative_pairs():
    torch.manual_seed(0)
    out = {
        "mask_logits": torch.randn(2, 3, 8, 8),
        "edge_logits": torch.randn(2, 3, 8, 8),
        "exist_logits": torch.randn(2, 3),
    }
    masks = (torch.rand(2, 3, 8, 8) > 0.5).float()
    exists = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    loss, _ = segmentation_loss(out, masks, masks, exists)
    # changing the mask prediction of a negative pair must not change the loss
    out2 = {k: v.clone() for k, v in out.items()}
    out2["mask_logits"][0, 1] += 5
    loss2, _ = segmentation_loss(out2, masks, masks, exists)
    assert torch.isclose(loss, loss2)
    out2["mask_logits"][0, 0] += 5
    assert not torch.isclose(loss, segmentation_loss(out2, masks, masks, exists)[0])


def _table_tokens(prompts):
    from fveseg.model.text_encoder import PrecomputedTextEncoder

    encoder = PrecomputedTextEncoder.from_file(
        ROOT / "src" / "fveseg" / "weights" / "prompt_embeddings.safetensors"
    )
    return encoder, encoder.encode(prompts)


def test_few_steps_reduce_loss_on_fixed_batch():
    from fveseg.model import build_model
    from fveseg.model.text_encoder import TextTokens

    torch.manual_seed(0)
    volume = _volume()
    vocab = {p: i for i, p in enumerate(training_prompts())}
    config = SampleConfig(order=1, size=64, n_prompts=2, augment=NO_AUG)
    rng = np.random.default_rng(0)
    samples = [make_sample(volume, rng, config, vocab, focal=i) for i in (1, 3)]
    batch = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    from dataclasses import replace

    from fveseg.model.build import CONFIGS

    # the tiny recipe with a shallower decoder: the same code path, fast enough for the test suite
    model = build_model(replace(CONFIGS["tiny"], decoder_layers=2, depths=(1, 1, 1, 1))).train()
    encoder, table = _table_tokens(list(vocab))
    model.set_text_encoder(encoder)
    ids = batch["prompt_ids"]
    text = TextTokens(table.tokens[ids], table.mask[ids])
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    images = (batch["image"].float() - 114.5) / 57.6
    losses = []
    for _ in range(8):
        out = model(images, text, generator=torch.Generator().manual_seed(0))
        loss, _ = segmentation_loss(out, batch["masks"], batch["edges"], batch["exists"])
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_train_end_to_end_writes_loadable_checkpoint(tmp_path):
    from training.config import load_config
    from training.train import train

    from fveseg.model.checkpoint import load_checkpoint

    config = load_config(
        None,
        steps=2,
        batch_size=2,
        num_workers=0,
        input_size=64,
        warmup_steps=1,
        val_synthetic=0,
        log_every=1,
        synthetic={"size": 64, "depth": [4, 6]},
        real_fraction=0.5,
    )
    summary = train(config, None, tmp_path, device="cpu", volumes=[_volume()], quiet=True)
    assert summary["steps"] == 2
    model = load_checkpoint(tmp_path / "best")
    assert model.metadata["fve"]["order"] == 1
    assert "nuclei" in model.metadata["prompts"] and "mitochondria" not in model.metadata["prompts"]
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,") and len(log) >= 3


def test_training_only_the_discriminator_leaves_masks_untouched(tmp_path):
    from training.config import load_config
    from training.train import train

    from fveseg.errors import InputError
    from fveseg.model.checkpoint import load_checkpoint

    small = dict(
        steps=2, batch_size=2, num_workers=0, input_size=64, warmup_steps=1, val_synthetic=0, log_every=1,
        synthetic={"size": 64, "depth": [4, 6]}, real_fraction=0.5,
    )  # fmt: skip
    train(load_config(None, **small), None, tmp_path / "a", device="cpu", volumes=[_volume()], quiet=True)
    isd = load_config(None, trainable=["decoder.cls_"], lr=1e-2, **small)
    train(isd, None, tmp_path / "b", "cpu", init_checkpoint=str(tmp_path / "a" / "best"), volumes=[_volume()],
          quiet=True)  # fmt: skip
    before = dict(load_checkpoint(tmp_path / "a" / "best").named_parameters())
    after = dict(load_checkpoint(tmp_path / "b" / "last").named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("decoder.cls_") for name in changed)
    with pytest.raises(InputError, match="matches no parameter"):
        train(load_config(None, trainable=["no.such."], **small), None, tmp_path / "c", "cpu",
              volumes=[_volume()], quiet=True)  # fmt: skip


def test_precomputed_table_matches_live_minilm():
    pytest.importorskip("transformers")
    from fveseg.model.text_encoder import MiniLMTextEncoder

    prompts = ["nuclei", "DAPI-stained nuclei", "nuclear stain", "mitochondria", "puncta"]
    encoder, table = _table_tokens(prompts)
    assert set(p.lower() for p in all_prompts()) <= set(encoder.prompts)
    live = MiniLMTextEncoder().encode(prompts)
    assert torch.equal(live.mask, table.mask)
    # same tokens; values agree to float rounding (MiniLM pads each batch differently)
    torch.testing.assert_close(live.tokens, table.tokens, rtol=0, atol=1e-5)


def test_gpu_import_path_needs_no_zarr_dask_napari_transformers():
    """The GPU box has torch, numpy, scipy, scikit-image, tifffile, safetensors only."""
    blocked = (
        "zarr",
        "dask",
        "napari",
        "transformers",
        "ome_zarr",
        "distributed",
        "nibabel",
        "cc3d",
        "fastremap",
        "edt",
        "magicgui",
        "qtpy",
    )
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "import numpy as np\n"
        "import training.train, training.evaluate, training.finetune, training.dataset\n"
        "from training.config import load_config\n"
        "load_config('training/configs/tiny-gpu.json')\n"
        "from fveseg.model import build_model\n"
        "from fveseg.inference.segmenter import Segmenter\n"
        "Segmenter(build_model('tiny'), device='cpu')\n"
        "from training.validation import selection_instances\n"
        "mask = np.zeros((1, 8, 12)); mask[0, 2:6, 1:11] = 1\n"
        "edges = np.zeros_like(mask); edges[0, :, 6] = 1\n"
        "assert selection_instances(mask, edges).max() == 2\n"
        "print('ok')\n"
    )
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_hard_example_weights_and_sampling_probabilities(tmp_path):
    from training.dataset import sampling_probabilities
    from training.hard_examples import weights_from_scores

    from fveseg.errors import InputError

    weights = weights_from_scores({"a.npz": 1.0, "b.npz": 0.0, "c.npz": 0.5, "d.npz": 1.7}, floor=0.25)
    assert weights == {"a.npz": 0.25, "b.npz": 1.25, "c.npz": 0.75, "d.npz": 0.25}
    table = tmp_path / "hard.json"
    table.write_text(json.dumps({"a.npz": 0.25, "b.npz": 1.25}))
    files = ["/data/train/a.npz", "/other/b.npz", "/data/new.npz"]
    # one in-memory volume and the unnamed file get the mean weight, 0.75; files are matched by name
    p = sampling_probabilities(files, table, n_volumes=1)
    np.testing.assert_allclose(p, np.array([0.75, 0.25, 1.25, 0.75]) / 3.0)
    np.testing.assert_allclose(sampling_probabilities(files, None), [1 / 3] * 3)
    with pytest.raises(InputError, match="does not exist"):
        sampling_probabilities(files, tmp_path / "missing.json")
    table.write_text("[1, 2]")
    with pytest.raises(InputError, match="not a JSON object"):
        sampling_probabilities(files, table)
    table.write_text(json.dumps({"a.npz": -1}))
    with pytest.raises(InputError, match="finite weights >= 0"):
        sampling_probabilities(files, table)
    with pytest.raises(ValueError, match="floor"):
        weights_from_scores({"a.npz": 1.0}, floor=0)


def test_weighted_sampling_draws_files_in_proportion(tmp_path):
    from training.dataset import MixConfig, MixedSlices

    paths = []
    for name, side in (("small.npz", 6), ("large.npz", 20)):  # told apart by the nucleus' area
        labels = np.zeros((1, 32, 32), np.uint16)
        labels[0, 4 : 4 + side, 4 : 4 + side] = 1
        image = (labels * 200 + 20).astype(np.uint8)
        np.savez(tmp_path / name, image=image, labels=labels)
        paths.append(str(tmp_path / name))
    (tmp_path / "w.json").write_text(json.dumps({"small.npz": 9.0, "large.npz": 1.0}))
    mix = MixConfig(real_fraction=1.0, real_weights=str(tmp_path / "w.json"), synthetic_pool=0)
    sample = SampleConfig(order=0, size=32, n_prompts=4, augment=NO_AUG)
    vocabulary = {p: i for i, p in enumerate(training_prompts())}
    stream = iter(MixedSlices(paths, mix, sample, vocabulary, seed=3))
    areas = [float(example["masks"].sum()) for example in (next(stream) for _ in range(300))]
    positive = [a for a in areas if a > 0]
    share = np.mean([a < 100 for a in positive])  # 36 px against 400 px
    assert len(positive) > 50 and 0.82 < share < 0.97  # 0.9 expected


def test_hard_examples_command_scores_every_file_and_never_overwrites(tmp_path, capsys):
    from training.hard_examples import main

    from _models import micro_config
    from fveseg.model import build_model
    from fveseg.model.checkpoint import save_checkpoint

    folder = tmp_path / "data" / "train" / "dsb2018_fluo"
    folder.mkdir(parents=True)
    for name in ("a.npz", "b.npz"):
        labels = np.zeros((1, 48, 48), np.uint16)
        labels[0, 8:20, 8:20], labels[0, 28:40, 24:36] = 1, 2
        np.savez(folder / name, image=(labels > 0).astype(np.uint8) * 180 + 10, labels=labels)
    torch.manual_seed(0)  # 64-px tiles: a 1x1 deepest map would be too small for its group norms
    checkpoint = save_checkpoint(build_model(micro_config()), tmp_path / "micro", {"prompts": ["nuclei"]})
    checkpoint = checkpoint.with_suffix("")
    out = tmp_path / "hard.json"
    argv = ["--checkpoint", str(checkpoint), "--data-root", str(tmp_path / "data"), "--out", str(out)]
    assert main(argv) == 0
    weights = json.loads(out.read_text())
    assert sorted(weights) == ["a.npz", "b.npz"]
    assert all(0.25 <= w <= 1.25 for w in weights.values())  # floor + (1 - F1), F1 in [0, 1]
    before = out.read_text()
    assert main(argv) == 2 and out.read_text() == before  # an existing table is kept
    assert "exists; choose another --out" in capsys.readouterr().err


def test_averaged_checkpoint_holds_the_weighted_mean_and_both_lineages(tmp_path):
    from training.average_checkpoints import main as average

    from _models import micro_config
    from fveseg.model import build_model
    from fveseg.model.checkpoint import load_checkpoint, save_checkpoint

    paths = []
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        meta = {"command": f"train {name}", "training_history": [{"stage": "parent", "command": "train p"}]}
        paths.append(save_checkpoint(build_model(dataclasses.asdict(micro_config())), tmp_path / name, meta))
    a, b = (load_checkpoint(p).state_dict() for p in paths)
    average([str(tmp_path / "a"), str(tmp_path / "b"), "--weight", "0.25", "--out", str(tmp_path / "avg")])
    averaged = load_checkpoint(tmp_path / "avg")
    for key, value in averaged.state_dict().items():
        expected = 0.25 * a[key] + 0.75 * b[key] if value.is_floating_point() else b[key]
        torch.testing.assert_close(value, expected)
    history = averaged.metadata["training_history"]
    assert [h["command"] for h in history[:2]] == ["train p", "train b"]
    assert history[-1]["command"] == averaged.metadata["command"]
    assert "average_checkpoints" in averaged.metadata["command"]
    with pytest.raises(SystemExit, match="--overwrite"):  # never replaces a checkpoint unasked
        average([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "avg")])
    other = save_checkpoint(build_model(dataclasses.asdict(micro_config(embed_dim=16))), tmp_path / "c")
    with pytest.raises(SystemExit, match="different architectures"):
        average([str(other), str(tmp_path / "b"), "--out", str(tmp_path / "bad")])


def test_appearance_redraws_only_when_asked():
    from dataclasses import replace

    from training.data import APPEARANCE_RANGES, SyntheticSpec, draw_appearance, synthetic_volume

    spec = SyntheticSpec(depth=(6, 6), size=48, channels=("nuclei",))
    plain = synthetic_volume(3, spec)
    again = synthetic_volume(3, replace(spec, appearance_p=0.0))
    np.testing.assert_array_equal(plain.image, again.image)  # p = 0: the volumes of earlier runs
    redrawn = synthetic_volume(3, replace(spec, appearance_p=1.0))
    assert "-realistic-" in redrawn.name and "-realistic-" not in plain.name
    assert not np.array_equal(redrawn.image, plain.image)
    rng = np.random.default_rng(0)
    for _ in range(50):
        drawn = draw_appearance(rng)
        for name, (low, high) in APPEARANCE_RANGES.items():
            assert low <= drawn[name] <= high or (name == "stripes" and drawn[name] == 0.0)


def test_training_sees_a_dominant_background_flattened_as_inference_does():
    from training.data import LabelledVolume

    from fveseg.normalize.background import flatten_background
    from fveseg.normalize.intensity import normalize

    y, x = np.mgrid[0:96, 0:96]
    image = np.broadcast_to(1000.0 + 3.0 * x + 40.0 * np.sin(y / 2.0), (4, 96, 96)).astype(np.float32).copy()
    image[:, 40:50, 40:50] += 60.0
    volume = LabelledVolume(image, {"nuclei": np.zeros(image.shape, np.uint16)}, (1.0, 0.5, 0.5), "striped")
    expected = normalize(flatten_background(image, (1.0, 0.5, 0.5)))
    np.testing.assert_array_equal(volume.normalized_image(), expected)


def test_canvas_distillation_places_windows_as_the_tiler_places_slices():
    """`training.distill_canvas` compares teacher and student over the window where each canvas holds it:
    centred like `SliceTiler` centres a slice (offset (canvas - side) // 2), and cut back out exactly."""
    from training.distill_canvas import centred, distillation_loss, uncentred

    from fveseg.inference.tiling import SliceTiler

    window = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7) + 1
    assert torch.equal(centred(window, 16, 16), SliceTiler(5, 7, tile=16, overlap=0).split(window))
    on_canvas = centred(window, 16, 12)
    assert on_canvas.shape == (2, 3, 16, 12) and on_canvas.sum() == window.sum()
    assert torch.equal(on_canvas[..., 5:10, 2:9], window)  # offsets (16 - 5) // 2 and (12 - 7) // 2
    assert torch.equal(uncentred(on_canvas, 5, 7), window)
    # a student that gives the teacher's logits scores the teacher's own entropy, and any other scores more
    logits = {"mask_logits": torch.randn(2, 4, 16, 12), "edge_logits": torch.randn(2, 4, 16, 12),
              "exist_logits": torch.randn(2, 4)}  # fmt: skip
    same, _ = distillation_loss(logits, logits, 5, 7)
    moved = {k: v + 0.5 for k, v in logits.items()}
    assert distillation_loss(moved, logits, 5, 7)[0] > same
