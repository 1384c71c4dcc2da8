"""Data for any model: PNG/JPEG/TIFF folders, any number of classes, label maps, split layouts,
fitting to a target's input size, and open_patches, on real AMi-Br images."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onepixel.cli.common import error_text
from onepixel.data import DataError, LabelMap, fit_images, load_folder, open_patches, read_image
from onepixel.data.fit import fit_image_list


def real_pngs(root: Path, label: str, n: int, skip: int = 0) -> list[Path]:
    """Return ``n`` real PNGs of an AMi-Br label folder, after the first ``skip``."""
    return sorted((root / label).glob("*.png"))[skip : skip + n]


def copy_as(source: Path, dest: Path, fmt: str) -> np.ndarray:
    """Write the real PNG ``source`` to ``dest`` in ``fmt`` (PNG, JPEG, TIFF); return its RGB pixels."""
    with Image.open(source) as img:
        rgb = img.convert("RGB")
        rgb.save(dest, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return np.asarray(rgb)


def tiff_rgb16(width: int = 16, height: int = 16) -> bytes:
    """Return an uncompressed 16-bit-per-channel RGB TIFF (PIL cannot write one)."""
    pixels = np.full((height, width, 3), 40000, "<u2").tobytes()
    entries = [
        (256, 3, 1, width),
        (257, 3, 1, height),
        (258, 3, 3, 0),  # BitsPerSample: offset patched below
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, 0),  # StripOffsets: patched below
        (277, 3, 1, 3),
        (278, 3, 1, height),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_at = 8 + ifd_size
    data_at = bits_at + 6
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 273: data_at}.get(tag, value)
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + pixels


def test_png_jpeg_and_tiff_are_read_and_a_mixed_folder_counts_every_image(
    tmp_path: Path, amibr_root: Path
) -> None:
    sources = real_pngs(amibr_root, "Atypical", 4) + real_pngs(amibr_root, "Normal", 3)
    formats = ["PNG", "JPEG", "TIFF", "JPEG", "PNG", "TIFF", "JPEG"]
    suffix = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}
    expected = {}
    for i, (src, fmt) in enumerate(zip(sources, formats, strict=True)):
        label = "Atypical" if i < 4 else "Normal"
        (tmp_path / label).mkdir(exist_ok=True)
        dest = tmp_path / label / (src.stem + suffix[fmt])
        expected[src.stem] = (fmt, copy_as(src, dest, fmt), np.asarray(Image.open(dest).convert("RGB")))
    (tmp_path / "Normal" / "notes.txt").write_text("not an image")
    data = load_folder(tmp_path, size=None)
    assert len(data) == 7 and data.classes == ("Atypical", "Normal")
    assert np.bincount(data.labels).tolist() == [4, 3]
    for name, image in zip(data.names, data.images, strict=True):
        fmt, original, decoded = expected[name]
        np.testing.assert_array_equal(image, decoded)
        if fmt != "JPEG":  # lossless formats give back the PNG's pixels exactly
            np.testing.assert_array_equal(image, original)
        else:
            assert 0 < np.abs(image.astype(int) - original).mean() < 4
    assert {Path(p).suffix for p in data.paths} == {".png", ".jpg", ".tif"}


@pytest.mark.parametrize(
    ("kind", "suffix", "message"),
    [
        ("grey", ".jpg", r"JPEG is greyscale \(mode 'L'\), not 8-bit RGB; convert it to 8-bit RGB first"),
        ("cmyk", ".jpg", r"JPEG is CMYK \(mode 'CMYK'\), not 8-bit RGB; convert it"),
        ("rgba", ".tif", r"TIFF is RGB with alpha \(mode 'RGBA'\), not 8-bit RGB; convert it"),
        ("grey16", ".tif", r"TIFF has 16-bit channels, not 8-bit RGB; reduce it to 8 bits per channel"),
        ("rgb16", ".tif", r"TIFF has 16-bit channels, not 8-bit RGB; reduce it to 8 bits per channel"),
        ("palette", ".png", r"PNG is palette \(mode 'P'\), not 8-bit RGB; convert it"),
        ("corrupt", ".jpg", r"not a readable JPEG"),
    ],
)
def test_unsupported_images_are_refused_with_the_conversion_to_make(
    tmp_path: Path, amibr_root: Path, kind: str, suffix: str, message: str
) -> None:
    img = Image.open(real_pngs(amibr_root, "Normal", 1)[0])
    path = tmp_path / f"bad{suffix}"
    if kind == "grey":
        img.convert("L").save(path)
    elif kind == "cmyk":
        img.convert("CMYK").save(path)
    elif kind == "rgba":
        img.convert("RGBA").save(path)
    elif kind == "grey16":
        Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(path)
    elif kind == "rgb16":
        path.write_bytes(tiff_rgb16())
    elif kind == "palette":
        img.convert("P").save(path)
    else:
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3)
    with pytest.raises(DataError, match=message) as info:
        read_image(path)
    assert str(info.value).startswith(str(path))


def test_unreadable_files_stop_the_load_by_name_or_are_listed_and_skipped(
    tmp_path: Path, amibr_root: Path
) -> None:
    for label in ("Atypical", "Normal"):
        (tmp_path / label).mkdir()
        for src in real_pngs(amibr_root, label, 2):
            shutil.copy(src, tmp_path / label / src.name)
    bad_jpeg = tmp_path / "Normal" / "broken.jpg"
    bad_jpeg.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    grey = tmp_path / "Atypical" / "grey.tiff"
    Image.open(real_pngs(amibr_root, "Atypical", 1)[0]).convert("L").save(grey)
    with pytest.raises(DataError) as info:
        load_folder(tmp_path)
    assert str(info.value).startswith(str(grey))  # the first bad file, in folder order
    data = load_folder(tmp_path, skip_bad=True)
    assert len(data) == 4 and "broken" not in data.names and "grey" not in data.names
    assert [s.path for s in data.skipped] == [str(grey), str(bad_jpeg)]
    assert "greyscale" in data.skipped[0].reason and "not a readable JPEG" in data.skipped[1].reason


def three_classes(tmp: Path, amibr_root: Path, names: tuple[str, str, str]) -> Path:
    """Write a three-class set of real images: 3, 2 and 2 images (the third from Normal's tail)."""
    picks = [
        real_pngs(amibr_root, "Atypical", 3),
        real_pngs(amibr_root, "Normal", 2),
        real_pngs(amibr_root, "Normal", 2, skip=50),
    ]
    for name, files in zip(names, picks, strict=True):
        (tmp / name).mkdir(parents=True)
        for f in files:
            shutil.copy(f, tmp / name / f.name)
    return tmp


def test_any_number_of_classes_with_a_positive_class_and_a_label_map(
    tmp_path: Path, amibr_root: Path
) -> None:
    root = three_classes(tmp_path / "a", amibr_root, ("atypical", "normal", "other"))
    data = load_folder(root)
    assert data.classes == ("atypical", "normal", "other") and data.positive == "atypical"
    assert np.bincount(data.labels).tolist() == [3, 2, 2] and data.y.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert load_folder(root, positive="other").positive == "other"
    with pytest.raises(DataError, match="set is not binary"):
        _ = data.negative
    # Folder names the loader cannot read as a finding: the error names the flag that fixes it.
    plain = three_classes(tmp_path / "b", amibr_root, ("class_a", "class_b", "class_c"))
    with pytest.raises(DataError, match="cannot tell which of") as info:
        load_folder(plain)
    assert error_text(info.value).endswith("[--positive]")
    # The map renames folders to the model's labels; two folders may pool into one label.
    mapped = load_folder(plain, label_map=LabelMap.parse("class_a=Atypical, class_b=Normal, class_c=Normal"))
    assert mapped.classes == ("Atypical", "Normal") and mapped.positive == "Atypical"
    assert np.bincount(mapped.labels).tolist() == [3, 4]
    by_folder = load_folder(
        plain, positive="class_c", label_map=LabelMap.parse("class_a=a,class_b=b,class_c=c")
    )
    assert by_folder.positive == "c"
    # The model's output order decides the label indices.
    ordered = mapped.in_class_order(("Normal", "Atypical"))
    assert ordered.classes == ("Normal", "Atypical") and np.bincount(ordered.labels).tolist() == [4, 3]
    with pytest.raises(DataError, match=r"classes \['Atypical'\] are not among the model's labels") as info:
        mapped.in_class_order(("Normal", "Mitosis"))
    assert error_text(info.value).endswith("[--label-map]")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("class_a", "'class_a' is not folder=label"),
        ("class_a=", "is not folder=label"),
        ("class_a=x,class_a=y", r"names folder\(s\) \['class_a'\] more than once"),
    ],
)
def test_bad_label_maps_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        LabelMap.parse(text)
    assert error_text(info.value).endswith("[--label-map]")


