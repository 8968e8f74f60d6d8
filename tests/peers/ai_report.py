"""Reads the AI worker's human-readable report of a study back from the node, with peers nobody
here wrote: dicomweb-client finds and fetches the Encapsulated PDF series (Modality DOC),
pydicom reads the instance and pypdf parses the PDF inside it. Prints one JSON object for the
Rust test to check.

    python3 ai_report.py DICOMWEB_URL STUDY_UID OUT_DIR
    python3 ai_report.py --file REPORT.dcm OUT_DIR     (a file, without a node)

OUT_DIR receives report.dcm (for dciodvfy) and report.pdf. The page's text comes back as
`lines`: the text runs of each baseline, left to right, top line first.
"""

import json
import os
import sys

import pydicom
import pypdf
from dicomweb_client.api import DICOMwebClient


def fail(message):
    print(f"ai_report.py: {message}", file=sys.stderr)
    sys.exit(1)


def value(dataset_json, tag):
    v = dataset_json.get(tag, {}).get("Value")
    return v[0] if v else None


def fetch(url, study, out_dir):
    """The one instance of the study's DOC series, saved as OUT_DIR/report.dcm."""
    client = DICOMwebClient(url)
    docs = [s for s in client.search_for_series(study_instance_uid=study)
            if value(s, "00080060") == "DOC"]
    if len(docs) != 1:
        fail(f"expected one DOC series in the study, found {len(docs)}")
    series_uid = value(docs[0], "0020000E")
    instances = client.retrieve_series(study, series_uid)
    if len(instances) != 1:
        fail(f"DOC series {series_uid} has {len(instances)} instances")
    dcm_path = os.path.join(out_dir, "report.dcm")
    instances[0].save_as(dcm_path, enforce_file_format=True)
    return dcm_path


def read(dcm_path, out_dir):
    ds = pydicom.dcmread(dcm_path)
    document = bytes(ds.EncapsulatedDocument)
    length = int(ds.get("EncapsulatedDocumentLength", len(document)))
    pdf_bytes = document[:length]
    pdf_path = os.path.join(out_dir, "report.pdf")
    with open(pdf_path, "wb") as f:
        f.write(pdf_bytes)

    reader = pypdf.PdfReader(pdf_path, strict=True)
    runs = []

    def visit(text, cm, tm, _font, _size):
        if text.strip():
            runs.append((round(tm[5] * cm[3] + cm[5], 1), tm[4] * cm[0] + cm[4], text.strip()))

    pages = []
    for page in reader.pages:
        runs.clear()
        page.extract_text(visitor_text=visit)
        by_line = {}
        for y, x, t in runs:
            by_line.setdefault(y, []).append((x, t))
        lines = [[t for _x, t in sorted(cells)] for _y, cells in
                 sorted(by_line.items(), key=lambda kv: -kv[0])]
        images = [{"width": int(img.image.width), "height": int(img.image.height),
                   "mode": img.image.mode} for img in page.images]
        pages.append({"lines": lines, "images": images,
                      "media_box": [float(v) for v in page.mediabox]})

    concept = ds.ConceptNameCodeSequence[0] if ds.get("ConceptNameCodeSequence") else None
    result = {
        "sop_class_uid": ds.SOPClassUID,
        "sop_instance_uid": ds.SOPInstanceUID,
        "series_instance_uid": ds.SeriesInstanceUID,
        "series_description": ds.get("SeriesDescription"),
        "study_instance_uid": ds.StudyInstanceUID,
        "patient_id": ds.get("PatientID"),
        "modality": ds.Modality,
        "mime_type": ds.MIMETypeOfEncapsulatedDocument,
        "document_title": ds.DocumentTitle,
        "concept_name": [concept.CodeValue, concept.CodingSchemeDesignator,
                         concept.CodeMeaning] if concept else None,
        "burned_in_annotation": ds.BurnedInAnnotation,
        "manufacturer_model_name": ds.get("ManufacturerModelName"),
        "software_versions": list(ds.SoftwareVersions) if ds.get("SoftwareVersions") else [],
        "encapsulated_document_length": length,
        "value_length": len(document),
        "source_instances": [item.ReferencedSOPInstanceUID
                             for item in ds.get("SourceInstanceSequence", [])],
        "pdf_header": pdf_bytes[:8].decode("latin-1"),
        "pdf_title": reader.metadata.title if reader.metadata else None,
        "pages": pages,
        "pypdf": pypdf.__version__,
    }
    return result


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--file":
        result = read(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4:
        url, study, out_dir = sys.argv[1:4]
        result = read(fetch(url, study, out_dir), out_dir)
    else:
        fail(__doc__)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
