"""Patch sets: reading PNG/JPEG/TIFF class folders and the AMi-Br split, fitting them to a
target's input size, and the download."""

from onepixel.data.errors import DataError
from onepixel.data.fit import Fit, fit_image_list, fit_images
from onepixel.data.formats import read_image, read_png
from onepixel.data.labels import LabelMap
from onepixel.data.open import OpenedData, open_patches
from onepixel.data.patches import PatchSet, Skipped, load_folder
from onepixel.data.survey import FolderSurvey, survey_folder

__all__ = [
    "DataError",
    "Fit",
    "FolderSurvey",
    "LabelMap",
    "OpenedData",
    "PatchSet",
    "Skipped",
    "fit_image_list",
    "fit_images",
    "load_folder",
    "open_patches",
    "read_image",
    "read_png",
    "survey_folder",
]
