"""The host image operations with both decoders and both resize filters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vdt_jax.data import image_ops

cv2 = pytest.importorskip("cv2")


def smooth_image(height: int = 60, width: int = 80) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    channels = [(cols * 3) % 256, 128 + 100 * np.sin(rows / 7.0), (rows * 2 + cols) % 256]
    return np.stack(channels, -1).astype(np.uint8)


def encode(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("decoder", image_ops.DECODERS)
def test_decoders_give_rgb_for_every_mode(decoder):
    rgb = Image.fromarray(smooth_image())
    original = np.asarray(rgb).astype(int)
    out = image_ops.decode_image(encode(rgb), decoder)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert np.abs(out - original).mean() < 3  # JPEG loss only, channels in RGB order

    gray = image_ops.decode_image(encode(rgb.convert("L")), decoder)
    assert gray.shape == (60, 80, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()

    cmyk_jpeg = encode(rgb.convert("CMYK"))
    assert Image.open(io.BytesIO(cmyk_jpeg)).mode == "CMYK"
    cmyk = image_ops.decode_image(cmyk_jpeg, decoder)
    assert cmyk.shape == (60, 80, 3) and np.abs(cmyk - original).mean() < 4  # an inverted channel would be ~128 off

    png_named_jpeg = encode(rgb.convert("RGBA"), "PNG")  # ImageNet has one PNG stored as .JPEG
    np.testing.assert_array_equal(image_ops.decode_image(png_named_jpeg, decoder), original)
    palette = encode(rgb.convert("P"), "PNG")
    np.testing.assert_array_equal(image_ops.decode_image(palette, decoder), np.asarray(rgb.convert("P").convert("RGB")))


def test_decoders_agree_up_to_rounding():
    for mode in ("RGB", "L", "CMYK"):
        data = encode(Image.fromarray(smooth_image()).convert(mode))
        pil = image_ops.decode_image(data, "pil").astype(int)
        opencv = image_ops.decode_image(data, "opencv").astype(int)
        assert np.abs(pil - opencv).max() <= 1, mode


def test_opencv_decoder_ignores_exif_orientation_like_pil():
    image = Image.fromarray(smooth_image())
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, exif=exif.tobytes())
    assert image_ops.decode_image(buffer.getvalue(), "opencv").shape == (60, 80, 3)


def test_bilinear_is_opencv_without_antialiasing():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, ::2] = 255  # one-pixel stripes: antialiasing averages them, point sampling does not
    sampled = image_ops.resize(image, 8, 8, "bilinear")  # samples land on whole pixels 2, 7, 12, ...
    averaged = image_ops.resize(image, 8, 8, "bilinear_antialias")
    np.testing.assert_array_equal(sampled, cv2.resize(image, (8, 8), interpolation=cv2.INTER_LINEAR))
    assert np.abs(averaged.astype(int) - 128).max() < 20  # the filter averages the stripes
    assert set(np.unique(sampled)) == {0, 255}


@pytest.mark.parametrize("interpolation", image_ops.INTERPOLATIONS)
def test_resized_crop_reads_only_the_box(interpolation):
    image = np.zeros((60, 80, 3), np.uint8)
    image[10:30, 20:60] = (200, 100, 50)
    out = image_ops.resized_crop(image, (10, 20, 20, 40), 16, interpolation)
    assert out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.broadcast_to(np.uint8([200, 100, 50]), (12, 12, 3)))
    wide = image_ops.resize_shorter_side(image, 30, interpolation)
    assert wide.shape == (30, 40, 3)


def test_unknown_or_unavailable_choice_names_the_config_key(monkeypatch):
    with pytest.raises(ValueError, match="data.decoder='jpeg'"):
        image_ops.check_choices("jpeg", "bilinear")
    with pytest.raises(ValueError, match="data.interpolation='cubic'"):
        image_ops.check_choices("pil", "cubic")
    monkeypatch.setattr(image_ops, "cv2", None)
    with pytest.raises(ValueError, match="pip install opencv-python-headless"):
        image_ops.check_choices("opencv", "bilinear_antialias")
    image_ops.check_choices("pil", "bilinear_antialias")
