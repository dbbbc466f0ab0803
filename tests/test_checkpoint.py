"""Checkpoint save/load: identical outputs after a round trip, clear errors for every bad file."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from _models import micro_config
from fveseg.errors import CheckpointError
from fveseg.model import TextTokens, build_model
from fveseg.model import checkpoint as ckpt

MICRO = micro_config()


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model(MICRO).eval()
    path = ckpt.save_checkpoint(model, tmp_path / "m", {"prompts": ["nuclei"], "fve": {"order": 2}})
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = ckpt.load_checkpoint(path.with_suffix(""))
    text = TextTokens(torch.randn(2, 4, 384), torch.ones(2, 4, dtype=torch.bool))
    images = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        a = model(images, text, generator=torch.Generator().manual_seed(0))
        b = loaded(images, text, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.metadata["prompts"] == ["nuclei"] and loaded.metadata["fve"] == {"order": 2}
    assert loaded.metadata["input_size"] == 64 and loaded.config == model.config
    meta = json.loads(path.read_text())
    assert meta["format_version"] == ckpt.FORMAT_VERSION and meta["config"]["hidden_dim"] == 32


def test_any_spelling_of_the_path_loads(saved):
    _, path = saved
    for spelling in (path, path.with_suffix(".safetensors"), path.with_suffix(""), path.parent):
        ckpt.load_checkpoint(spelling)


def test_refuses_to_overwrite(saved):
    model, path = saved
    with pytest.raises(CheckpointError, match="already exists"):
        ckpt.save_checkpoint(model, path)
    ckpt.save_checkpoint(model, path, overwrite=True)


def test_missing_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_checkpoint(tmp_path / "nothing")
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights .* are missing"):
        ckpt.load_checkpoint(path)


def test_corrupt_files(saved):
    _, path = saved
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="checksum"):
        ckpt.load_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        ckpt.load_checkpoint(path, verify_hash=False)
    path.write_text("{ truncated")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(path)


def _rewrite(path, config_change=None, drop=None):
    meta = json.loads(path.read_text())
    if config_change:
        meta["config"].update(config_change)
    if drop:
        weights = path.with_suffix(".safetensors")
        state = load_file(str(weights))
        del state[drop]
        save_file(state, str(weights))
        meta["weights"]["sha256"] = ckpt.file_sha256(weights)
    path.write_text(json.dumps(meta))


def test_mismatched_shapes_are_listed(saved):
    _, path = saved
    _rewrite(path, {"hidden_dim": 48})
    with pytest.raises(
        CheckpointError, match=r"mis-shaped keys .*decoder\.cls_head\.weight \(1, 32\) vs \(1, 48\).*in all"
    ):
        ckpt.load_checkpoint(path)


def test_missing_and_unexpected_keys_are_listed(saved):
    _, path = saved
    _rewrite(path, drop="decoder.cls_head.bias")
    with pytest.raises(CheckpointError, match=r"missing keys: decoder\.cls_head\.bias"):
        ckpt.load_checkpoint(path)
    _rewrite(path, {"decoder_layers": 1})
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*decoder\.layers\.1\."):
        ckpt.load_checkpoint(path)


def test_unknown_config_field(saved):
    _, path = saved
    _rewrite(path, {"warp_drive": True})
    with pytest.raises(CheckpointError, match="warp_drive"):
        ckpt.load_checkpoint(path)


def test_default_checkpoint_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(ckpt, "default_checkpoint_path", lambda: tmp_path / "default")
    with pytest.raises(CheckpointError, match="default model is not installed"):
        ckpt.default_checkpoint()


def test_bundled_model_names_resolve_and_local_files_win(saved, monkeypatch, tmp_path):
    model, path = saved  # tmp_path/m.json + .safetensors play the installed weights folder
    monkeypatch.setattr(ckpt, "default_checkpoint_path", lambda: tmp_path / "default")
    assert ckpt.bundled_checkpoint_names() == ["m"]
    assert ckpt.checkpoint_paths("m")[0] == path  # a bare name, not a file here: the bundled model
    assert ckpt.load_checkpoint("m").metadata["checkpoint"] == str(path)
    local = tmp_path / "cwd"
    local.mkdir()
    monkeypatch.chdir(local)
    ckpt.save_checkpoint(model, local / "m", {"prompts": ["cells"]})
    assert ckpt.checkpoint_paths("m")[0].resolve() == (local / "m.json").resolve()
    with pytest.raises(CheckpointError, match="missing"):
        ckpt.load_checkpoint("no-such-model")


def test_installed_package_ships_the_noise_robust_model():
    assert {"default", "noise-robust"} <= set(ckpt.bundled_checkpoint_names())
    json_path, weights_path = ckpt.checkpoint_paths("noise-robust")
    meta = json.loads(json_path.read_text())
    assert weights_path.is_file() and meta["fve"]["order"] == 1 and "nuclei" in meta["prompts"]
