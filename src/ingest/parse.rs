//! Reading what the index needs out of a received object: the attributes it matches on, the
//! metadata served by WADO-RS `/metadata` (DICOM JSON without bulk data), and the byte ranges of
//! each frame inside the stored file.

use std::io::{BufReader, Read, Seek};

use dicom_core::header::{HasLength, Header};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::collector::DicomCollectorOptions;
use dicom_object::file::ReadPreamble;
use dicom_object::InMemDicomObject;
use dicom_parser::stateful::decode::{StatefulDecode, StatefulDecoder};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde_json::Value;

use crate::index::attributes::AttributeSource;
use crate::index::InstanceRecord;

/// Binary values longer than this are left out of the metadata and served as bulk data.
const BULK_THRESHOLD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("cannot parse the data set: {0}")]
    Unreadable(String),
    #[error("data set truncated: {0}")]
    Truncated(String),
    /// Larger than the node's limit (a deflated data set that inflates past it).
    #[error("{0}")]
    TooLarge(String),
}

/// Attributes and metadata read from the object, before storage fields are filled in.
pub struct Parsed {
    /// Index attributes; `metadata_json` is filled from `metadata` by [`Parsed::finish`].
    pub record: InstanceRecord,
    /// DICOM JSON of everything before the Pixel Data, bulk data as `BulkDataURI`s.
    pub metadata: Value,
    /// Value of SOP Instance UID (0008,0018) in the data set.
    pub sop_instance_uid: String,
    /// Value of SOP Class UID (0008,0016) in the data set.
    pub sop_class_uid: String,
    /// Bytes per frame of native pixel data (Rows x Columns x Samples per Pixel x Bits
    /// Allocated / 8); None when unknown or not byte-aligned (1-bit data).
    pub native_frame_length: Option<u64>,
}

impl Parsed {
    /// Records where the pixel data is: its frames' byte ranges, and a bulk data reference in
    /// the metadata.
    pub fn set_pixel_data(&mut self, pixel: &PixelDataLocation) {
        let frames = frame_ranges(
            pixel,
            self.record.number_of_frames.unwrap_or(1).max(1) as u32,
            self.native_frame_length,
        );
        self.record.frames_json = serde_json::to_string(&frames).unwrap_or_else(|_| "[]".into());
        if let Some(map) = self.metadata.as_object_mut() {
            let tag = format!("{:04X}{:04X}", pixel.tag.group(), pixel.tag.element());
            map.insert(
                tag.clone(),
                serde_json::json!({ "vr": pixel.vr.to_string(), "BulkDataURI": format!("bulkdata/{tag}") }),
            );
        }
    }

    /// Serialises the metadata into the record.
    pub fn finish(mut self) -> Result<InstanceRecord, ParseError> {
        if self.record.frames_json.is_empty() {
            self.record.frames_json = "[]".into();
        }
        self.record.metadata_json = serde_json::to_vec(&self.metadata)
            .map_err(|e| ParseError::Unreadable(e.to_string()))?;
        Ok(self.record)
    }
}

/// Parses a Part 10 stream (preamble, file meta group, data set) up to the Pixel Data.
pub fn parse_part10<R: Read + Seek>(source: R) -> Result<Parsed, ParseError> {
    let mut collector = DicomCollectorOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(BufReader::new(source));
    let ts = collector
        .read_file_meta()
        .map_err(|e| ParseError::Unreadable(e.to_string()))?
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let mut obj = InMemDicomObject::new_empty();
    collector
        .read_dataset_up_to_pixeldata(&mut obj)
        .map_err(|e| ParseError::Unreadable(e.to_string()))?;
    parsed_from(obj, ts)
}

