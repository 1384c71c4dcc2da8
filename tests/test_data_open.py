"""data.open: one entry point decides the layout (AMi-Br or class-per-folder) and the split rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_class_folders
from onepixel.data.errors import DataError
from onepixel.data.labels import LabelMap
from onepixel.data.open import evaluation_choice, open_patches, patch_source, resolved_split, split_names
from onepixel.data.patches import PatchSet


def test_open_patches_reads_amibr_with_its_split_and_a_folder_as_classes(
    amibr_root: Path, test_split: PatchSet, tmp_path: Path
) -> None:
    opened = open_patches(amibr_root).patches
    assert opened.names == test_split.names and opened.images.shape[1:] == (64, 64, 3)
    assert resolved_split(amibr_root, None) == "test"
    folder = write_class_folders(test_split, tmp_path / "folder", 3)
    plain = open_patches(folder).patches
    assert len(plain) == 6 and set(plain.classes) == set(test_split.classes)
    assert resolved_split(folder, None) is None
    assert patch_source(folder, None, plain) == {
        "path": str(folder.resolve()),
        "split": None,
        "positive": plain.positive,
    }


def test_split_names_are_the_amibr_splits_and_refuse_what_they_cannot_mean(
    amibr_root: Path, test_split: PatchSet, tmp_path: Path
) -> None:
    train, test = split_names(amibr_root, "train"), split_names(amibr_root, "test")
    assert train and test and not train & test and set(test_split.names) <= test
    assert split_names(amibr_root, "all") is None and split_names(tmp_path, "all") is None
    with pytest.raises(DataError, match="unknown split 'val'") as bad:
        split_names(amibr_root, "val")
    assert bad.value.settings == ("split",)
    with pytest.raises(DataError, match="is not an AMi-Br folder"):
        split_names(tmp_path, "train")


def test_evaluation_choice_reads_amibr_splits_split_folders_and_plain_folders(
    amibr_root: Path, test_split: PatchSet, tmp_path: Path
) -> None:
    assert evaluation_choice(amibr_root, "train", "Atypical") == ("train", "Atypical")
    with pytest.raises(DataError, match="AMi-Br split must be train, test or all, got 'val'") as bad:
        evaluation_choice(amibr_root, "val", "Atypical")
    assert bad.value.settings == ("split",)
    plain = write_class_folders(test_split, tmp_path / "plain", 2)
    assert evaluation_choice(plain, "test", "Atypical") == (None, "Atypical")
    # A label the folders do not name is left to the class order, unless a label map renames them.
    assert evaluation_choice(plain, "all", "mitosis") == (None, None)
    renamed = LabelMap.parse("Atypical=mitosis")
    assert evaluation_choice(plain, "all", "mitosis", renamed) == (None, "mitosis")
    write_class_folders(test_split, tmp_path / "nested" / "val", 2)
    assert evaluation_choice(tmp_path / "nested", "val", "Atypical") == ("val", "Atypical")
    with pytest.raises(DataError, match="has no split folder 'train'") as bad:
        evaluation_choice(plain, "train", "Atypical")
    assert bad.value.settings == ("split",)
