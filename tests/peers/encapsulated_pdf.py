"""Makes a small valid PDF and wraps it in an Encapsulated PDF instance with pydicom, stores it
with dicomweb-client (STOW-RS), and reads it back as the node renders it (WADO-RS `/rendered`
of the instance, and with requests of its frame 1, Accept: application/pdf). Prints one JSON object for the
Rust test to check.

    python3 encapsulated_pdf.py DICOMWEB_URL OUT_DIR

OUT_DIR receives document.pdf (the PDF as made) and pdf.dcm (the instance).
"""

import json
import os
import sys

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"


def tiny_pdf():
    """A one-page PDF with a line of text, its cross-reference table at the right offsets;
    of odd length, so that the instance carries a pad byte after it."""
    stream = b"BT /F1 24 Tf 72 720 Td (pacs measurements report) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF" % (len(objects) + 1, xref)
    if len(out) % 2 == 0:
        out += b"\n"
    return bytes(out)


def instance(pdf):
    ds = Dataset()
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.PatientName = "Report^Pdf"
    ds.PatientID = "PDF-1"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ConversionType = "WSD"
    ds.ContentDate = "20240102"
    ds.ContentTime = "101010"
    ds.AcquisitionDateTime = "20240102101010"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "Measurements"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    # PS3.3 C.24.2.1: the value is padded to even length; the length says where the PDF ends
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    url, out_dir = sys.argv[1:]
    pdf = tiny_pdf()
    ds = instance(pdf)
    with open(os.path.join(out_dir, "document.pdf"), "wb") as f:
        f.write(pdf)
    path = os.path.join(out_dir, "pdf.dcm")
    ds.save_as(path, enforce_file_format=True)
    client = DICOMwebClient(url)
    # read back: a Part 10 file with its preamble, as STOW-RS wants it
    client.store_instances([pydicom.dcmread(path)])
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    rendered = client.retrieve_instance_rendered(*uids, media_types=("application/pdf",))
    base = f"{url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    # dicomweb-client offers only image and video types for a rendered frame
    frame = requests.get(f"{base}/frames/1/rendered", headers={"Accept": "application/pdf"})
    frame.raise_for_status()
    frame = frame.content
    raw = requests.get(f"{base}/rendered", headers={"Accept": "application/pdf"})
    print(
        json.dumps(
            {
                "pdf_len": len(pdf),
                "instance_identical": rendered == pdf,
                "frame_identical": frame == pdf,
                "content_type": raw.headers.get("Content-Type"),
                "raw_identical": raw.content == pdf,
                "uids": list(uids),
            }
        )
    )


if __name__ == "__main__":
    main()