/// Parses a Deflated Explicit VR Little Endian data set (PS3.5 A.5: raw deflate of an Explicit
/// VR Little Endian data set), given without its file meta group. The inflated data set is held
/// in memory: this transfer syntax is used for small non-image objects in practice. It may not
/// inflate past `max_inflated` bytes (a few KiB of deflate can stand for gigabytes).
pub fn parse_deflated<R: Read>(
    deflated: R,
    transfer_syntax_uid: &str,
    max_inflated: u64,
) -> Result<Parsed, ParseError> {
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(max_inflated.saturating_add(1))
        .read_to_end(&mut inflated)
        .map_err(|e| ParseError::Unreadable(format!("cannot inflate the data set: {e}")))?;
    if inflated.len() as u64 > max_inflated {
        return Err(ParseError::TooLarge(format!(
            "deflated data set inflates past the limit of {max_inflated} bytes"
        )));
    }
    check_nesting(
        std::io::Cursor::new(&inflated[..]),
        dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
    )?;
    check_value_lengths(
        std::io::Cursor::new(&inflated),
        dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN,
        inflated.len() as u64,
    )?;
    let mut collector = DicomCollectorOptions::new()
        .read_preamble(ReadPreamble::Never)
        .expected_ts(dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .from_reader(BufReader::new(std::io::Cursor::new(inflated)));
    let mut obj = InMemDicomObject::new_empty();
    collector
        .read_dataset_up_to_pixeldata(&mut obj)
        .map_err(|e| ParseError::Unreadable(e.to_string()))?;
    parsed_from(obj, transfer_syntax_uid.to_string())
}

/// Refuses a data set whose sequences nest deeper than
/// [`pacs_dimse::nesting::MAX_SEQUENCE_DEPTH`], before anything parses it (the parsers recurse
/// per level). `source` is at the start of the data set.
pub fn check_nesting<R: Read + Seek>(
    source: R,
    transfer_syntax_uid: &str,
) -> Result<(), ParseError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| {
            ParseError::Unreadable(format!("unknown transfer syntax {transfer_syntax_uid}"))
        })?;
    // dicom-parser's lazy reader can panic on some inputs (see check_value_lengths): a data
    // set the depth walk cannot follow is refused, since the recursive parser would be left
    // unguarded
    let walk = std::panic::AssertUnwindSafe(|| {
        pacs_dimse::nesting::check_sequence_depth(
            source,
            ts,
            pacs_dimse::nesting::MAX_SEQUENCE_DEPTH,
        )
        .map_err(|e| ParseError::Unreadable(e.to_string()))
    });
    IN_WALK.with(|w| w.set(true));
    let checked = std::panic::catch_unwind(walk).unwrap_or_else(|_| {
        Err(ParseError::Unreadable(
            "the data set's structure cannot be followed".into(),
        ))
    });
    IN_WALK.with(|w| w.set(false));
    checked
}

/// Checks, before the data set is parsed, that none of its values claims more bytes than
/// follow it. dicom-parser reserves and zero-fills a value's declared length before reading
/// the value: a data set of a few hundred bytes that claims a 3.5 GiB value costs 3.5 GiB of
/// memory before the read fails (found by the ingest fuzz target). The data set (`len` bytes
/// from `source`'s position) is walked as the parser walks it, with dicom-parser's lazy reader,
/// every value and pixel data fragment skipped rather than read; one that would run past the
/// end is refused. So is a data set the walk cannot follow to its end, or on which the lazy
/// reader panics (dicom-parser 0.10.1 has an `expect` that input can reach, lazy_read.rs: "item
/// header should be read only inside an existing sequence"): the parser, more lenient, would
/// go on past the point the walk checked and could meet the oversized value there (both found
/// by the ingest fuzz target).
pub fn check_value_lengths<R: Read + Seek>(
    source: R,
    transfer_syntax_uid: &str,
    len: u64,
) -> Result<(), ParseError> {
    let walk =
        std::panic::AssertUnwindSafe(|| walk_value_lengths(source, transfer_syntax_uid, len));
    IN_WALK.with(|w| w.set(true));
    let checked = std::panic::catch_unwind(walk).unwrap_or_else(|_| {
        Err(ParseError::Unreadable(
            "the data set's structure cannot be followed".into(),
        ))
    });
    IN_WALK.with(|w| w.set(false));
    checked
}

thread_local! {
    static IN_WALK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`check_value_lengths`] or [`check_nesting`], where a panic is caught: the fuzz
/// targets' panic hook lets those unwind instead of aborting.
#[doc(hidden)]
pub fn in_contained_walk() -> bool {
    IN_WALK.with(|w| w.get())
}

