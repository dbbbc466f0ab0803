"""The ``fveseg`` command line: subcommands through main(argv), exit codes through a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fveseg.cli import main


def micro_checkpoint(folder: Path) -> Path:
    """A randomly initialised, very small model saved as a checkpoint (stands in for the default model)."""
    import torch

    from fveseg.model import CONFIGS, build_model
    from fveseg.model.checkpoint import save_checkpoint

    config = asdict(
        replace(
            CONFIGS["tiny"],
            name="micro",
            input_size=32,
            decoder_layers=3,
            embed_dim=16,
            hidden_dim=32,
            ffn_dim=64,
            conv_dim=32,
            mask_dim=32,
            nheads=2,
        )
    )
    torch.manual_seed(0)
    return save_checkpoint(build_model(config), folder / "micro", metadata={"prompts": ["nuclei"]})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return micro_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture
def volume_tif(tmp_path) -> Path:
    from fveseg.synthetic import make_nuclei_volume

    path = tmp_path / "vol.tif"
    write_zyx(path, make_nuclei_volume((8, 32, 32), seed=1).image)
    return path


def write_zyx(path: Path, array: np.ndarray) -> None:
    """A TIFF whose axes say z, y, x (a few-slice stack is otherwise taken for channels)."""
    tifffile.imwrite(path, array, metadata={"axes": "ZYX"})


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fveseg.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


# -- errors and exit codes ------------------------------------------------------------------------------


def test_missing_input_exits_2_with_one_line_and_no_traceback(tmp_path):
    done = run_cli("segment", str(tmp_path / "missing.tif"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "does not exist" in done.stderr and "fix:" in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


def test_unknown_option_exits_2(capsys):
    assert main(["segment", "x.tif", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --no-such-option") and "Traceback" not in err
    assert main(["segment", "x.tif", "--mask-threshold", "2"]) == 2  # out-of-range value
    assert main([]) == 2  # no subcommand


def test_subprocess_unknown_subcommand_exits_2():
    done = run_cli("frobnicate")
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_bad_checkpoint_is_a_user_error(tmp_path, volume_tif, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["segment", str(volume_tif), "--model", str(bad), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "vol.fveseg.ome.zarr").exists()


def test_keyboard_interrupt_exits_130_without_partial_output(tmp_path, volume_tif, checkpoint, monkeypatch):
    import fveseg.io

    def interrupted(path, *args, **kwargs):
        Path(path).mkdir()
        (Path(path) / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(fveseg.io, "write_labels_zarr", interrupted)
    output = tmp_path / "out.zarr"
    assert main(["segment", str(volume_tif), "--model", str(checkpoint), "-o", str(output), "--quiet"]) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.tif"]


def test_existence_gaps_inside_the_stack_print_advice(tmp_path, volume_tif, checkpoint, monkeypatch, capsys):
    import dataclasses

    import fveseg.pipeline

    real = fveseg.pipeline.segment_array

    def weak_middle(*args, **kwargs):  # found on the outer slices, weak (0.1-0.5) on two in the middle
        result = real(*args, **kwargs)
        existence = np.array([[0.9, 0.9, 0.9, 0.3, 0.2, 0.9, 0.9, 0.05]], np.float32)
        return dataclasses.replace(result, existence=existence)

    monkeypatch.setattr(fveseg.pipeline, "segment_array", weak_middle)
    output = tmp_path / "out.tif"
    command = ["segment", str(volume_tif), "--model", str(checkpoint), "-o", str(output), "--quiet"]
    command += ["--scale", "1", "0.5", "0.5"]  # a known voxel size: no note about it
    assert main([*command, "--exist-low", "0.1"]) == 0  # the hysteresis keeps those slices: no advice
    assert "was dropped from" not in capsys.readouterr().err
    assert main([*command, "--overwrite"]) == 0  # the default, plain per-slice gate drops them
    err = capsys.readouterr().err
    assert 'note: vol.tif: "nuclei" was dropped from 2 of 8 slices' in err
    assert "--exist-low 0.1" in err
    assert output.is_file()


def test_bugs_exit_1_with_one_line_and_a_log_file(monkeypatch, volume_tif, tmp_path, capsys):
    import fveseg.cli.segment

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setenv("FVESEG_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(fveseg.cli.segment, "run", broken)
    assert main(["segment", str(volume_tif)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("internal error: RuntimeError: a bug") and "Traceback" not in err
    assert "a bug" in next((tmp_path / "logs").iterdir()).read_text()


# -- segment ----------------------------------------------------------------------------------------------


def test_segment_writes_zarr_refuses_existing_and_overwrites(tmp_path, volume_tif, checkpoint, capsys):
    from fveseg.io import read_labels

    output = tmp_path / "out.zarr"
    argv = [
        "segment",
        str(volume_tif),
        "--model",
        str(checkpoint),
        "--instances",
        "-o",
        str(output),
        "--batch-size",
        "4",
        "--exist-threshold",
        "0",
        "--quiet",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "volume" in table and "objects" in table and "vol" in table and "nuclei" in table
    labels, meta = read_labels(output, "nuclei")
    assert labels.shape == (8, 32, 32) and labels.dtype == np.uint32
    first = np.asarray(labels)

    assert main(argv) == 2  # refuses to replace
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0  # replaces, same deterministic result
    assert np.array_equal(np.asarray(read_labels(output, "nuclei")[0]), first)


def test_the_program_ends_with_its_outputs_whole_and_its_table_printed(tmp_path, volume_tif, checkpoint):
    """`console` (``python -m fveseg.cli``) skips the interpreter's teardown: what it wrote must equal what
    `main` writes in this process, and the table it printed must reach the pipe."""
    from fveseg.io import read_labels

    options = ["--model", str(checkpoint), "--instances", "--batch-size", "4", "--exist-threshold", "0"]
    done = run_cli("segment", str(volume_tif), *options, "-o", str(tmp_path / "program.zarr"))
    assert done.returncode == 0, done.stderr
    assert "objects" in done.stdout and "program.zarr" in done.stdout
    assert main(["segment", str(volume_tif), *options, "-o", str(tmp_path / "here.zarr"), "--quiet"]) == 0
    program, here = (
        np.asarray(read_labels(tmp_path / f"{which}.zarr", "nuclei")[0]) for which in ("program", "here")
    )
    assert program.shape == (8, 32, 32) and program.max() > 0 and np.array_equal(program, here)


def test_segment_tiff_several_prompts_and_folder_input(tmp_path, volume_tif, checkpoint, capsys):
    from fveseg.io import read_labels

    second = tmp_path / "other.tif"
    second.write_bytes(volume_tif.read_bytes())
    out = tmp_path / "out"
    argv = [
        "segment",
        str(tmp_path),
        "-p",
        "nuclei",
        "-p",
        "cells",
        "--format",
        "tiff",
        "-o",
        str(out),
        "--model",
        str(checkpoint),
        "--no-instances",
        "--quiet",
    ]
    assert main(argv) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["other.tif", "vol.tif"]
    semantic, meta = read_labels(out / "vol.tif")
    assert semantic.shape == (8, 32, 32) and set(np.unique(semantic)) <= {0, 1, 2}
    assert capsys.readouterr().out.count(".tif") == 2


def test_segment_into_source_adds_labels_to_the_image_group(tmp_path, checkpoint):
    from fveseg.io import read_labels, read_volume, write_labels_zarr
    from fveseg.synthetic import make_nuclei_volume

    sample = make_nuclei_volume((8, 32, 32), seed=2)
    source = tmp_path / "img.ome.zarr"
    write_labels_zarr(source, sample.labels, "truth", image=sample.image, spacing=sample.spacing)
    assert main(["segment", str(source), "--into-source", "--model", str(checkpoint), "--quiet"]) == 0
    labels, _ = read_labels(source, "nuclei")
    assert labels.shape == sample.image.shape
    assert "truth" in read_volume(source).labels


# -- encode, evaluate, info, demo ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_encode_writes_d_h_w_3(tmp_path, suffix):
    volume = np.random.default_rng(0).integers(0, 255, (5, 16, 12), dtype=np.uint8)
    write_zyx(tmp_path / "v.tif", volume)
    output = tmp_path / f"fve{suffix}"
    assert main(["encode", str(tmp_path / "v.tif"), "-o", str(output), "--order", "2", "--quiet"]) == 0
    if suffix == ".tif":
        encoded = tifffile.imread(output)
    else:
        import zarr

        encoded = zarr.open_array(str(output), mode="r")[:]
    assert encoded.shape == (5, 16, 12, 3) and encoded.dtype == np.uint8
    assert np.array_equal(encoded[..., 0], volume)  # uint8 passes normalisation unchanged; focal channel
    from fveseg import fve

    assert np.array_equal(encoded[3], fve.encode(volume, 3, order=2))


def test_encode_slice_range_and_existing_output(tmp_path):
    volume = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    write_zyx(tmp_path / "v.tif", volume)
    output = tmp_path / "fve.tif"
    assert (
        main(
            [
                "encode",
                str(tmp_path / "v.tif"),
                "-o",
                str(output),
                "--start",
                "1",
                "--stop",
                "3",
                "--raw",
                "--quiet",
            ]
        )
        == 0
    )
    encoded = tifffile.imread(output)
    assert encoded.shape == (2, 8, 8, 3) and encoded.dtype == np.uint16
    assert np.array_equal(encoded[0, ..., 1], volume[0]) and np.array_equal(encoded[1, ..., 2], volume[3])
    assert main(["encode", str(tmp_path / "v.tif"), "-o", str(output), "--quiet"]) == 2


def test_evaluate_hand_made_case(tmp_path, capsys):
    gt = np.zeros((4, 10, 10), np.uint32)
    gt[1:3, 1:4, 1:4] = 1  # 18 voxels
    gt[1:3, 6:9, 6:9] = 2  # 18 voxels
    pred = np.zeros_like(gt)
    pred[1:3, 1:4, 1:4] = 5  # object 1 found exactly
    pred[0, 0:2, 7:9] = 7  # 4 voxels of false positive; object 2 missed
    write_zyx(tmp_path / "gt.tif", gt)
    write_zyx(tmp_path / "pred.tif", pred)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred.tif"),
                "--gt",
                str(tmp_path / "gt.tif"),
                "--csv",
                str(tmp_path / "s.csv"),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "dice" in out and "f1" in out
    report = json.loads((tmp_path / "s.json").read_text())["volumes"][0]
    assert report["dice"] == pytest.approx(2 * 18 / (36 + 22))
    assert report["f1"] == pytest.approx(0.5) and report["dice_tp"] == pytest.approx(1.0)
    assert (report["tp"], report["fp"], report["fn"]) == (1, 1, 1)
    assert 0.0 < report["nsd"] < 1.0
    assert (tmp_path / "s.csv").read_text().splitlines()[0].startswith("prediction,ground truth,dice")


def test_evaluate_counts_must_match(tmp_path, capsys):
    write_zyx(tmp_path / "a.tif", np.zeros((2, 4, 4), np.uint8))
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "a.tif"),
                str(tmp_path / "a.tif"),
                "--gt",
                str(tmp_path / "a.tif"),
            ]
        )
        == 2
    )
    assert "2 predictions but 1 ground truths" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(tmp_path / "a.tif"), "--gt", str(tmp_path / "a.tif")]) == 0


def test_info_lists_models_devices_versions(checkpoint, capsys):
    assert main(["info", "--model", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "models:" in out and "default:" in out and "devices: cpu" in out
    assert "versions: fveseg 0.1.0" in out and "torch" in out
    assert str(checkpoint) in out and "micro" in out  # the given checkpoint's config is described
    assert "model choice: without --model, default segments every volume; with --model auto" in out
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["fveseg"] == "0.1.0" and "cpu" in report["devices"]
    assert "noise-robust" in report["model_choice"]


def test_demo_says_default_model_is_missing(tmp_path, monkeypatch, capsys):
    from fveseg.model import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "default_checkpoint_path", lambda: tmp_path / "none" / "default")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the default model is missing") and "--model" in err
    assert not (tmp_path / "fveseg-demo.zarr").exists()


def test_demo_runs_end_to_end_with_a_given_model(tmp_path, checkpoint, monkeypatch, capsys):
    import fveseg.synthetic
    from fveseg.io import read_labels, read_volume

    small = fveseg.synthetic.make_nuclei_volume((8, 32, 32), seed=4)
    monkeypatch.setattr(fveseg.synthetic, "make_sample_volume", lambda: small)
    output = tmp_path / "demo.zarr"
    argv = ["demo", "-o", str(output), "--model", str(checkpoint), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "objects found" in out and "dice" in out and "f1@0.5" in out and "segment" in out
    assert np.array_equal(np.asarray(read_volume(output).data), small.image)
    assert read_labels(output, "nuclei")[0].shape == small.image.shape
    assert main(argv) == 2  # refuses to overwrite
    assert main(argv + ["--overwrite"]) == 0


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "absent.ckpt"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
    (tmp_path / "out.json").write_text("{}")  # refused before the (large) source is read
    assert main(["convert", str(tmp_path / "absent.ckpt"), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "absent.ckpt")]) == 2  # DST missing: usage error


def test_resize_reaches_the_segmenter_and_is_checked(tmp_path, volume_tif, checkpoint, monkeypatch, capsys):
    from _spies import record_scales

    seen, runs = record_scales(monkeypatch)  # the scale asked for; each batch loop's (probe windows, run)
    argv = ["segment", str(volume_tif), "--model", str(checkpoint), "-o", str(tmp_path / "r.zarr"), "--quiet"]
    assert main(argv + ["--resize", "0.5"]) == 0
    assert seen == [0.5] and runs == [0.5]
    assert "resize" in capsys.readouterr().out  # the summary reports the scale used
    seen.clear()
    runs.clear()
    assert main(argv + ["--overwrite"]) == 0  # default: automatic (a probe at native size first)
    # the probe: native size first, then (`surer_at_half`) the same windows at half the chosen scale
    assert seen == ["auto"] and runs[0] == 1.0 and all(0 < s <= 1.25 for s in runs)
    seen.clear()
    assert main(argv + ["--overwrite", "--resize", "AUTO"]) == 0
    assert seen[0] == "auto"
    capsys.readouterr()
    assert main(argv + ["--resize", "0"]) == 2  # out of range: a one-line usage error
    assert "between 0.1 and 4" in capsys.readouterr().err


def test_focus_fraction_reaches_the_trimming_and_is_checked(
    tmp_path, volume_tif, checkpoint, monkeypatch, capsys
):
    import fveseg.instances.haze

    seen = []
    original = fveseg.instances.haze.trim_out_of_focus

    def spy(labels, image, axis=0, fraction=fveseg.instances.haze.FOCUS_FRACTION):
        seen.append((labels.shape == image.shape, fraction))
        return original(labels, image, axis=axis, fraction=fraction)

    monkeypatch.setattr(fveseg.instances.haze, "trim_out_of_focus", spy)
    argv = ["segment", str(volume_tif), "--model", str(checkpoint), "--quiet"]  # instances: the default
    assert main(argv + ["-o", str(tmp_path / "a.zarr")]) == 0
    assert main(argv + ["-o", str(tmp_path / "b.zarr"), "--focus-fraction", "0"]) == 0
    assert seen == [(True, 0.3), (True, 0.0)]  # the image goes along, the default is FOCUS_FRACTION
    assert main(argv + ["-o", str(tmp_path / "d.zarr"), "--no-instances"]) == 0
    assert len(seen) == 2  # masks only: nothing to trim
    capsys.readouterr()
    assert main(argv + ["-o", str(tmp_path / "c.zarr"), "--focus-fraction", "1.5"]) == 2
    assert "below 1" in capsys.readouterr().err


def test_model_auto_picks_the_noise_robust_one_for_a_noisy_volume_and_says_so(
    tmp_path, checkpoint, monkeypatch, capsys
):
    import shutil

    from fveseg.inference import load_segmenter
    from fveseg.model import checkpoint as checkpoint_module

    weights = tmp_path / "weights"  # stand-ins for the two bundled models
    weights.mkdir()
    for name in ("default", "noise-robust"):
        for suffix in (".json", ".safetensors"):
            shutil.copy(checkpoint.with_suffix(suffix), weights / f"{name}{suffix}")
    monkeypatch.setattr(checkpoint_module, "default_checkpoint_path", lambda: weights / "default")
    load_segmenter.cache_clear()
    try:
        rng = np.random.default_rng(0)
        clean = np.zeros((4, 48, 48), np.float32)
        clean[:, 12:36, 12:36] = 100
        for name, image in (("clean", clean), ("noisy", clean + rng.normal(0, 30, clean.shape))):
            write_zyx(tmp_path / f"{name}.tif", image.astype(np.float32))
            argv = ["segment", str(tmp_path / f"{name}.tif"), "-o", str(tmp_path / f"{name}-labels.tif")]
            argv += ["--model", "auto"]
            assert main(argv + ["--quiet"]) == 0
            err = capsys.readouterr().err
            assert ("noise-robust model segmented it" in err) == (name == "noisy"), err
            assert (tmp_path / f"{name}-labels.tif").is_file()
        assert "--model default" in err
    finally:
        load_segmenter.cache_clear()


def test_help_and_parsing_do_not_import_torch():
    """Every command builds every subcommand's parser: `fveseg --help` must not pay for torch (it took
    3.3 s when the segment subcommand imported the pipeline at its top)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fveseg.cli import build_parser\n"
        "build_parser().parse_args(['segment', 'x.tif', '-p', 'nuclei'])\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_command_line_process_keeps_freed_memory_for_its_next_arrays():
    """`fveseg.cli.console` (the installed program) keeps memory it frees: a freed 20 MiB array stays
    resident for the next one, where glibc's defaults hand it back (and page it in again)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from fveseg.cli._memory import keep_freed_memory\n"
        "def rss():\n"
        "    with open('/proc/self/status') as status:\n"
        "        return next(int(l.split()[1]) for l in status if l.startswith('VmRSS')) / 1024\n"
        "kept = keep_freed_memory() if sys.argv[1] == 'keep' else None\n"
        "array = np.ones(20 * 2**20 // 8)\n"
        "held = rss()\n"
        "del array\n"
        "print(kept, held - rss())\n"
    )
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator only")
    runs = {
        mode: subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, check=True)
        for mode in ("default", "keep")
    }
    kept, returned_with_keep = runs["keep"].stdout.split()
    if kept != "True":
        pytest.skip("not glibc: keep_freed_memory is a no-op here")
    assert float(runs["default"].stdout.split()[1]) > 15  # glibc's default gives the 20 MiB back
    assert float(returned_with_keep) < 5  # kept for the next array
