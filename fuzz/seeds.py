#!/usr/bin/env python3
"""Builds the seed corpora of the fuzz targets in fuzz/corpus/<target>/ (not committed).

Sources: pydicom's test files, the node's synthetic series (files written by `pacs synth`, in
the directory given with --synth), and hand-made PDUs, multipart bodies and QIDO query
strings. Every seed starts with the byte the target reads its knobs from (see the entry
points in dimse/src/fuzzing.rs, dicomweb/src/fuzzing.rs and src/fuzzing.rs).

Usage: python3 fuzz/seeds.py [--synth DIR] [--out fuzz/corpus]
"""

import argparse
import hashlib
import io
import os
import struct
import sys
import warnings

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

# dimse/src/server/listener.rs ACCEPTED_TRANSFER_SYNTAXES, in its order: a C-STORE seed's
# first byte is the index of its transfer syntax there.
ACCEPTED_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.1.98",  # Encapsulated Uncompressed Explicit VR Little Endian
]

# Seeds stay small: libFuzzer's default maximum input length follows the corpus.
MAX_SEED = 64 * 1024

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
PATIENT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


class Corpus:
    def __init__(self, root, target):
        self.dir = os.path.join(root, target)
        os.makedirs(self.dir, exist_ok=True)
        self.count = 0

    def add(self, name, data):
        if len(data) > MAX_SEED:
            return
        digest = hashlib.sha1(data).hexdigest()[:12]
        with open(os.path.join(self.dir, f"{name}-{digest}"), "wb") as f:
            f.write(data)
        self.count += 1


# ---- DICOM objects -------------------------------------------------------------------------