fn walk_value_lengths<R: Read + Seek>(
    mut source: R,
    transfer_syntax_uid: &str,
    len: u64,
) -> Result<(), ParseError> {
    use dicom_parser::dataset::lazy_read::LazyDataSetReader;
    use dicom_parser::dataset::LazyDataToken;
    let Some(ts) = TransferSyntaxRegistry.get(transfer_syntax_uid) else {
        return Ok(());
    };
    // the decoder counts positions in the source, from where it stands now
    let Ok(start) = source.stream_position() else {
        return Ok(());
    };
    let end = start.saturating_add(len);
    let Ok(mut reader) = LazyDataSetReader::new_with_ts(source, ts) else {
        return Ok(());
    };
    let unreadable = |e: &dyn std::fmt::Display| {
        ParseError::Unreadable(format!("cannot be read to its end: {e}"))
    };
    // open sequences and items: a delimiter with nothing open is refused (the eager reader,
    // which WADO-RS reads stored objects with, loses its place on one; found by the dicom_json
    // fuzz target)
    let mut open: u32 = 0;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| unreadable(&e))?;
        match &token {
            LazyDataToken::SequenceStart { .. }
            | LazyDataToken::PixelSequenceStart
            | LazyDataToken::ItemStart { .. } => open += 1,
            LazyDataToken::ItemEnd | LazyDataToken::SequenceEnd => {
                open = open.checked_sub(1).ok_or_else(|| {
                    ParseError::Unreadable("a delimitation item outside any sequence".into())
                })?;
            }
            _ => {}
        }
        let (value_len, position) = match &token {
            LazyDataToken::LazyValue { header, decoder } => {
                // PS3.5 6.2: a binary VR's value is a whole number of its fixed-size numbers.
                // dicom-parser reads the whole numbers of any other length and loses its place
                // in the data set by the rest (found by the ingest fuzz target: an FL of 10
                // bytes made it read an 808 MB "value" out of the next element's bytes).
                if let Some(size) = binary_value_size(header.vr) {
                    if !header.len.is_undefined() && header.len.0 % size != 0 {
                        return Err(ParseError::Unreadable(format!(
                            "{} {:?} has a length of {} bytes, not a multiple of {size}",
                            header.tag, header.vr, header.len.0
                        )));
                    }
                }
                (header.len.0, decoder.position())
            }
            LazyDataToken::LazyItemValue { len, decoder } => (*len, decoder.position()),
            _ => continue,
        };
        if u64::from(value_len) > end.saturating_sub(position) {
            return Err(ParseError::Truncated(format!(
                "a value of {value_len} bytes at offset {position} runs past the end of the data ({end} bytes)"
            )));
        }
        token.skip().map_err(|e| unreadable(&e))?;
    }
    Ok(())
}

/// The size of the numbers a binary VR's value is made of (PS3.5 6.2).
fn binary_value_size(vr: dicom_core::VR) -> Option<u32> {
    use dicom_core::VR::*;
    match vr {
        SS | US | OW => Some(2),
        FL | SL | UL | AT | OF | OL => Some(4),
        FD | OD | SV | UV | OV => Some(8),
        _ => None,
    }
}

fn tag_u32(t: Tag) -> u32 {
    ((t.0 as u32) << 16) | t.1 as u32
}

/// The parsed data set, as the index's attribute declaration reads it.
struct DataSet<'a>(&'a InMemDicomObject);

impl AttributeSource for DataSet<'_> {
    fn text(&self, tag: u32) -> String {
        self.0
            .get(Tag((tag >> 16) as u16, tag as u16))
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
            .unwrap_or_default()
    }

    fn int(&self, tag: u32) -> Option<i32> {
        self.0
            .get(Tag((tag >> 16) as u16, tag as u16))
            .filter(|e| !e.is_empty())
            .and_then(|e| e.to_int::<i32>().ok())
    }
}

