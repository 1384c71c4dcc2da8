"""The service's uploads on real AMi-Br patches: PNG, JPEG and TIFF (8-bit RGB) scored as the same
image in process, fitted to the model's input size as the CLI fits data (centre crop of larger
images, smaller ones refused naming both sizes and --resize, resizing when the service resizes),
and every other kind of image refused with the conversion to make."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from onepixel.data import fit_images, read_image
from onepixel.serve import create_app
from onepixel.targets import TorchTarget
from onepixel.targets.http import image_id
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint
from test_any_model_data import tiff_rgb16


def encode(image: np.ndarray | Image.Image, fmt: str, **options: object) -> bytes:
    """Return ``image`` encoded as ``fmt`` by PIL."""
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    pil.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def natives(amibr_root: Path) -> np.ndarray:
    """Return six real AMi-Br patches at their native 128 px (three of each class)."""
    files = [p for label in ("Atypical", "Normal") for p in sorted((amibr_root / label).glob("*.png"))[:3]]
    images = np.stack([read_image(p) for p in files])
    assert images.shape == (6, 128, 128, 3)
    return images


@pytest.fixture(scope="module")
def client(target: TorchTarget) -> TestClient:
    """Return a TestClient of the service of the bundled 64-px model (centre crop)."""
    return TestClient(create_app(target, max_batch=16))


def score(response) -> list[float]:  # noqa: ANN001 - an httpx response
    """Return the probabilities of a 200 answer."""
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


def predict(client: TestClient, data: bytes, name: str) -> float:
    """Return the probability /model/predict answers for one uploaded file."""
    return score(client.post("/model/predict", files={"image": (name, data)}))[0]


def test_jpeg_and_tiff_score_as_the_same_decoded_image_in_process(
    client: TestClient, target: TorchTarget, natives: np.ndarray
) -> None:
    cropped = fit_images(natives, 64)[0]
    for image, small in zip(natives[:3], cropped[:3], strict=True):
        # TIFF is lossless: the very pixels of the PNG, plain and LZW-compressed.
        for options in ({}, {"compression": "tiff_lzw"}):
            tiff = encode(small, "TIFF", **options)
            assert predict(client, tiff, "x.tif") == pytest.approx(
                target.predict(small[None])[0], abs=TOLERANCE
            )
        # JPEG is lossy: the server must score the decoded JPEG, as scoring it here does.
        jpeg = encode(small, "JPEG", quality=90)
        decoded = read_image(jpeg)
        assert not np.array_equal(decoded, small)
        assert predict(client, jpeg, "x.jpg") == pytest.approx(
            target.predict(decoded[None])[0], abs=TOLERANCE
        )
        # A 128-px JPEG is decoded, then centre-cropped like the CLI's data.
        big = encode(image, "JPEG", quality=90)
        expected = target.predict(fit_images(read_image(big)[None], 64)[0])[0]
        assert predict(client, big, "big.jpg") == pytest.approx(expected, abs=TOLERANCE)


def test_larger_images_are_centre_cropped_like_the_cli_on_every_route(
    client: TestClient, target: TorchTarget, natives: np.ndarray
) -> None:
    cropped, fit = fit_images(natives, 64)  # what `onepixel attack --data` does to these patches
    assert fit.how == "crop"
    expected = target.predict(cropped)
    got = [predict(client, encode(image, "PNG"), "big.png") for image in natives]
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    # A batch of mixed formats and sizes: 128-px PNG, 64-px TIFF, 128x96 PNG (cropped too).
    wide = natives[2][16:112]
    files = [
        ("images", ("a.png", encode(natives[0], "PNG"))),
        ("images", ("b.tif", encode(cropped[1], "TIFF"))),
        ("images", ("c.png", encode(wide, "PNG"))),
    ]
    batch = score(client.post("/model/predict_batch", files=files))
    want = [expected[0], expected[1], target.predict(fit_images(wide[None], 64)[0])[0]]
    np.testing.assert_allclose(batch, want, atol=TOLERANCE, rtol=0)
    # The pixel route scores changes in the cropped frame, and names the image by the crop's id.
    changes = np.array([[[10, 20, 255, 255, 0]], [[63, 0, 0, 0, 0]]])
    body = {
        "images": [{"png": base64.b64encode(encode(natives[3], "PNG")).decode()}],
        "queries": changes.tolist(),
    }
    response = client.post("/model/predict_pixels", json=body)
    assert response.json()["images"] == [image_id(cropped[3])]
    want = target.predict(paint(cropped[3:4], np.zeros(2, int), changes))
    np.testing.assert_allclose(score(response), want, atol=TOLERANCE, rtol=0)


def test_smaller_images_are_refused_naming_both_sizes_and_resize(
    client: TestClient, natives: np.ndarray
) -> None:
    cases = {
        "small.jpg": (encode(natives[0][:48, :48], "JPEG"), "an image of size (64, 64). Got JPEG (48, 48)."),
        "thin.png": (encode(natives[0][:40], "PNG"), "a PNG image of size (64, 64). Got PNG (128, 40)."),
        "small.tif": (encode(natives[0][:32, :50], "TIFF"), "Got TIFF (50, 32)."),
    }
    for name, (data, words) in cases.items():
        response = client.post("/model/predict", files={"image": (name, data)})
        assert response.status_code == 400, name
        message = response.json()["message"]
        assert words in message and "smaller than the model's 64x64 input" in message, message
        assert "--resize" in message
    files = [
        ("images", ("ok.png", encode(natives[0], "PNG"))),
        ("images", ("small.jpg", cases["small.jpg"][0])),
    ]
    response = client.post("/model/predict_batch", files=files)
    assert response.status_code == 400 and response.json()["index"] == 1
    assert response.json()["message"].startswith("images[1] (small.jpg): The input file must be an image")


def test_a_resizing_service_resizes_like_the_cli(target: TorchTarget, natives: np.ndarray) -> None:
    client = TestClient(create_app(target, resize=True))
    meta = client.get("/model/metadata").json()
    assert (meta["fit"], meta["input_size"], meta["formats"]) == ("resize", 64, ["PNG", "JPEG", "TIFF"])
    for image in (natives[0], natives[1][:48, :40]):  # larger and smaller: both resized
        expected = target.predict(fit_images(image[None], 64, resize=True)[0])[0]
        assert predict(client, encode(image, "PNG"), "x.png") == pytest.approx(expected, abs=TOLERANCE)
    assert TestClient(create_app(target)).get("/model/metadata").json()["fit"] == "crop"


def test_images_that_are_not_8_bit_rgb_are_refused_with_the_conversion(
    client: TestClient, natives: np.ndarray
) -> None:
    rgb = Image.fromarray(natives[0][:64, :64])
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    pages = io.BytesIO()
    rgb.save(pages, format="TIFF", save_all=True, append_images=[rgb])
    convert = "convert it to 8-bit RGB first"
    reduce = "reduce it to 8 bits per channel first"
    cases = {
        "rgb16.tif": (tiff_rgb16(64, 64), "TIFF has 16-bit channels, not 8-bit RGB", reduce),
        "grey16.png": (encode(grey16, "PNG"), "PNG has 16-bit channels, not 8-bit RGB", reduce),
        "grey16.tif": (encode(grey16, "TIFF"), "TIFF has 16-bit channels", reduce),
        "grey.jpg": (encode(rgb.convert("L"), "JPEG"), "JPEG is greyscale (mode 'L')", convert),
        "cmyk.jpg": (encode(rgb.convert("CMYK"), "JPEG"), "JPEG is CMYK (mode 'CMYK')", convert),
        "rgba.tif": (encode(rgb.convert("RGBA"), "TIFF"), "TIFF is RGB with alpha (mode 'RGBA')", convert),
        "palette.png": (encode(rgb.convert("P"), "PNG"), "PNG is palette (mode 'P')", convert),
        "pages.tif": (pages.getvalue(), "TIFF holds 2 pages", "8-bit RGB file"),
        "x.gif": (encode(rgb, "GIF"), "not a PNG/JPEG/TIFF image (found GIF)", "Send PNG, JPEG or TIFF"),
    }
    for name, (data, what, fix) in cases.items():
        response = client.post("/model/predict", files={"image": (name, data)})
        assert response.status_code == 400, (name, response.text)
        message = response.json()["message"]
        assert message.startswith(name) and what in message and fix in message, message
