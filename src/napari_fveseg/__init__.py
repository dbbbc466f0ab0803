"""napari plugin for fveseg: readers, writers, sample data and widgets over the headless core."""

__version__ = "0.1.0"