fn parsed_from(obj: InMemDicomObject, ts: String) -> Result<Parsed, ParseError> {
    let source = DataSet(&obj);
    let mut record = InstanceRecord::default();
    record.read_attributes(&source);
    // the transfer syntax is the file meta group's (or the association's), not the data set's
    record.transfer_syntax_uid = ts;
    let int = |tag: Tag| source.int(tag_u32(tag));
    let bits_allocated = record.bits_allocated;
    let samples = int(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    let native_frame_length = match (record.rows, record.columns, bits_allocated) {
        // values from the data set: checked, a product that does not fit is no frame length
        (Some(r), Some(c), Some(b)) if b > 0 && b % 8 == 0 && r > 0 && c > 0 => (r as u64)
            .checked_mul(c as u64)
            .and_then(|n| n.checked_mul(samples.max(1) as u64))
            .and_then(|n| n.checked_mul((b / 8) as u64)),
        _ => None,
    };
    // an SR's measurements, from the content tree already in memory (no Pixel Data here)
    if super::sr::is_structured_report(&obj, &record.sop_class_uid) {
        record.measurements = super::sr::measurements(&obj);
    }
    Ok(Parsed {
        metadata: metadata_value(&obj)?,
        sop_instance_uid: record.sop_instance_uid.clone(),
        sop_class_uid: record.sop_class_uid.clone(),
        native_frame_length,
        record,
    })
}

/// DICOM JSON of the data set with bulk data replaced by `BulkDataURI`s relative to the
/// instance's WADO-RS URL (`bulkdata/<tag path>`), which the DICOMweb front-end makes absolute.
/// Pixel Data itself was not read; [`Parsed::set_pixel_data`] adds its reference.
pub(crate) fn metadata_value(obj: &InMemDicomObject) -> Result<Value, ParseError> {
    let mut value = dicom_json::to_value(obj).map_err(|e| ParseError::Unreadable(e.to_string()))?;
    replace_bulk(&mut value, "bulkdata");
    // The JSON holds decoded Unicode text, whatever the object's character set was (PS3.18
    // F.2.3): say so.
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "00080005".into(),
            serde_json::json!({"vr": "CS", "Value": ["ISO_IR 192"]}),
        );
    }
    Ok(value)
}

fn replace_bulk(dataset: &mut Value, prefix: &str) {
    let Some(map) = dataset.as_object_mut() else {
        return;
    };
    for (tag, attribute) in map.iter_mut() {
        let Some(attr) = attribute.as_object_mut() else {
            continue;
        };
        let path = format!("{prefix}/{tag}");
        if let Some(Value::String(b64)) = attr.get("InlineBinary") {
            // base64 is 4/3 the size of the data
            if b64.len() * 3 / 4 > BULK_THRESHOLD_BYTES {
                attr.remove("InlineBinary");
                attr.insert("BulkDataURI".into(), Value::String(path.clone()));
            }
        }
        if let Some(Value::Array(items)) = attr.get_mut("Value") {
            for (i, item) in items.iter_mut().enumerate() {
                if item.is_object() {
                    replace_bulk(item, &format!("{path}/{i}"));
                }
            }
        }
    }
}

/// Where the pixel data sits in the stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelDataLocation {
    pub tag: Tag,
    pub vr: VR,
    /// Native pixel data: the value's byte range.
    pub native: Option<(u64, u64)>,
    /// Encapsulated pixel data: the Basic Offset Table and each fragment's value byte range
    /// (item headers excluded).
    pub basic_offset_table: Vec<u32>,
    pub fragments: Vec<(u64, u64)>,
}

/// Walks the top level of the data set, from `dataset_offset` in `source`, to the Pixel Data
/// element and records where its value (or its fragments) are. Returns None when the object
/// has no pixel data. The data set must not be deflated (offsets would be meaningless).
pub fn locate_pixel_data<R: Read>(
    source: R,
    transfer_syntax_uid: &str,
    dataset_offset: u64,
    total_len: u64,
) -> Result<Option<PixelDataLocation>, ParseError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| {
            ParseError::Unreadable(format!("unknown transfer syntax {transfer_syntax_uid}"))
        })?;
    let err = |e: dicom_parser::stateful::decode::Error| ParseError::Unreadable(e.to_string());
    let mut decoder = StatefulDecoder::new_with_ts(source, ts, dataset_offset).map_err(err)?;
    let fits = |start: u64, len: u32| -> Result<(), ParseError> {
        if start.saturating_add(len as u64) > total_len {
            Err(ParseError::Truncated(format!(
                "a value of {len} bytes at offset {start} ends past the end of the data ({total_len} bytes)"
            )))
        } else {
            Ok(())
        }
    };
    loop {
        if decoder.position() >= total_len {
            return Ok(None);
        }
        let header = match decoder.decode_header() {
            Ok(h) => h,
            Err(e) => {
                return Err(ParseError::Truncated(format!("element header: {e}")));
            }
        };
        if header.length().is_defined() {
            fits(decoder.position(), header.length().0)?;
        }
        let is_pixel = matches!(
            header.tag(),
            tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
        );
        if is_pixel {
            if header.length().is_defined() {
                let start = decoder.position();
                return Ok(Some(PixelDataLocation {
                    tag: header.tag(),
                    vr: header.vr(),
                    native: Some((start, header.length().0 as u64)),
                    basic_offset_table: Vec::new(),
                    fragments: Vec::new(),
                }));
            }
            return read_fragments(&mut decoder, header.tag(), header.vr(), total_len).map(Some);
        }
        if header.length().is_defined() {
            decoder.skip_bytes(header.length().0).map_err(err)?;
        } else {
            skip_undefined_sequence(&mut decoder)?;
        }
    }
}

