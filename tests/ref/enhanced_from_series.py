"""Writes one enhanced (multi-frame) CT file from a directory of single-frame CT slices, with pydicom alone:
an encoder independent of livseg's reader and of the tests' own C writer (tests/dicom_synth.h), with
pydicom's own encoding choices. Frames carry their position in the Per-frame
Functional Groups; orientation, pixel spacing, thickness and rescale go in the shared groups.

usage: enhanced_from_series.py SERIES_DIR OUT.dcm [--explicit] [--reverse]
  --explicit   explicit VR little endian (default: implicit VR little endian)
  --reverse    frames in the opposite order of their positions
"""
import glob
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def item(**elements):
    d = Dataset()
    for k, v in elements.items():
        setattr(d, k, v)
    return d


def main():
    src, out = sys.argv[1], sys.argv[2]
    explicit, reverse = "--explicit" in sys.argv, "--reverse" in sys.argv
    slices = [pydicom.dcmread(f) for f in sorted(glob.glob(os.path.join(src, "*")))]
    normal = np.cross(*np.array(slices[0].ImageOrientationPatient, float).reshape(2, 3))
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))), reverse=reverse)
    first = slices[0]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = generate_uid(), 42, "enhanced from series"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(slices), first.Rows, first.Columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = first.BitsAllocated, first.BitsStored, first.HighBit
    ds.PixelRepresentation = first.PixelRepresentation
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=first.ImageOrientationPatient)]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([item(
        PlanePositionSequence=Sequence([item(ImagePositionPatient=s.ImagePositionPatient)]),
        PixelValueTransformationSequence=Sequence([item(RescaleIntercept=s.RescaleIntercept,
                                                        RescaleSlope=s.RescaleSlope, RescaleType="HU")]),
    ) for s in slices])
    ds.PixelData = b"".join(s.PixelData for s in slices)
    ds.is_little_endian, ds.is_implicit_VR = True, not explicit
    ds.preamble = b"\0" * 128
    ds.save_as(out, write_like_original=False)


if __name__ == "__main__":
    main()
