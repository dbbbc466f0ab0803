"""Remember the segmentation widget's last settings between sessions.

Settings live in one JSON file in the user's config directory (``platformdirs``, a napari dependency),
or in ``$FVESEG_CONFIG_DIR`` when that is set (tests point it at a temporary folder). A missing or
unreadable file gives the defaults: a broken settings file must never stop the widget from opening.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

SETTINGS_FILE = "segmentation-widget.json"


@dataclass
class WidgetSettings:
    """What the segmentation widget remembers (all plain JSON types)."""

    prompts: str = "nuclei"
    checkpoint: str = ""  # "" = the bundled default model
    device: str = "auto"
    mask_threshold: float = 0.5
    existence_threshold: float = 0.5
    split_instances: bool = True
    min_size: float = 0.0
    output: str = "per prompt"  # or "semantic"
    axis: str = "auto"
    resize: float = 0.0  # in-plane factor applied to slices before the network; 0 = automatic


def config_dir() -> Path:
    """Folder holding the plugin's settings (created on first save)."""
    override = os.environ.get("FVESEG_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-fveseg", appauthor=False))


def load_settings() -> WidgetSettings:
    """Last saved settings, or the defaults when none were saved or the file is unreadable."""
    path = config_dir() / SETTINGS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return WidgetSettings()
    if not isinstance(stored, dict):
        return WidgetSettings()
    defaults = WidgetSettings()
    values = {}
    for field in fields(WidgetSettings):
        value = stored.get(field.name, getattr(defaults, field.name))
        default = getattr(defaults, field.name)
        # keep a stored value only if it has the field's type (ints are fine for floats)
        if isinstance(default, float) and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        values[field.name] = value if isinstance(value, type(default)) else default
    return WidgetSettings(**values)


def save_settings(settings: WidgetSettings) -> Path:
    """Write the settings atomically (temporary file, then rename); returns the file's path."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SETTINGS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(settings), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path
