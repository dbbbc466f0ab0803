"""Shared fixtures: keep plugin settings out of the user's config folder; load torch before OpenGL."""

import contextlib

import pytest

# With Mesa's software OpenGL (Xvfb, CI), the first napari canvas loads Mesa's libLLVM; importing triton
# afterwards (torchvision -> torch._dynamo -> triton, e.g. via fveseg.model) loads a second LLVM and kills
# the test process with a segmentation fault. Importing it once here, before any viewer exists, avoids
# that for every test module in the session (the plugin guards real napari sessions itself).
with contextlib.suppress(ImportError):
    import torch._dynamo  # noqa: F401


@pytest.fixture(autouse=True)
def _plugin_settings_in_tmp(tmp_path, monkeypatch):
    """The segmentation widget remembers settings in $FVESEG_CONFIG_DIR: point it at a temporary folder."""
    monkeypatch.setenv("FVESEG_CONFIG_DIR", str(tmp_path / "fveseg-config"))