def test_label_map_must_fit_the_folders(tmp_path: Path, amibr_root: Path) -> None:
    root = three_classes(tmp_path, amibr_root, ("class_a", "class_b", "class_c"))
    parsed = LabelMap.parse("class_a=x, class_b=y, class_z=z")
    assert dict(parsed) == {"class_a": "x", "class_b": "y", "class_z": "z"}
    assert LabelMap.parse(parsed.text()) == parsed
    with pytest.raises(DataError, match=r"folders \['class_c'\] have no label.*names \['class_z'\]") as info:
        load_folder(root, label_map=parsed, positive="x")
    assert error_text(info.value).endswith("[--label-map]")


def test_a_train_test_layout_asks_for_the_split_flag(tmp_path: Path, amibr_root: Path) -> None:
    for split in ("train", "test"):
        for label in ("tumor", "normal"):
            (tmp_path / split / label).mkdir(parents=True)
            shutil.copy(real_pngs(amibr_root, "Normal", 1)[0], tmp_path / split / label / "x.png")
    with pytest.raises(DataError, match=r"holds split folders \['test', 'train'\]") as info:
        load_folder(tmp_path)
    assert error_text(info.value).endswith("[--split]")
    opened = open_patches(tmp_path, "train", input_size=64)
    assert opened.layout == "folder" and opened.patches.classes == ("normal", "tumor")
    with pytest.raises(DataError, match="split folder .*val does not exist") as info:
        open_patches(tmp_path, "val", input_size=64)
    assert error_text(info.value).endswith("[--split]")