def dataset_offset(part10):
    """Where the data set of a Part 10 file starts (after the preamble, DICM and group 0002,
    which is always Explicit VR Little Endian), or None."""
    if len(part10) < 132 or part10[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(part10):
        group = struct.unpack_from("<H", part10, pos)[0]
        if group != 2:
            return pos
        vr = part10[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            if pos + 12 > len(part10):
                return None
            pos += 12 + struct.unpack_from("<I", part10, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", part10, pos + 6)[0]
    return None


def shrink(ds):
    """Drops values over 4 KiB (pixel data, waveforms, overlays), keeping the element with an
    empty value: the attributes are what the parsers are about."""
    for elem in list(ds.iterall()):
        value = elem.value
        if isinstance(value, (bytes, bytearray)) and len(value) > 4096:
            elem.value = b""


def encoded(ds, transfer_syntax):
    """`ds` as a Part 10 file in `transfer_syntax`, or None when pydicom cannot write it so."""
    ds = ds.copy()
    ds.file_meta = ds.file_meta.copy() if hasattr(ds, "file_meta") else Dataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.setdefault("MediaStorageSOPClassUID", ds.get("SOPClassUID", CT_STORAGE))
    ds.file_meta.setdefault("MediaStorageSOPInstanceUID", ds.get("SOPInstanceUID", "1.2.3.4"))
    out = io.BytesIO()
    try:
        ds.save_as(out, enforce_file_format=True)
    except Exception:
        return None
    return out.getvalue()


def dicom_sources(synth_dir):
    """(name, Part 10 bytes) of pydicom's test files and the synthetic series."""
    test_files = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    paths = [os.path.join(test_files, n) for n in sorted(os.listdir(test_files)) if n.endswith(".dcm")]
    if synth_dir:
        for root, _, names in sorted(os.walk(synth_dir)):
            paths += [os.path.join(root, n) for n in sorted(names) if n.endswith(".dcm")]
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if synth_dir and path.startswith(synth_dir):
            name = "synth-" + os.path.relpath(path, synth_dir).replace(os.sep, "-")[:-4]
        with open(path, "rb") as f:
            raw = f.read()
        try:
            ds = pydicom.dcmread(io.BytesIO(raw), force=True)
            ds.decode()
        except Exception:
            ds = None
        if len(raw) <= MAX_SEED:
            yield name, raw
        if ds is None:
            continue
        try:
            shrink(ds)
        except Exception:
            continue
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
        # the same attributes in the other native transfer syntaxes and deflated
        native = [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED]
        for other in native if ts in native or not ts else [ts]:
            data = encoded(ds, other)
            if data is not None and data != raw:
                yield f"{name}-{other}", data


def dicom_corpora(root, synth_dir):
    ingest = Corpus(root, "ingest")
    json = Corpus(root, "dicom_json")
    for name, part10 in dicom_sources(synth_dir):
        for corpus in (ingest, json):
            # STOW-RS: a Part 10 file
            corpus.add(f"{name}-part10", b"\x80" + part10)
            # C-STORE: the data set alone, in its transfer syntax
            offset = dataset_offset(part10)
            if offset is None:
                continue
            try:
                ts = str(pydicom.dcmread(io.BytesIO(part10), stop_before_pixels=True).file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if ts in ACCEPTED_TRANSFER_SYNTAXES:
                knob = ACCEPTED_TRANSFER_SYNTAXES.index(ts)
                corpus.add(f"{name}-dataset", bytes([knob]) + part10[offset:])
                # in fragments of 1000 bytes
                corpus.add(f"{name}-fragments", bytes([knob | 0x40]) + part10[offset:])
    return [ingest, json]


# ---- PDUs ----------------------------------------------------------------------------------


def item(kind, value):
    return struct.pack(">BBH", kind, 0, len(value)) + value


def pdu(kind, value):
    return struct.pack(">BBI", kind, 0, len(value)) + value


def uid(s):
    return s.encode()


def associate_rq(contexts, user_items, called=b"PACS", calling=b"MODALITY", version=1,
                 context_name=b"1.2.840.10008.3.1.1.1"):
    body = struct.pack(">HH", version, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += item(0x10, context_name)
    for pc_id, abstract, transfers in contexts:
        sub = item(0x30, uid(abstract)) + b"".join(item(0x40, uid(t)) for t in transfers)
        body += item(0x20, struct.pack(">BBBB", pc_id, 0, 0, 0) + sub)
    body += item(0x50, b"".join(user_items))
    return pdu(0x01, body)


def max_length(n):
    return item(0x51, struct.pack(">I", n))


def implementation():
    return item(0x52, b"1.2.826.0.1.3680043.9.3811.2.0.0") + item(0x55, b"FUZZ_SCU")


def role(sop_class, scu, scp):
    value = sop_class.encode()
    return item(0x54, struct.pack(">H", len(value)) + value + bytes([scu, scp]))


def user_identity(kind, positive, primary, secondary=b""):
    value = struct.pack(">BBH", kind, positive, len(primary)) + primary
    value += struct.pack(">H", len(secondary)) + secondary
    return item(0x58, value)


def command_set(elements):
    """An Implicit VR Little Endian command set with its group length first (PS3.7 9.1.1)."""
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    body = fp.getvalue()
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def identifier(elements, transfer_syntax=IMPLICIT_LE):
    ds = Dataset()
    for tag, vr, value in elements:
        ds.add_new(tag, vr, value)
    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != EXPLICIT_BE
    fp.is_implicit_VR = transfer_syntax == IMPLICIT_LE
    write_dataset(fp, ds)
    return fp.getvalue()


def pdata(*values):
    """A P-DATA-TF PDU of (context id, command, last, bytes) values."""
    body = b""
    for pc_id, command, last, data in values:
        control = (1 if command else 0) | (2 if last else 0)
        body += struct.pack(">IBB", len(data) + 2, pc_id, control) + data
    return pdu(0x04, body)


def request(field, message_id, sop_class, has_dataset, extra=()):
    elements = [
        (0x00000002, "UI", sop_class),
        (0x00000100, "US", field),
        (0x00000110, "US", message_id),
        (0x00000800, "US", 0x0000 if has_dataset else 0x0101),
    ]
    if field in (0x0001, 0x0020, 0x0021, 0x0010):
        elements.append((0x00000700, "US", 0))
    return command_set(elements + list(extra))


RELEASE = pdu(0x05, bytes(4))
ABORT = pdu(0x07, bytes([0, 0, 0, 0]))


def pdu_corpus(root):
    corpus = Corpus(root, "pdu")
    contexts = [
        (1, VERIFICATION, [IMPLICIT_LE]),
        (3, CT_STORAGE, [EXPLICIT_LE, IMPLICIT_LE]),
        (5, STUDY_FIND, [IMPLICIT_LE, EXPLICIT_LE]),
        (7, STUDY_MOVE, [EXPLICIT_BE, IMPLICIT_LE]),
        (9, STUDY_GET, [DEFLATED, EXPLICIT_LE]),
        (11, PATIENT_FIND, [EXPLICIT_LE]),
        (13, CT_STORAGE, ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90"]),
        (15, "1.2.3.4.5", [IMPLICIT_LE]),
    ]
    base_users = [max_length(16384), implementation()]
    identities = [
        [],
        [user_identity(1, 0, b"alice")],
        [user_identity(2, 1, b"alice", b"secret")],
        [user_identity(3, 0, b"kerberos-ticket")],
        [user_identity(4, 1, b"<saml/>")],
        [user_identity(5, 1, b"eyJhbGciOiJIUzI1NiJ9.e30.sig")],
        [user_identity(9, 1, b"abc")],
        [item(0x58, b"\x01")],
    ]
    roles = [role(CT_STORAGE, 0, 1), role(VERIFICATION, 1, 1)]
    study = "1.2.826.0.1.3680043.8.498.1"
    find_id = identifier([
        (0x00080052, "CS", "STUDY"),
        (0x00100010, "PN", "DOE^J*"),
        (0x00080020, "DA", "20200101-20241231"),
        (0x0020000D, "UI", ""),
        (0x00080061, "CS", "CT\\MR"),
    ])
    find_explicit = identifier([
        (0x00080052, "CS", "SERIES"),
        (0x0020000D, "UI", study),
        (0x00080060, "CS", ""),
    ], EXPLICIT_LE)
    move_id = identifier([(0x00080052, "CS", "STUDY"), (0x0020000D, "UI", study)], EXPLICIT_BE)
    get_id = identifier([(0x00080052, "CS", "STUDY"), (0x0020000D, "UI", study)], EXPLICIT_LE)
    store_data = identifier([
        (0x00080016, "UI", CT_STORAGE),
        (0x00080018, "UI", "1.2.3.4.5.6"),
        (0x00100010, "PN", "DOE^JANE"),
        (0x0020000D, "UI", study),
        (0x0020000E, "UI", study + ".1"),
    ], EXPLICIT_LE)
    echo = request(0x0030, 1, VERIFICATION, False)
    messages = [
        pdata((1, True, True, echo)),
        # a command set in two fragments
        pdata((1, True, False, echo[:20])) + pdata((1, True, True, echo[20:])),
        pdata((3, True, True, request(0x0001, 2, CT_STORAGE, True,
                                      [(0x00001000, "UI", "1.2.3.4.5.6")])),
              (3, False, False, store_data[:30])) + pdata((3, False, True, store_data[30:])),
        pdata((5, True, True, request(0x0020, 3, STUDY_FIND, True)), (5, False, True, find_id)),
        pdata((11, True, True, request(0x0020, 4, PATIENT_FIND, True)), (11, False, True, find_explicit)),
        pdata((7, True, True, request(0x0021, 5, STUDY_MOVE, True, [(0x00000600, "AE", "STORESCP")])),
              (7, False, True, move_id)),
        pdata((9, True, True, request(0x0010, 6, STUDY_GET, True)), (9, False, True, get_id)),
        pdata((5, True, True, command_set([(0x00000100, "US", 0x0FFF), (0x00000120, "US", 3),
                                           (0x00000800, "US", 0x0101)]))),
        pdata((1, True, True, request(0x0040, 8, VERIFICATION, False))),
        # data before any command, a context that was not accepted
        pdata((1, False, True, b"\x00" * 8)),
        pdata((15, True, True, echo)),
    ]
    for knobs in (0x00, 0x02, 0x05, 0x0B, 0x0E):
        for i, identity in enumerate(identities):
            rq = associate_rq(contexts, base_users + roles + identity)
            corpus.add(f"associate-identity{i}", bytes([knobs]) + rq)
            corpus.add(f"associate-identity{i}-release", bytes([knobs]) + rq + RELEASE)
        rq = associate_rq(contexts, base_users + roles)
        for i, message in enumerate(messages):
            corpus.add(f"message{i}", bytes([knobs]) + rq + message + RELEASE)
        corpus.add("all-messages", bytes([knobs]) + rq + b"".join(messages) + RELEASE)
        corpus.add("abort", bytes([knobs]) + rq + ABORT)
    # refusals and oddities before association
    corpus.add("bad-version", b"\x02" + associate_rq(contexts, base_users, version=2))
    corpus.add("bad-context-name", b"\x02" + associate_rq(contexts, base_users, context_name=b"1.2.3"))
    corpus.add("max-length-zero", b"\x02" + associate_rq(contexts, [max_length(0), implementation()])
               + messages[0] + RELEASE)
    corpus.add("release-first", b"\x02" + RELEASE)
    corpus.add("unknown-pdu", b"\x02" + pdu(0x09, b"abc"))
    corpus.add("too-long", b"\x02" + struct.pack(">BBI", 0x04, 0, 0x7FFFFFFF))
    return [corpus]


# ---- STOW-RS -------------------------------------------------------------------------------


def stow_corpus(root, synth_dir):
    corpus = Corpus(root, "stow")
    objects = []
    for name, part10 in dicom_sources(synth_dir):
        if len(part10) <= 4096:
            objects.append(part10)
        if len(objects) == 3:
            break
    objects.append(b"not dicom")

    def multipart(boundary, parts, part_headers=b"Content-Type: application/dicom\r\n",
                  preamble=b"", epilogue=b"\r\n", close=True):
        body = preamble
        for p in parts:
            body += b"--" + boundary + b"\r\n" + part_headers + b"\r\n" + p + b"\r\n"
        if close:
            body += b"--" + boundary + b"--" + epilogue
        return body

    ct = b'multipart/related; type="application/dicom"; boundary='
    variants = [
        (ct + b"DICOMwebBoundary", multipart(b"DICOMwebBoundary", objects)),
        (ct + b'"quoted boundary"', multipart(b"quoted boundary", objects[:1])),
        (b"multipart/related; boundary=B", multipart(b"B", objects[:2], part_headers=b"")),
        (ct + b"B", multipart(b"B", objects[:2], part_headers=b"Content-Type: application/dicom+json\r\n")),
        (ct + b"B", multipart(b"B", objects[:1], preamble=b"preamble\r\n", epilogue=b"epilogue")),
        (ct + b"B", multipart(b"B", objects, close=False)),
        (ct + b"B", multipart(b"B", [b""])),
        (ct + b"B", b""),
        (ct + b"B", b"--B--\r\n"),
        (ct + b"B", multipart(b"B", objects[:1], part_headers=b"Content-Type: application/dicom\r\nContent-Length: 3\r\nX-Other: y\r\n")),
        (b'multipart/related; type="application/dicom+xml"; boundary=B', multipart(b"B", objects[:1])),
        (b"application/dicom", objects[0]),
        (b"multipart/related", multipart(b"B", objects[:1])),
        (ct + b"", multipart(b"", objects[:1])),
    ]
    for i, (content_type, body) in enumerate(variants):
        for knobs in (0x03, 0x00, 0x05, 0x1E, 0x23):
            corpus.add(f"stow{i}", bytes([knobs]) + content_type + b"\n" + body)
    return [corpus]


# ---- QIDO-RS -------------------------------------------------------------------------------


def qido_corpus(root):
    corpus = Corpus(root, "qido")
    queries = [
        "",
        "PatientName=DOE*",
        "PatientName=doe%5Ej*&fuzzymatching=true",
        "00100010=*a?b*",
        "PatientID=PAT001&includefield=all",
        "StudyDate=20200101-20241231",
        "StudyDate=-20240101&StudyTime=080000-120000.5",
        "StudyDate=20240101",
        "StudyInstanceUID=1.2.3\\1.2.4\\1.2.5",
        "StudyInstanceUID=1.2.3%5C1.2.4",
        "SeriesInstanceUID=1.2.3&Modality=CT",
        "ModalitiesInStudy=CT\\MR",
        "ModalitiesInStudy=CT&limit=1&offset=1",
        "limit=0",
        "limit=18446744073709551615&offset=18446744073709551615",
        "offset=-1",
        "includefield=00081030,StudyID&includefield=NumberOfStudyRelatedInstances",
        "includefield=PixelData",
        "SeriesNumber=1&InstanceNumber=2",
        "SeriesNumber=x",
        "AccessionNumber=&ReferringPhysicianName=SMITH",
        "StudyDescription=%E4%B8%AD%E6%96%87*",
        "timezoneadjustment=true&PatientBirthDate=19700101-",
        "Unknown=1",
        "0020000D=1.2.3&00080020=20240101-",
        "SOPClassUID=1.2.840.10008.5.1.4.1.1.2&SOPInstanceUID=1.2.3",
        "%=%&&=&a=%zz&b=%4",
        "NumberOfStudyRelatedSeries=2",
    ]
    for i, query in enumerate(queries):
        for knobs in range(8):
            corpus.add(f"qido{i}", bytes([knobs]) + query.encode())
    for knobs in (0x08, 0x10, 0x18):
        corpus.add("accept", bytes([knobs]) + b"PatientName=*")
    return [corpus]


def main():
    # pydicom warns about every oddity of its own test files
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", help="a directory of synthetic series (`pacs synth --out`)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    args = parser.parse_args()
    synth = os.path.abspath(args.synth) if args.synth else None
    corpora = (dicom_corpora(args.out, synth) + pdu_corpus(args.out)
               + stow_corpus(args.out, synth) + qido_corpus(args.out))
    for c in corpora:
        print(f"{c.dir}: {c.count} seeds")


if __name__ == "__main__":
    sys.exit(main())
