"""What a source's pixel values mean, where its file says so other than by an RGB ICC profile.

- An nclx colour description (ITU-T H.273 code points: a HEIF's `colr` box, which pillow-heif
  gives as `info["nclx_profile"]`, or an AVIF's, `imageio.avif_nclx`), of primaries or a transfer
  other than sRGB's: the values are kept as they are, and described by an ICC profile made from it
  (`nclx_icc`: a matrix/TRC RGB display profile, ICC v2), kept and written back as a source's own
  profile is. Read as sRGB, a
  Display P3 photo's colours came back desaturated, unsaid (until session 62; an AVIF's, 63).
- A CMYK image with its own ICC profile: converted to sRGB through that profile by LittleCMS
  (`cmyk_transform`), as a colour-managed viewer shows it, not by Pillow's formula (until session 62).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms

D50 = np.array([0.9642, 1.0, 0.8249])  # the ICC profile connection space's white
BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]])
SRGB_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06), (0.3127, 0.3290))  # BT.709's red, green, blue, white
# H.273 transfer characteristics as ICC curves: sRGB's (13), and BT.709's OETF (1, 6, 14, 15),
# which stills are shown by as sRGB (Apple's ColorSync does so); pure powers; linear. PQ (16), HLG
# (18) and the rest describe HDR or video signals no such curve holds: those values stay read as sRGB
SRGB_CURVE = "sRGB"  # sampled as ICC v2 writes it (`para`, a parametric curve, is v4's), `CURVE_POINTS` points
CURVE_POINTS = 1024
TRANSFERS = {1: SRGB_CURVE, 6: SRGB_CURVE, 13: SRGB_CURVE, 14: SRGB_CURVE, 15: SRGB_CURVE, 4: 2.2, 5: 2.8, 8: 1.0}
UNSPECIFIED = 2  # H.273's "unspecified", for primaries and transfer alike: sRGB's, as Pillow reads them
# H.273 colour primaries (red, green, blue, white), for a description of code points alone (an AVIF's)
D65, ILLUMINANT_C = (0.3127, 0.3290), (0.310, 0.316)
PRIMARIES = {1: SRGB_XY, UNSPECIFIED: SRGB_XY,
             4: ((0.67, 0.33), (0.21, 0.71), (0.14, 0.08), ILLUMINANT_C),  # BT.470 System M
             5: ((0.64, 0.33), (0.29, 0.60), (0.15, 0.06), D65),  # BT.601 625 lines
             6: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), D65),  # BT.601 525 lines
             7: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), D65),  # SMPTE 240M
             8: ((0.681, 0.319), (0.243, 0.692), (0.145, 0.049), ILLUMINANT_C),  # generic film
             9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), D65),  # BT.2020, BT.2100
             11: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351)),  # DCI-P3
             12: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), D65),  # Display P3
             22: ((0.630, 0.340), (0.295, 0.605), (0.155, 0.077), D65)}  # EBU Tech 3213


def nclx_icc(nclx: dict) -> bytes | None:
    """An ICC profile saying what `nclx` says (pillow-heif's `nclx_profile`: code points and the
    primaries' chromaticities; `imageio.avif_nclx`'s: code points alone, `PRIMARIES`' then), or
    None where that is sRGB (as the values are read anyway), primaries unknown, or a transfer no
    ICC curve holds (`TRANSFERS`)."""
    try:
        primaries = int(nclx.get("color_primaries", UNSPECIFIED))
        transfer = int(nclx.get("transfer_characteristics", UNSPECIFIED))
        xy = ([(float(nclx[f"color_primary_{c}_x"]), float(nclx[f"color_primary_{c}_y"]))
               for c in ("red", "green", "blue", "white")] if "color_primary_red_x" in nclx else PRIMARIES[primaries])
    except (KeyError, TypeError, ValueError):
        return None
    srgb_primaries = primaries == UNSPECIFIED or np.allclose(xy, SRGB_XY, atol=1e-3)
    transfer = 13 if transfer == UNSPECIFIED else transfer
    if transfer not in TRANSFERS or (srgb_primaries and TRANSFERS[transfer] == SRGB_CURVE):
        return None
    if not all(0 < y <= 1 and 0 <= x <= 1 for x, y in xy):
        return None
    try:
        colorants = _colorants_d50(xy)
        return _matrix_trc_profile(colorants, TRANSFERS[transfer], f"rgbatch: H.273 primaries {primaries}, "
                                                                   f"transfer {transfer}")
    except (np.linalg.LinAlgError, struct.error):  # primaries on a line, colorants out of the tags' range
        return None


def _colorants_d50(xy) -> np.ndarray:
    """The XYZ of full red, green and blue (columns) of the primaries `xy` (red, green, blue,
    white), adapted to D50 by the Bradford transform, as an ICC profile's colorant tags hold them."""
    def xyz(x, y):
        return np.array([x / y, 1.0, (1 - x - y) / y])

    primaries = np.stack([xyz(*p) for p in xy[:3]], axis=1)
    white = xyz(*xy[3])
    rgb_to_xyz = primaries * np.linalg.solve(primaries, white)  # each primary scaled so that R=G=B=1 is white
    cone = BRADFORD @ D50 / (BRADFORD @ white)
    return np.linalg.inv(BRADFORD) @ np.diag(cone) @ BRADFORD @ rgb_to_xyz


def _s15(value: float) -> bytes:
    return struct.pack(">i", int(round(value * 65536)))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ " + bytes(4) + b"".join(_s15(v) for v in xyz)


def _curve_tag(curve) -> bytes:
    """An ICC v2 `curv`: sRGB's, sampled (light of each of CURVE_POINTS even steps of the value), or a power."""
    if curve == SRGB_CURVE:
        x = np.linspace(0.0, 1.0, CURVE_POINTS)
        light = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
        return b"curv" + bytes(4) + struct.pack(f">I{CURVE_POINTS}H", CURVE_POINTS, *np.round(light * 65535).astype(int))
    return b"curv" + bytes(4) + struct.pack(">IH", 1, int(round(curve * 256))) + bytes(2)  # a power (u8.8)


def _matrix_trc_profile(colorants: np.ndarray, curve, description: str) -> bytes:
    """An ICC v2.1 RGB display profile: colorants (D50 XYZ columns), one curve for all three."""
    trc = _curve_tag(curve)
    return icc_profile(b"mntr", b"RGB ", b"XYZ ", description, [
        *((sig, _xyz_tag(colorants[:, i])) for i, sig in enumerate((b"rXYZ", b"gXYZ", b"bXYZ"))),
        (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc)])


def icc_profile(device_class: bytes, space: bytes, pcs: bytes, description: str, tags: list) -> bytes:
    """An ICC v2.1 profile of (signature, tag bytes) pairs, with its description, a copyright
    line and the D50 white point (the tags every profile holds)."""
    text = description.encode("ascii") + b"\0"
    tags = [(b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)),
            (b"cprt", b"text" + bytes(4) + b"No copyright, use freely\0"), (b"wtpt", _xyz_tag(D50)), *tags]
    offset, table, body, placed = 128 + 4 + 12 * len(tags), b"", b"", {}
    for sig, data in tags:
        if data not in placed:  # tags of the same bytes share them (the three curves), as the format allows
            body += bytes(-len(body) % 4)  # each tag on a 4-byte boundary
            placed[data] = offset + len(body)
            body += data
        table += sig + struct.pack(">II", placed[data], len(data))
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + bytes([2, 0x10, 0, 0]) + device_class + space + pcs
              + bytes(12) + b"acsp" + bytes(24) + bytes(4) + b"".join(_s15(v) for v in D50) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def cmyk_transform(image: Image.Image):
    """A LittleCMS transform of a CMYK image into sRGB through the image's own ICC profile (None:
    it has none, or one LittleCMS refuses: Pillow's formula then, as before session 62)."""
    icc = image.info.get("icc_profile")
    if image.mode != "CMYK" or not isinstance(icc, bytes) or icc[16:20] != b"CMYK":
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), "CMYK", "RGB",
                                       renderingIntent=ImageCms.getDefaultIntent(profile))
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None
