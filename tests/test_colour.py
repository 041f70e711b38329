import io
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from rgbatch import colour
from rgbatch.imageio import decode_image_and_metadata

SRGB = ImageCms.createProfile("sRGB")
DISPLAY_P3 = ((0.68, 0.32), (0.265, 0.69), (0.15, 0.06), (0.3127, 0.3290))


def nclx(xy, primaries=12, transfer=13) -> dict:
    """pillow-heif's `nclx_profile` of chromaticities `xy` (red, green, blue, white)."""
    said = {"color_primaries": primaries, "transfer_characteristics": transfer, "matrix_coefficients": 6,
            "full_range_flag": 1}
    for name, (x, y) in zip(("red", "green", "blue", "white"), xy):
        said[f"color_primary_{name}_x"], said[f"color_primary_{name}_y"] = x, y
    return said


def managed(pixels: np.ndarray, icc: bytes) -> np.ndarray:
    """The sRGB values a colour-managed viewer shows for `pixels` described by `icc` (LittleCMS)."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return np.asarray(ImageCms.profileToProfile(Image.fromarray(pixels), profile, SRGB, outputMode="RGB"))


def test_an_nclx_description_becomes_the_icc_profile_it_stands_for():
    """Display P3's colorants, adapted to D50, are those of Apple's own profile; LittleCMS reads the
    profile; sRGB's code points (or unspecified ones) and HDR transfers give none."""
    assert np.allclose(colour._colorants_d50(DISPLAY_P3).T, [[0.5151, 0.2412, -0.0011], [0.2920, 0.6922, 0.0419],
                                                             [0.1571, 0.0666, 0.7841]], atol=2e-4)
    icc = colour.nclx_icc(nclx(DISPLAY_P3))
    assert icc[8] == 2 and b"para" not in icc  # ICC v2, and none of v4's tag types (`para` until session 62's review)
    assert icc[16:20] == b"RGB " and "primaries 12" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(
        io.BytesIO(icc)))
    grey = np.full((2, 2, 3), 128, np.uint8)  # the same white and curve as sRGB's: a grey stays grey
    assert np.abs(managed(grey, icc).astype(int) - 128).max() <= 1
    to_p3 = ImageCms.buildTransform(SRGB, ImageCms.ImageCmsProfile(io.BytesIO(icc)), "RGB", "RGB")
    picture = np.random.default_rng(0).integers(30, 220, (16, 16, 3), dtype=np.uint8)
    in_p3 = np.asarray(ImageCms.applyTransform(Image.fromarray(picture), to_p3))
    assert np.abs(managed(in_p3, icc).astype(int) - picture).max() <= 2  # there and back
    assert colour.nclx_icc(nclx(colour.SRGB_XY, primaries=1, transfer=1)) is None  # sRGB as it is read
    assert colour.nclx_icc(nclx(DISPLAY_P3, primaries=2, transfer=2)) is None  # unspecified: sRGB too
    assert colour.nclx_icc(nclx(DISPLAY_P3, transfer=16)) is None  # PQ: no ICC curve holds it
    assert colour.nclx_icc({"color_primaries": 12}) == icc  # code points alone (an AVIF's): H.273's chromaticities
    assert colour.nclx_icc({"color_primaries": 3}) is None  # a reserved code point, no chromaticities: nothing to say