fn read_fragments<D: StatefulDecode>(
    decoder: &mut D,
    tag: Tag,
    vr: VR,
    total_len: u64,
) -> Result<PixelDataLocation, ParseError> {
    use dicom_core::header::SequenceItemHeader;
    let err = |e: dicom_parser::stateful::decode::Error| ParseError::Unreadable(e.to_string());
    let mut location = PixelDataLocation {
        tag,
        vr,
        native: None,
        basic_offset_table: Vec::new(),
        fragments: Vec::new(),
    };
    let mut first = true;
    loop {
        match decoder.decode_item_header().map_err(err)? {
            SequenceItemHeader::Item { len } => {
                if !len.is_defined() {
                    return Err(ParseError::Unreadable(
                        "pixel data fragment of undefined length".into(),
                    ));
                }
                let start = decoder.position();
                if start.saturating_add(len.0 as u64) > total_len {
                    return Err(ParseError::Truncated(format!(
                        "pixel data fragment of {} bytes at offset {start} ends past the end of the data",
                        len.0
                    )));
                }
                if first {
                    // PS3.5 A.4: the first item is the Basic Offset Table.
                    let mut bot = Vec::new();
                    decoder.read_to_vec(len.0, &mut bot).map_err(err)?;
                    location.basic_offset_table = bot
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    first = false;
                } else {
                    location.fragments.push((start, len.0 as u64));
                    decoder.skip_bytes(len.0).map_err(err)?;
                }
            }
            SequenceItemHeader::SequenceDelimiter => return Ok(location),
            SequenceItemHeader::ItemDelimiter => {
                return Err(ParseError::Unreadable(
                    "item delimiter inside encapsulated pixel data".into(),
                ))
            }
        }
    }
}

/// Skips a sequence (or UN) of undefined length, items and nested sequences included.
fn skip_undefined_sequence<D: StatefulDecode>(decoder: &mut D) -> Result<(), ParseError> {
    use dicom_core::header::SequenceItemHeader;
    let err = |e: dicom_parser::stateful::decode::Error| ParseError::Unreadable(e.to_string());
    loop {
        match decoder.decode_item_header().map_err(err)? {
            SequenceItemHeader::Item { len } if len.is_defined() => {
                decoder.skip_bytes(len.0).map_err(err)?
            }
            SequenceItemHeader::Item { .. } => loop {
                let header = decoder.decode_header().map_err(err)?;
                if header.tag() == Tag(0xFFFE, 0xE00D) {
                    break;
                }
                if header.length().is_defined() {
                    decoder.skip_bytes(header.length().0).map_err(err)?;
                } else {
                    skip_undefined_sequence(decoder)?;
                }
            },
            SequenceItemHeader::SequenceDelimiter => return Ok(()),
            SequenceItemHeader::ItemDelimiter => {
                return Err(ParseError::Unreadable("unexpected item delimiter".into()))
            }
        }
    }
}

/// Most frames indexed per instance; beyond, frames are served by decoding the object (a frame
/// count from the data set must not size an allocation by itself).
pub const MAX_INDEXED_FRAMES: u32 = 1 << 20;

