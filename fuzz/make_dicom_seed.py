"""Writes the DICOM fuzzing seeds: small synthetic CT slices (explicit VR little endian), made here so no
patient file enters the repository.

usage: python3 fuzz/make_dicom_seed.py fuzz/corpus/dicom
"""
import struct
import sys


def element(group, elem, vr, value):
    if isinstance(value, str):
        value = value.encode()
        if len(value) % 2:
            value += b"\0" if vr == "UI" else b" "
    if vr in ("OB", "OW", "UN", "SQ", "UT"):
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def slice_file(z, rows=8, cols=8, modality="CT"):
    meta = b"".join([
        element(0x0002, 0x0001, "OB", b"\0\1"),
        element(0x0002, 0x0002, "UI", "1.2.840.10008.5.1.4.1.1.2"),
        element(0x0002, 0x0003, "UI", f"1.2.3.4.5.{z}"),
        element(0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1"),
    ])
    meta = element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta))) + meta
    pixels = b"".join(struct.pack("<h", (x * 37 + z * 11) % 2000 - 200) for x in range(rows * cols))
    ds = b"".join([
        element(0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.2"),
        element(0x0008, 0x0018, "UI", f"1.2.3.4.5.{z}"),
        element(0x0008, 0x0060, "CS", modality),
        element(0x0018, 0x0050, "DS", "2"),
        element(0x0020, 0x000E, "UI", "1.2.3.4.6"),
        element(0x0020, 0x0032, "DS", f"-4\\-4\\{2 * z}"),
        element(0x0020, 0x0037, "DS", "1\\0\\0\\0\\1\\0"),
        element(0x0028, 0x0002, "US", struct.pack("<H", 1)),
        element(0x0028, 0x0004, "CS", "MONOCHROME2"),
        element(0x0028, 0x0010, "US", struct.pack("<H", rows)),
        element(0x0028, 0x0011, "US", struct.pack("<H", cols)),
        element(0x0028, 0x0030, "DS", "1\\1"),
        element(0x0028, 0x0100, "US", struct.pack("<H", 16)),
        element(0x0028, 0x0101, "US", struct.pack("<H", 16)),
        element(0x0028, 0x0102, "US", struct.pack("<H", 15)),
        element(0x0028, 0x0103, "US", struct.pack("<H", 1)),
        element(0x0028, 0x1052, "DS", "-1024"),
        element(0x0028, 0x1053, "DS", "1"),
        element(0x7FE0, 0x0010, "OW", pixels),
    ])
    return b"\0" * 128 + b"DICM" + meta + ds


out = sys.argv[1]
for z in range(2):
    with open(f"{out}/slice{z}.dcm", "wb") as f:
        f.write(slice_file(z))
