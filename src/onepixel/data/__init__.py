"""Patch sets: loading class-per-folder PNG sets, the AMi-Br split, and the download."""

from onepixel.data.patches import DataError, PatchSet, load_folder, read_png

__all__ = ["DataError", "PatchSet", "load_folder", "read_png"]