def test_a_heic_described_by_nclx_alone_keeps_its_colours():
    """A Display P3 HEIC without an ICC profile was read as sRGB, its colours desaturated and nothing
    said (until session 62): it now carries a profile made from its nclx description."""
    y, x = np.mgrid[0:48, 0:64]
    picture = np.stack([200 + x // 2, 40 + y, 30 + x], -1).astype(np.uint8)  # saturated oranges
    to_p3 = ImageCms.buildTransform(SRGB, ImageCms.ImageCmsProfile(io.BytesIO(colour.nclx_icc(nclx(DISPLAY_P3)))),
                                    "RGB", "RGB")
    buffer = io.BytesIO()
    ImageCms.applyTransform(Image.fromarray(picture), to_p3).save(
        buffer, "HEIF", quality=95, color_primaries=12, transfer_characteristics=13, matrix_coefficients=6,
        full_range_flag=1)
    decoded = decode_image_and_metadata(buffer.getvalue())
    assert decoded.metadata.icc_profile is not None
    assert np.abs(decoded.pixels.astype(int) - picture).mean() > 10  # the values are P3's...
    assert np.abs(managed(decoded.pixels, decoded.metadata.icc_profile).astype(int) - picture).mean() < 4  # shown so


def test_an_avif_described_by_nclx_alone_keeps_its_colours():
    """Pillow's AVIF reader gives no nclx description: a Display P3 AVIF without an ICC profile was
    read as sRGB (until session 63). Its `colr` box is read (`imageio.avif_nclx`); an ICC profile wins."""
    picture = np.stack(np.broadcast_arrays(220, np.arange(40, 104)[:, None], np.arange(30, 94)), -1).astype(np.uint8)
    in_p3 = ImageCms.applyTransform(Image.fromarray(picture), ImageCms.buildTransform(
        SRGB, ImageCms.ImageCmsProfile(io.BytesIO(colour.nclx_icc(nclx(DISPLAY_P3)))), "RGB", "RGB"))
    in_p3.info.pop("icc_profile")  # LittleCMS's output profile: the file is to say it by code points alone
    buffer = io.BytesIO()
    in_p3.save(buffer, "AVIF", quality=95)
    data = bytearray(buffer.getvalue())
    at = data.index(b"colrnclx") + 8
    assert data[at:at + 4] == bytes([0, 1, 0, 13])  # libavif's: sRGB's primaries and transfer
    data[at:at + 2] = (12).to_bytes(2, "big")  # Display P3's, as a P3 encoder writes them
    decoded = decode_image_and_metadata(bytes(data))
    assert decoded.metadata.icc_profile == colour.nclx_icc(nclx(DISPLAY_P3))
    assert np.abs(managed(decoded.pixels, decoded.metadata.icc_profile).astype(int) - picture).mean() < 4
    buffer = io.BytesIO()
    in_p3.save(buffer, "AVIF", quality=95, icc_profile=ImageCms.ImageCmsProfile(SRGB).tobytes())
    data = bytearray(buffer.getvalue())
    if b"colrnclx" in data:
        at = data.index(b"colrnclx") + 8
        data[at:at + 2] = (12).to_bytes(2, "big")
    assert decode_image_and_metadata(bytes(data)).metadata.icc_profile == ImageCms.ImageCmsProfile(SRGB).tobytes()


def cmyk_profile() -> bytes:
    """A small CMYK printer profile: a 2-point LUT (`mft2`) from CMYK to Lab, its inverse crude."""
    def lab(light, a, b):
        return struct.pack(">HHH", round(light / 100 * 0xFF00), round((a + 128) * 256), round((b + 128) * 256))

    inks = {(0, 0, 0): (95, 0, -2), (1, 0, 0): (55, -37, -50), (0, 1, 0): (48, 74, -3), (0, 0, 1): (89, -5, 93),
            (1, 1, 0): (24, 22, -46), (1, 0, 1): (50, -65, 27), (0, 1, 1): (47, 68, 48), (1, 1, 1): (22, 0, 0)}
    grid = b""
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # the first ink varies slowest
        light, a, b = inks[c, m, y]
        grid += lab(light * 0.2, a * 0.3, b * 0.3) if k else lab(light, a, b)
    identity = b"".join(colour._s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ramps = struct.pack(">HH", 0, 65535)

    def lut(ins, outs, table):
        return b"mft2" + bytes(4) + bytes([ins, outs, 2, 0]) + identity + struct.pack(">HH", 2, 2) + ramps * ins + \
            table + ramps * outs

    back = b"".join(struct.pack(">HHHH", *[int((1 - light) * 32767)] * 4) for light, _, _ in
                    itertools.product((0, 1), repeat=3))
    return colour.icc_profile(b"prtr", b"CMYK", b"Lab ", "CMYK test", [(b"A2B0", lut(4, 3, grid)),
                                                                       (b"B2A0", lut(3, 4, back))])


def test_the_fixture_profile_is_this_builder_s():
    """tests/fixtures/icc/cmyk-lut.icc, the image fuzzer's CMYK profile, is what `cmyk_profile` writes."""
    assert (Path(__file__).parent / "fixtures" / "icc" / "cmyk-lut.icc").read_bytes() == cmyk_profile()


def test_a_cmyk_image_with_its_own_profile_is_converted_through_it():
    """Pillow's CMYK formula ignores the file's profile: its colours differed from what a
    colour-managed viewer shows, unsaid (until session 62)."""
    icc = cmyk_profile()
    rng = np.random.default_rng(1)
    cmyk = Image.fromarray(rng.integers(0, 160, (24, 32, 4), dtype=np.uint8), "CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "TIFF", icc_profile=icc)
    decoded = decode_image_and_metadata(buffer.getvalue())
    shown = np.asarray(ImageCms.profileToProfile(cmyk, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
                                                 outputMode="RGB"))
    assert decoded.mode == "CMYK" and decoded.metadata.icc_profile is None  # the pixels kept are sRGB's
    assert np.array_equal(decoded.pixels, shown)
    assert np.abs(np.asarray(cmyk.convert("RGB")).astype(int) - shown).mean() > 5  # Pillow's formula: other colours
    broken = io.BytesIO()
    cmyk.save(broken, "TIFF", icc_profile=icc[:200])  # a profile LittleCMS refuses: Pillow's formula, as before
    assert np.array_equal(decode_image_and_metadata(broken.getvalue()).pixels, np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("transfer, grey", [(1, 128), (13, 128), (4, 128), (8, 188)])
def test_each_transfer_is_the_curve_it_names(transfer, grey):
    """Grey 128 of each transfer as sRGB shows it: BT.709's and sRGB's (the same, for stills), a 2.2
    power (about sRGB's), linear light (half the light: 188 in sRGB)."""
    icc = colour.nclx_icc(nclx(DISPLAY_P3, transfer=transfer))
    shown = managed(np.full((1, 1, 3), 128, np.uint8), icc)
    assert np.abs(shown.astype(int) - grey).max() <= 1, shown


def test_odd_nclx_descriptions_give_no_profile_rather_than_an_error():
    line = ((0.3, 0.3), (0.3, 0.3), (0.15, 0.06), (0.3127, 0.3290))  # two primaries the same: no matrix
    for said in ({**nclx(DISPLAY_P3), "color_primaries": None}, {**nclx(DISPLAY_P3), "color_primaries": "x"},
                 nclx(line), {**nclx(DISPLAY_P3), "color_primary_white_y": 0.0}):
        assert colour.nclx_icc(said) is None


def test_a_cmyk_image_s_rgb_profile_is_not_kept():
    """An RGB profile on CMYK values describes none of the pixels kept (Pillow's conversion): it was
    kept, and written back beside them, until session 62."""
    buffer = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(SRGB).tobytes()
    Image.new("CMYK", (16, 8), (10, 200, 30, 0)).save(buffer, "TIFF", icc_profile=srgb)
    decoded = decode_image_and_metadata(buffer.getvalue())
    assert decoded.mode == "CMYK" and decoded.metadata.icc_profile is None


def test_a_grey_heif_described_by_nclx_gets_no_rgb_profile():
    """An RGB profile on grey pixels is one the PNG format forbids (and LittleCMS refuses): a grey HEIF
    got one from its nclx box (session 62's review), and `encode_png` wrote a grey source's RGB profile."""
    from rgbatch.imageio import Metadata, encode_png

    buffer = io.BytesIO()
    Image.new("L", (32, 16), 90).save(buffer, "HEIF", quality=95, color_primaries=12, transfer_characteristics=8,
                                      matrix_coefficients=6, full_range_flag=1)
    decoded = decode_image_and_metadata(buffer.getvalue())
    assert decoded.mode == "L" and decoded.metadata.icc_profile is None
    rgb_profile = colour.nclx_icc(nclx(DISPLAY_P3))
    grey = Image.open(io.BytesIO(encode_png(np.full((4, 4, 3), 90, np.uint8), Metadata(rgb_profile), grey=True)))
    coloured = Image.open(io.BytesIO(encode_png(np.full((4, 4, 3), 90, np.uint8), Metadata(rgb_profile))))
    assert (grey.mode, "icc_profile" in grey.info) == ("L", False)
    assert coloured.info["icc_profile"] == rgb_profile