def test_fit_crops_larger_resizes_on_request_and_refuses_smaller(test_split_native: np.ndarray) -> None:
    images = test_split_native[:4]  # real 128-px patches
    same, fit = fit_images(images, 128)
    assert same is images and fit.how == "none" and fit.sources == ((128, 128),)
    for size in (64, 96):
        cropped, fit = fit_images(images, size)
        off = (128 - size) // 2
        np.testing.assert_array_equal(cropped, images[:, off : off + size, off : off + size])
        assert (fit.how, fit.input_size, fit.images) == ("crop", size, 4)
        assert fit.describe() == f"4 images of 128x128 px centre-cropped to the target's {size}x{size} input"
    resized, fit = fit_images(images, 224, resize=True)
    assert resized.shape == (4, 224, 224, 3) and fit.how == "resize"
    # Upscaling keeps the field of view: mean colours stay those of the whole patch.
    np.testing.assert_allclose(resized.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1.5)
    with pytest.raises(DataError, match=r"images are 128x128 px, smaller than 224x224") as info:
        fit_images(images, 224, name="my-folder")
    assert str(info.value).startswith("my-folder") and error_text(info.value).endswith("[--resize]")
    assert type(fit).from_dict(fit.to_dict()) == fit


def test_fit_of_a_folder_with_several_sizes(test_split_native: np.ndarray) -> None:
    small = test_split_native[0, :100, :96]
    batch, fit = fit_image_list([test_split_native[1], small, test_split_native[2]], 96)
    assert batch.shape == (3, 96, 96, 3) and fit.how == "crop" and fit.sources == ((100, 96), (128, 128))
    np.testing.assert_array_equal(batch[1], small[2:98])
    np.testing.assert_array_equal(batch[0], test_split_native[1, 16:112, 16:112])
    with pytest.raises(DataError, match=r"^b\.png: images are 96x100 px, smaller than 112x112"):
        fit_image_list([test_split_native[1], small], 112, names=["a.png", "b.png"])