/// Byte ranges of each frame: `frames[i]` lists the ranges whose concatenation is frame i+1.
/// Empty when the data set's values do not describe the pixel data (the arithmetic is checked:
/// values that overflow describe nothing).
pub fn frame_ranges(
    pixel: &PixelDataLocation,
    number_of_frames: u32,
    frame_length_native: Option<u64>,
) -> Vec<Vec<(u64, u64)>> {
    if number_of_frames > MAX_INDEXED_FRAMES {
        return Vec::new();
    }
    let n = number_of_frames.max(1) as usize;
    if let Some((start, len)) = pixel.native {
        let Some(frame_len) = frame_length_native.filter(|l| *l > 0) else {
            return if n == 1 {
                vec![vec![(start, len)]]
            } else {
                Vec::new()
            };
        };
        if frame_len.checked_mul(n as u64).is_none_or(|all| all > len) {
            return Vec::new();
        }
        // start + n * frame_len <= start + len: no step below can overflow
        return (0..n as u64)
            .map(|i| vec![(start + i * frame_len, frame_len)])
            .collect();
    }
    let fragments = &pixel.fragments;
    if fragments.is_empty() {
        return Vec::new();
    }
    if n == 1 {
        return vec![fragments.clone()];
    }
    if fragments.len() == n {
        return fragments.iter().map(|f| vec![*f]).collect();
    }
    // Several fragments per frame: the Basic Offset Table says where each frame's first item
    // starts, measured from the first fragment's item header (PS3.5 A.4).
    let bot = &pixel.basic_offset_table;
    if bot.len() != n {
        return Vec::new();
    }
    // each fragment's value follows its 8-byte item header
    let Some(base) = fragments[0].0.checked_sub(8) else {
        return Vec::new();
    };
    let mut frames: Vec<Vec<(u64, u64)>> = vec![Vec::new(); n];
    for &(start, len) in fragments {
        let Some(item_offset) = start.checked_sub(8).and_then(|s| s.checked_sub(base)) else {
            return Vec::new();
        };
        let frame = bot
            .iter()
            .rposition(|&o| o as u64 <= item_offset)
            .unwrap_or(0);
        frames[frame].push((start, len));
    }
    if frames.iter().any(|f| f.is_empty()) {
        return Vec::new();
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(fragments: Vec<(u64, u64)>, bot: Vec<u32>) -> PixelDataLocation {
        PixelDataLocation {
            tag: tags::PIXEL_DATA,
            vr: VR::OB,
            native: None,
            basic_offset_table: bot,
            fragments,
        }
    }

    /// Found by the ingest fuzz target: pydicom's UN_sequence.dcm read as Explicit VR Little
    /// Endian; the parser took an item tag for a value length and zero-filled 3.5 GiB for it.
    #[test]
    fn a_value_longer_than_the_data_is_refused_before_parsing() {
        use std::io::Cursor;
        let ts = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
        // (0008,0016) UI, 4 bytes; then (0009,0010) OB claiming 0xE000FFFE bytes
        let mut data = vec![
            0x08, 0x00, 0x16, 0x00, b'U', b'I', 4, 0, b'1', b'.', b'2', 0,
        ];
        data.extend_from_slice(&[0x09, 0x00, 0x10, 0x00, b'O', b'B', 0, 0]);
        data.extend_from_slice(&0xE000_FFFEu32.to_le_bytes());
        data.extend_from_slice(b"abcd");
        let len = data.len() as u64;
        let err = check_value_lengths(Cursor::new(&data), ts, len).unwrap_err();
        assert!(matches!(err, ParseError::Truncated(_)), "{err}");
        // a value that fits passes; an object the walk cannot follow to its end is refused
        let n = data.len();
        data[n - 8..n - 4].copy_from_slice(&4u32.to_le_bytes());
        check_value_lengths(Cursor::new(&data), ts, len).unwrap();
        assert!(check_value_lengths(Cursor::new(b"\x08\x00\x16\x00UI\x04"), ts, 7).is_err());
        // (one on which dicom-parser's lazy reader panics is in fuzz/regressions/ingest/,
        // replayed by crate::fuzzing's tests)
        // the deflated path checks the inflated data set
        let mut deflated = Vec::new();
        {
            use std::io::Write;
            data[n - 8..n - 4].copy_from_slice(&0xE000_FFFEu32.to_le_bytes());
            let mut encoder =
                flate2::write::DeflateEncoder::new(&mut deflated, flate2::Compression::fast());
            encoder.write_all(&data).unwrap();
            encoder.finish().unwrap();
        }
        let uid = dicom_dictionary_std::uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN;
        assert!(matches!(
            parse_deflated(&deflated[..], uid, 1 << 20),
            Err(ParseError::Truncated(_))
        ));
    }

    /// Found by the ingest fuzz target: an FL of 10 bytes. dicom-parser reads two floats and
    /// takes the last two bytes for the start of the next element, whose "length" it then
    /// zero-fills (808 MB from a 6 KB data set). PS3.5 6.2 allows only whole numbers.
    #[test]
    fn a_binary_value_of_a_partial_number_is_refused() {
        use std::io::Cursor;
        let ts = dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN;
        let mut data = vec![0x18, 0x00, 0x00, 0x11, b'F', b'L', 10, 0];
        data.extend_from_slice(b"0000001099");
        data.extend_from_slice(&[0x18, 0x00, 0x10, 0x11, b'D', b'S', 2, 0, b'1', b' ']);
        let err = check_value_lengths(Cursor::new(&data), ts, data.len() as u64).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 4"), "{err}");
        data[6] = 8;
        data.drain(16..18);
        check_value_lengths(Cursor::new(&data), ts, data.len() as u64).unwrap();
    }

    /// Found by the dicom_json fuzz target: an item delimitation and a sequence delimitation
    /// with no sequence open (Implicit VR Little Endian). The eager reader loses its place on
    /// them and zero-fills 2 GB for what follows.
    #[test]
    fn a_delimiter_outside_any_sequence_is_refused() {
        use std::io::Cursor;
        let ts = dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/dicom_json/oom-d07ee2b69abe2da1892914252e83e10db3c54f68"
        );
        let input = std::fs::read(path).unwrap();
        let data = &input[1..];
        let err = check_value_lengths(Cursor::new(data), ts, data.len() as u64).unwrap_err();
        assert!(err.to_string().contains("outside any sequence"), "{err}");
        // a sequence with its delimiters passes
        let mut good = vec![0x08, 0x00, 0x15, 0x11, 0xff, 0xff, 0xff, 0xff];
        good.extend_from_slice(&[0xfe, 0xff, 0x00, 0xe0, 0xff, 0xff, 0xff, 0xff]);
        good.extend_from_slice(&[0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0]);
        good.extend_from_slice(&[0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
        check_value_lengths(Cursor::new(&good), ts, good.len() as u64).unwrap();
    }

    #[test]
    fn native_frames_are_consecutive() {
        let px = PixelDataLocation {
            native: Some((1000, 300)),
            ..location(vec![], vec![])
        };
        assert_eq!(
            frame_ranges(&px, 3, Some(100)),
            vec![vec![(1000, 100)], vec![(1100, 100)], vec![(1200, 100)]]
        );
        assert!(frame_ranges(&px, 4, Some(100)).is_empty());
        // values that overflow describe nothing (rather than wrap into a small length)
        assert!(frame_ranges(&px, 3, Some(u64::MAX / 2)).is_empty());
        assert!(frame_ranges(&px, MAX_INDEXED_FRAMES + 1, Some(1)).is_empty());
    }

    #[test]
    fn fragments_before_their_item_header_describe_nothing() {
        // a fragment "starting" at 4 cannot follow an 8-byte item header
        let px = location(vec![(4, 10), (30, 4), (50, 6)], vec![0, 30]);
        assert!(frame_ranges(&px, 2, None).is_empty());
    }

    #[test]
    fn one_fragment_per_frame_and_multi_fragment_frames() {
        let px = location(vec![(108, 10), (126, 20)], vec![]);
        assert_eq!(
            frame_ranges(&px, 2, None),
            vec![vec![(108, 10)], vec![(126, 20)]]
        );
        assert_eq!(frame_ranges(&px, 1, None), vec![vec![(108, 10), (126, 20)]]);
        // three fragments, two frames; BOT: frame 2 starts at the third item
        // items: header at 100 (len 10), 118 (len 4), 130 (len 6)
        let px = location(vec![(108, 10), (126, 4), (138, 6)], vec![0, 30]);
        assert_eq!(
            frame_ranges(&px, 2, None),
            vec![vec![(108, 10), (126, 4)], vec![(138, 6)]]
        );
    }
}
