"""Data loading on the real AMi-Br images: splits, groups, sizing, and clear errors for bad input."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.data.amibr import load_amibr, read_train_rows
from onepixel.data.patches import DataError, PatchSet, load_folder, read_png


@pytest.fixture(scope="module")
def train_split(amibr_root: Path) -> PatchSet:
    """Return the AMi-Br train split at native size (128 px)."""
    return load_amibr(amibr_root, "train", size=None)


def real_pngs(root: Path, label: str, n: int) -> list[Path]:
    """Return the first ``n`` real PNGs of a label folder."""
    return sorted((root / label).glob("*.png"))[:n]


def make_folder(tmp: Path, amibr_root: Path, layout: dict[str, tuple[str, int]]) -> Path:
    """Copy real images into ``tmp``: ``{target folder: (AMi-Br label, count)}``."""
    for target, (label, n) in layout.items():
        dest = tmp / target
        dest.mkdir(parents=True, exist_ok=True)
        for path in real_pngs(amibr_root, label, n):
            shutil.copy(path, dest / path.name)
    return tmp


def test_real_split_sizes_and_slide_groups(
    amibr_root: Path, train_split: PatchSet, test_split: PatchSet
) -> None:
    assert len(train_split) == 2894
    assert int(train_split.y.sum()) == 648 and int((train_split.y == 0).sum()) == 2246
    assert len(test_split) == 826
    assert int(test_split.y.sum()) == 184 and int((test_split.y == 0).sum()) == 642
    assert train_split.images.shape[1:] == (128, 128, 3)
    assert test_split.images.shape[1:] == (64, 64, 3)
    assert set(train_split.names).isdisjoint(test_split.names)
    assert train_split.positive == "Atypical" and train_split.classes == ("Atypical", "Normal")
    # Train images carry their slide from the CSV; 146 slides; test images have no slide.
    rows = read_train_rows(amibr_root)
    assert [rows[n] for n in train_split.names] == list(train_split.groups)
    assert len(set(train_split.groups)) == 146
    assert set(test_split.groups) <= {"MIDOG21:unknown", "TUPAC16:unknown"}


def test_centre_crop_matches_native_centre(amibr_root: Path, train_split: PatchSet) -> None:
    idx = [0, 1, 2]
    names = [train_split.names[i] for i in idx]
    cropped = load_folder(amibr_root, classes=("Atypical", "Normal"), names=names)
    order = [cropped.names.index(train_split.names[i]) for i in idx]
    np.testing.assert_array_equal(cropped.images[order], train_split.images[idx, 32:96, 32:96])


def test_crop_versus_resize(tmp_path: Path, amibr_root: Path) -> None:
    root = make_folder(tmp_path, amibr_root, {"Atypical": ("Atypical", 2), "Normal": ("Normal", 2)})
    crop = load_folder(root, resize="crop")
    resized = load_folder(root, resize="resize")
    native = load_folder(root, size=None)
    assert crop.images.shape == resized.images.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(crop.images, native.images[:, 32:96, 32:96])
    # Resizing keeps the whole field of view: its mean colour stays near the full image's.
    assert not np.array_equal(crop.images, resized.images)
    full_mean = native.images.reshape(4, -1, 3).mean(1)
    np.testing.assert_allclose(resized.images.reshape(4, -1, 3).mean(1), full_mean, atol=3)
    with pytest.raises(DataError, match="unknown resize mode"):
        load_folder(root, resize="stretch")  # type: ignore[arg-type]


def test_deep_histopath_layout_with_split(tmp_path: Path, amibr_root: Path) -> None:
    layout = {
        "train/mitosis": ("Atypical", 3),
        "train/normal": ("Normal", 2),
        "val/mitosis": ("Atypical", 1),
        "val/normal": ("Normal", 2),
    }
    root = make_folder(tmp_path, amibr_root, layout)
    train = load_folder(root, split="train")
    val = load_folder(root, split="val")
    assert train.classes == ("mitosis", "normal") and train.positive == "mitosis"
    assert (len(train), int(train.y.sum())) == (5, 3)
    assert (len(val), int(val.y.sum())) == (3, 1)
    with pytest.raises(DataError, match="split folder .*test does not exist"):
        load_folder(root, split="test")
    with pytest.raises(DataError, match=r"holds split folders \['train', 'val'\]") as info:
        load_folder(root)  # the split folders are not labels
    assert info.value.settings == ("split",)


def bad_png(kind: str, source: Path, dest: Path) -> None:
    """Write a broken or unsupported variant of the real PNG ``source`` to ``dest``."""
    img = Image.open(source)
    if kind == "corrupt":
        dest.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif kind == "truncated":
        data = source.read_bytes()
        dest.write_bytes(data[: len(data) // 2])
    elif kind == "rgba":
        img.convert("RGBA").save(dest)
    elif kind == "grey":
        img.convert("L").save(dest)
    elif kind == "16bit":
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(dest)
    elif kind == "small":
        img.resize((32, 32)).save(dest)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt", "not a readable PNG"),
        ("truncated", "not a readable PNG"),
        ("rgba", "not 8-bit RGB"),
        ("grey", "not 8-bit RGB"),
        ("16bit", "not 8-bit RGB"),
        ("small", "smaller than 64x64"),
    ],
)
def test_bad_image_names_the_file(tmp_path: Path, amibr_root: Path, kind: str, message: str) -> None:
    root = make_folder(tmp_path, amibr_root, {"Atypical": ("Atypical", 1), "Normal": ("Normal", 1)})
    bad = root / "Normal" / "zz_bad.png"
    bad_png(kind, real_pngs(amibr_root, "Normal", 1)[0], bad)
    with pytest.raises(DataError, match=message) as info:
        load_folder(root)
    assert str(bad) in str(info.value)
    if kind != "small":
        with pytest.raises(DataError, match="zz_bad.png"):
            read_png(bad)


def test_mixed_native_sizes_need_a_size(tmp_path: Path, amibr_root: Path) -> None:
    root = make_folder(tmp_path, amibr_root, {"Atypical": ("Atypical", 1), "Normal": ("Normal", 1)})
    Image.open(real_pngs(amibr_root, "Normal", 2)[1]).resize((100, 100)).save(root / "Normal" / "b.png")
    with pytest.raises(DataError, match="differ in size"):
        load_folder(root, size=None)
    assert load_folder(root).images.shape == (3, 64, 64, 3)


def test_folder_errors(tmp_path: Path, amibr_root: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no label folders found"):
        load_folder(empty)
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    # Unknown layout: PNGs directly in the root, no label folders.
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(real_pngs(amibr_root, "Normal", 1)[0], flat / "a.png")
    with pytest.raises(DataError, match="no label folders found"):
        load_folder(flat)
    # A label folder without images.
    root = make_folder(tmp_path / "set", amibr_root, {"Atypical": ("Atypical", 1), "Normal": ("Normal", 1)})
    (root / "Other").mkdir()
    with pytest.raises(DataError, match="Other: label folder holds no PNG"):
        load_folder(root, positive="Atypical")
    # Unknown label folder when the classes are fixed (as for AMi-Br).
    shutil.copy(real_pngs(amibr_root, "Normal", 1)[0], root / "Other" / "x.png")
    with pytest.raises(DataError, match=r"unknown: \['Other'\]"):
        load_folder(root, classes=("Atypical", "Normal"))
    with pytest.raises(DataError, match="positive label 'Mitosis' is not among"):
        load_folder(root, positive="Mitosis")


def test_derived_amibr_folder_and_bad_split(tmp_path: Path, amibr_root: Path) -> None:
    root = make_folder(tmp_path, amibr_root, {"Atypical": ("Atypical", 3), "Normal": ("Normal", 3)})
    names = sorted(p.stem for p in root.rglob("*.png"))
    with (root / "amibr_train_split.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "dataset_uid"])
        writer.writerows([["s1", names[0] + ".png"], ["s2", names[1] + ".png"]])
    train = load_amibr(root, "train")  # its own CSV: not the benchmark, so not verified
    test = load_amibr(root, "test")
    assert sorted(train.names) == names[:2] and len(test) == 4
    assert sorted(train.groups) == ["s1", "s2"]
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_amibr(root, "val")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="does not match the AMi-Br manifest"):
        load_amibr(root, "test", verify=True)


def _png_16bit_rgb(width: int = 64, height: int = 64) -> bytes:
    """Return a valid 16-bit-per-channel RGB PNG (PIL cannot write one; PIL reads it as 8-bit)."""
    import struct
    import zlib

    row = b"\x00" + np.full(width * 3, 40000, ">u2").tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def test_16bit_rgb_png_is_refused_not_silently_reduced(tmp_path: Path) -> None:
    from PIL import Image

    data = _png_16bit_rgb()
    assert Image.open(io.BytesIO(data)).mode == "RGB"  # what PIL would hand over silently
    path = tmp_path / "deep.png"
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"deep\.png: PNG has 16-bit channels"):
        read_png(path)