def test_open_patches_reads_amibr_at_the_targets_size_and_records_it(
    amibr_root: Path, test_split_native: np.ndarray
) -> None:
    opened = open_patches(amibr_root, input_size=96)
    p = opened.patches
    assert opened.layout == "amibr" and opened.split == "test" and p.positive == "Atypical"
    assert p.images.shape[1:] == (96, 96, 3) and len(p) == len(test_split_native)
    np.testing.assert_array_equal(p.images, test_split_native[:, 16:112, 16:112])
    record = opened.record()
    assert record["fit"] == {"input_size": 96, "how": "crop", "sources": [[128, 128]], "images": len(p)}
    assert record["layout"] == "amibr" and record["classes"] == ["Atypical", "Normal"]
    assert "centre-cropped to the target's 96x96 input" in opened.describe()
    normal = open_patches(amibr_root, "test", input_size=64, positive="Normal")
    assert normal.patches.positive == "Normal" and normal.patches.y.sum() == (p.y == 0).sum()
    with pytest.raises(
        DataError, match=r"is AMi-Br: its splits are \['train', 'test', 'all'\], not 'val'"
    ) as info:
        open_patches(amibr_root, "val", input_size=64)
    assert error_text(info.value).endswith("[--split]")
    with pytest.raises(DataError) as info:
        open_patches(amibr_root, input_size=256)
    assert error_text(info.value).endswith("[--resize]") and "128x128 px, smaller than 256x256" in str(
        info.value
    )


def test_library_hints_name_commands_that_exist() -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    src = Path(__file__).resolve().parents[1] / "src" / "onepixel" / "data"
    commands = {m for f in src.glob("*.py") for m in re.findall(r"`onepixel ([a-z -]+?)`", f.read_text())}
    assert commands  # the data layer does point to commands
    for command in sorted(commands):
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, f"`onepixel {command}` is not a command: {result.output[-300:]}"


@pytest.fixture(scope="module")
def test_split_native(amibr_root: Path) -> np.ndarray:
    """Return the AMi-Br test split's images at their native 128 px."""
    from onepixel.data.amibr import load_amibr

    return load_amibr(amibr_root, "test", size=None).images


def test_survey_counts_every_format_and_size_and_lists_skipped_files(
    tmp_path: Path, amibr_root: Path
) -> None:
    from onepixel.data import survey_folder

    formats = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tiff"}
    for label, n in (("Atypical", 3), ("Normal", 4)):
        (tmp_path / label).mkdir()
        for i, src in enumerate(real_pngs(amibr_root, label, n)):
            fmt = list(formats)[i % 3]
            copy_as(src, tmp_path / label / (src.stem + formats[fmt]), fmt)
    with Image.open(real_pngs(amibr_root, "Normal", 5)[4]) as img:
        img.convert("RGB").resize((96, 80)).save(tmp_path / "Normal" / "small.jpeg")
    (tmp_path / "Normal" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"bad\.png: not a readable PNG"):
        survey_folder(tmp_path)
    survey = survey_folder(tmp_path, skip_bad=True)
    assert survey.classes == ("Atypical", "Normal") and survey.counts == (3, 5) and survey.images == 8
    assert survey.positive == "Atypical"
    assert survey.formats == {"JPEG": 3, "PNG": 3, "TIFF": 2}
    assert survey.sizes == {"128x128": 7, "96x80": 1}
    assert [Path(s.path).name for s in survey.skipped] == ["bad.png"]
    assert survey.to_dict()["counts"] == {"Atypical": 3, "Normal": 5}
