"""Shared fixtures: keep plugin settings out of the user's config folder."""

import pytest


@pytest.fixture(autouse=True)
def _plugin_settings_in_tmp(tmp_path, monkeypatch):
    """The segmentation widget remembers settings in $FVESEG_CONFIG_DIR: point it at a temporary folder."""
    monkeypatch.setenv("FVESEG_CONFIG_DIR", str(tmp_path / "fveseg-config"))
