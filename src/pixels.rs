//! Pixel data services for WADO-RS (PS3.18 10.4): decoding stored pixel data in any supported
//! transfer syntax, transcoding whole Part 10 objects to Explicit VR Little Endian, extracting
//! single frames as native pixel data, and rendering frames to JPEG or PNG (dicom-rs based).

use dicom_dictionary_std::uids;
use std::borrow::Cow;

use dicom_core::{DataElement, DicomValue, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{PixelDecoder, Transcode};
use dicom_transfer_syntax_registry::entries::{EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

mod jpeg12;
mod render;
mod rle;
#[cfg(test)]
mod tests;

pub use render::{render, ImageFormat, RenderOptions};

/// Why a pixel data operation failed. The messages are meant to be sent to clients as the body
/// of an HTTP error response; [`PixelError::http_status`] suggests the status code.
#[derive(Debug, thiserror::Error)]
pub enum PixelError {
    /// The input is not a readable DICOM Part 10 object.
    #[error("not a readable DICOM Part 10 object: {0}")]
    Parse(String),
    /// The object has no Pixel Data.
    #[error("the object is not an image: it has no Pixel Data (7FE0,0010)")]
    NotAnImage,
    /// The pixel data is stored in a transfer syntax this node cannot decode.
    #[error("pixel data in transfer syntax {0} cannot be decoded by this server")]
    UnsupportedTransferSyntax(String),
    /// The stored pixel data could not be decoded.
    #[error("could not decode the pixel data: {0}")]
    Decode(String),
    /// The result could not be encoded (DICOM, JPEG or PNG).
    #[error("could not encode the result: {0}")]
    Encode(String),
    /// The requested frame (1-based) does not exist.
    #[error("frame {frame} does not exist: the object has {frames} frame(s), numbered from 1")]
    FrameOutOfRange { frame: u32, frames: u32 },
    /// A request parameter is invalid (window width, viewport, quality...).
    #[error("invalid request parameter: {0}")]
    InvalidArgument(String),
}

impl PixelError {
    /// Suggested HTTP status for this error in a WADO-RS response: 400 for bad parameters and
    /// non-image objects, 404 for a missing frame, 406 when the stored transfer syntax cannot be
    /// decoded (so no acceptable representation exists), 500 for a broken stored object or an
    /// encoder failure.
    pub fn http_status(&self) -> u16 {
        match self {
            PixelError::InvalidArgument(_) | PixelError::NotAnImage => 400,
            PixelError::FrameOutOfRange { .. } => 404,
            PixelError::UnsupportedTransferSyntax(_) => 406,
            PixelError::Parse(_) | PixelError::Decode(_) | PixelError::Encode(_) => 500,
        }
    }
}

/// Error text including the whole `source()` chain (dicom-rs errors put the detail there).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn decode_err(e: impl std::error::Error) -> PixelError {
    PixelError::Decode(chain(&e))
}

fn encode_err(e: impl std::error::Error) -> PixelError {
    PixelError::Encode(chain(&e))
}

/// Runs `f`, turning a panic inside a codec (they do panic on some corrupt input) into
/// [`PixelError::Decode`] so that one bad object cannot take a request handler down.
fn guard<T>(f: impl FnOnce() -> Result<T, PixelError>) -> Result<T, PixelError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".to_string());
        Err(PixelError::Decode(format!("codec failure: {text}")))
    })
}

fn trim_uid(uid: &str) -> &str {
    uid.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// JPIP transfer syntaxes reference pixel data by URL instead of carrying it.
fn is_jpip(uid: &str) -> bool {
    matches!(
        uid,
        uids::JPIP_REFERENCED
            | uids::JPIP_REFERENCED_DEFLATE
            | uids::JPIPHTJ2K_REFERENCED
            | uids::JPIPHTJ2K_REFERENCED_DEFLATE
    )
}

/// Whether pixel data in this transfer syntax can be decoded here.
///
/// Answered from the dicom-rs transfer syntax registry, so it follows the codec features compiled
/// in: implicit/explicit VR LE, explicit BE, deflated, encapsulated uncompressed, JPEG .50 .51
/// .57 .70 (12-bit .51 through libjpeg-turbo), RLE (32-bit samples decoded here), JPEG 2000 and
/// HTJ2K (`openjp2`), JPEG-LS (`charls`). JPIP (pixel data by reference), video and JPEG XL: false.
pub fn can_decode(transfer_syntax_uid: &str) -> bool {
    let uid = trim_uid(transfer_syntax_uid);
    if is_jpip(uid) {
        return false;
    }
    TransferSyntaxRegistry
        .get(uid)
        .is_some_and(|ts| ts.can_decode_all())
}

// ---------------------------------------------------------------------------------------------
// Reading objects and their image attributes
// ---------------------------------------------------------------------------------------------

/// Parses a Part 10 object held in memory (with or without the 128-byte preamble).
fn open(part10: &[u8]) -> Result<DefaultDicomObject, PixelError> {
    let mut obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Auto)
        .from_reader(part10)
        .map_err(|e| PixelError::Parse(chain(&e)))?;
    if transfer_syntax(&obj) == EXPLICIT_VR_BIG_ENDIAN.uid() {
        fix_big_endian_wide_samples(&mut obj)?;
    }
    Ok(obj)
}

fn transfer_syntax(obj: &DefaultDicomObject) -> String {
    trim_uid(obj.meta().transfer_syntax()).to_string()
}

fn int_attr(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn required_u16(obj: &DefaultDicomObject, tag: Tag, name: &str) -> Result<u16, PixelError> {
    let value = int_attr(obj, tag)
        .ok_or_else(|| PixelError::Decode(format!("{name} is missing or invalid")))?;
    u16::try_from(value).map_err(|_| PixelError::Decode(format!("{name} {value} is invalid")))
}

/// The attributes of the Image Pixel module that locate frames in the pixel data.
#[derive(Debug, Clone)]
struct ImageInfo {
    rows: u32,
    columns: u32,
    samples_per_pixel: u32,
    bits_allocated: u32,
    frames: u32,
    photometric: String,
    /// stored Planar Configuration is 1 (colour by plane)
    planar: bool,
}

impl ImageInfo {
    fn read(obj: &DefaultDicomObject) -> Result<Self, PixelError> {
        if obj.get(tags::PIXEL_DATA).is_none() {
            return Err(PixelError::NotAnImage);
        }
        let rows = required_u16(obj, tags::ROWS, "Rows")?;
        let columns = required_u16(obj, tags::COLUMNS, "Columns")?;
        let bits_allocated = required_u16(obj, tags::BITS_ALLOCATED, "Bits Allocated")?;
        let samples_per_pixel = match obj.get(tags::SAMPLES_PER_PIXEL) {
            Some(_) => required_u16(obj, tags::SAMPLES_PER_PIXEL, "Samples per Pixel")?,
            None => 1,
        };
        if rows == 0 || columns == 0 || samples_per_pixel == 0 {
            return Err(PixelError::Decode(
                "Rows, Columns and Samples per Pixel must be positive".to_string(),
            ));
        }
        if !matches!(bits_allocated, 1 | 8 | 16 | 32) {
            return Err(PixelError::Decode(format!(
                "Bits Allocated {bits_allocated} is not supported (1, 8, 16 or 32)"
            )));
        }
        let frames = match obj.get(tags::NUMBER_OF_FRAMES) {
            None => 1,
            Some(e) => match e.to_int::<i64>() {
                Ok(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
                // an empty or zero Number of Frames is read as a single frame
                Ok(_) => 1,
                Err(_) if e.to_str().map(|s| s.trim().is_empty()).unwrap_or(false) => 1,
                Err(_) => {
                    return Err(PixelError::Decode(
                        "Number of Frames (0028,0008) is not an integer".to_string(),
                    ))
                }
            },
        };
        let planar = samples_per_pixel > 1 && int_attr(obj, tags::PLANAR_CONFIGURATION) == Some(1);
        let photometric = obj
            .get(tags::PHOTOMETRIC_INTERPRETATION)
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_else(|| "MONOCHROME2".to_string());
        Ok(ImageInfo {
            rows: rows.into(),
            columns: columns.into(),
            samples_per_pixel: samples_per_pixel.into(),
            bits_allocated: bits_allocated.into(),
            frames,
            photometric,
            planar,
        })
    }

    /// Size in bits of one frame of native pixel data (YBR_FULL_422 is stored subsampled).
    /// The values come from the data set: the arithmetic is checked.
    fn native_frame_bits(&self) -> Result<u64, PixelError> {
        let pixels = u64::from(self.rows).checked_mul(u64::from(self.columns));
        let samples = if self.photometric == "YBR_FULL_422" && self.samples_per_pixel == 3 {
            pixels.and_then(|p| p.checked_mul(2))
        } else {
            pixels.and_then(|p| p.checked_mul(u64::from(self.samples_per_pixel)))
        };
        samples
            .and_then(|s| s.checked_mul(u64::from(self.bits_allocated)))
            .ok_or_else(|| self.too_large())
    }

    /// Size in bytes of one frame as decoders deliver it (all samples, interleaved): refused
    /// past [`MAX_FRAME_BYTES`], before a decoder allocates it.
    fn decoded_frame_len(&self) -> Result<usize, PixelError> {
        (self.rows as usize)
            .checked_mul(self.columns as usize)
            .and_then(|n| n.checked_mul(self.samples_per_pixel as usize))
            .and_then(|n| n.checked_mul(self.bits_allocated.div_ceil(8) as usize))
            .filter(|n| *n <= MAX_FRAME_BYTES)
            .ok_or_else(|| self.too_large())
    }

    fn too_large(&self) -> PixelError {
        PixelError::Decode(format!(
            "a frame of {} x {} x {} samples of {} bits is larger than {MAX_FRAME_BYTES} bytes",
            self.rows, self.columns, self.samples_per_pixel, self.bits_allocated
        ))
    }

    /// 0-based index of the 1-based `frame`.
    fn frame_index(&self, frame: u32) -> Result<u32, PixelError> {
        if frame == 0 || frame > self.frames {
            return Err(PixelError::FrameOutOfRange {
                frame,
                frames: self.frames,
            });
        }
        Ok(frame - 1)
    }
}

/// Fails with `UnsupportedTransferSyntax` unless the object's pixel data can be decoded.
fn ensure_decodable(obj: &DefaultDicomObject) -> Result<(), PixelError> {
    let uid = transfer_syntax(obj);
    if can_decode(&uid) {
        return Ok(());
    }
    let name = TransferSyntaxRegistry
        .get(&uid)
        .map(|ts| format!(" ({})", ts.name()))
        .unwrap_or_default();
    Err(PixelError::UnsupportedTransferSyntax(format!(
        "{uid}{name}"
    )))
}

fn is_encapsulated(obj: &DefaultDicomObject) -> bool {
    matches!(
        obj.get(tags::PIXEL_DATA).map(|e| e.value()),
        Some(DicomValue::PixelSequence(_))
    )
}

/// Whether frames of this object are decoded here rather than by dicom-pixeldata, which lacks
/// 12-bit lossy JPEG (jpeg-decoder does 8-bit lossy only) and 32-bit RLE.
fn own_decoder(obj: &DefaultDicomObject, info: &ImageInfo) -> bool {
    is_encapsulated(obj)
        && match transfer_syntax(obj).as_str() {
            uids::JPEG_EXTENDED12_BIT => info.bits_allocated == 16,
            uids::RLE_LOSSLESS => info.bits_allocated == 32,
            _ => false,
        }
}

/// The compressed bytes of frame `index` (0-based) of encapsulated pixel data.
fn encapsulated_frame(
    obj: &DefaultDicomObject,
    frames: u32,
    index: u32,
) -> Result<Vec<u8>, PixelError> {
    let Some(DicomValue::PixelSequence(seq)) = obj.get(tags::PIXEL_DATA).map(|e| e.value()) else {
        return Err(PixelError::Decode("Pixel Data is not encapsulated".into()));
    };
    let fragments = seq.fragments();
    let offsets = seq.offset_table();
    if fragments.len() == frames as usize {
        return Ok(fragments[index as usize].to_vec());
    }
    if frames == 1 {
        return Ok(fragments.iter().flatten().copied().collect());
    }
    if offsets.len() != frames as usize {
        return Err(PixelError::Decode(format!(
            "{} fragments for {frames} frames and no usable Basic Offset Table",
            fragments.len()
        )));
    }
    // offsets count from the first fragment item, 8 bytes of item header each
    let start = u64::from(offsets[index as usize]);
    let end = offsets
        .get(index as usize + 1)
        .map_or(u64::MAX, |&o| u64::from(o));
    let mut position = 0u64;
    let mut out = Vec::new();
    for fragment in fragments {
        if position >= start && position < end {
            out.extend_from_slice(fragment);
        }
        position += 8 + fragment.len() as u64;
    }
    Ok(out)
}

/// The raw bytes of native pixel data, little endian (as dicom-rs holds values in memory on
/// little-endian hosts, whatever the stored byte order).
fn native_pixel_bytes(obj: &DefaultDicomObject) -> Result<Cow<'_, [u8]>, PixelError> {
    let elem = obj.get(tags::PIXEL_DATA).ok_or(PixelError::NotAnImage)?;
    match elem.value() {
        DicomValue::Primitive(p) => Ok(p.to_bytes()),
        _ => Err(PixelError::Decode(
            "Pixel Data is not a native pixel data value".to_string(),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Transcoding
// ---------------------------------------------------------------------------------------------

/// Re-encodes a whole Part 10 object in Explicit VR Little Endian (decoding compressed pixel data
/// if needed). Input and output are complete Part 10 files (preamble, meta, data set).
///
/// Native pixel data keeps its layout (planar configuration, YBR_FULL_422 subsampling). Decoded
/// compressed pixel data is written as the codec delivers it (see [`decode_frame`]): samples
/// interleaved (Planar Configuration set to 0), JPEG / JPEG 2000 colour converted to RGB
/// (Photometric Interpretation set to RGB), RLE and JPEG-LS colour left as stored, 8-bit samples
/// as OB, wider samples as OW. Lossy Image Compression is set to "01" when decoding JPEG
/// baseline/extended data that did not say so already.
pub fn transcode_to_explicit_le(part10: &[u8]) -> Result<Vec<u8>, PixelError> {
    guard(|| {
        let mut obj = open(part10)?;
        let source_ts = transfer_syntax(&obj);
        if source_ts == EXPLICIT_VR_LITTLE_ENDIAN.uid() {
            // already there: hand back the stored bytes, with a preamble if it had none
            if part10.get(128..132) == Some(b"DICM".as_slice()) {
                return Ok(part10.to_vec());
            }
            let mut out = vec![0u8; 128];
            out.extend_from_slice(part10);
            return Ok(out);
        }
        if TransferSyntaxRegistry.get(&source_ts).is_none() {
            return Err(PixelError::UnsupportedTransferSyntax(source_ts));
        }
        if is_encapsulated(&obj) {
            let info = ImageInfo::read(&obj)?;
            ensure_decodable(&obj)?;
            let photometric = obj.get(tags::PHOTOMETRIC_INTERPRETATION).cloned();
            if matches!(info.bits_allocated, 8 | 16) && !own_decoder(&obj, &info) {
                obj.transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased())
                    .map_err(decode_err)?;
            } else {
                // what dicom-pixeldata's transcoder cannot decode, frame by frame
                decode_inline(&mut obj, &info)?;
            }
            // dicom-pixeldata relabels decoded data MONOCHROME2 (unless MONOCHROME1) or RGB;
            // single samples keep their meaning (PALETTE COLOR stays), and so does colour from
            // the RLE and JPEG-LS decoders, which do not convert YCbCr
            if info.samples_per_pixel == 1 || keeps_stored_colour(&source_ts) {
                if let Some(pi) = photometric {
                    obj.put(pi);
                }
            }
            tidy_after_decoding(&mut obj, &info, &source_ts)?;
        }
        obj.update_meta(|meta| meta.set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN));

        let mut out = Vec::with_capacity(part10.len() + part10.len() / 4 + 1024);
        obj.write_all(&mut out).map_err(encode_err)?;
        Ok(out)
    })
}

/// Transfer syntaxes whose decoders deliver colour samples in the stored photometric
/// interpretation (no YCbCr to RGB conversion).
fn keeps_stored_colour(transfer_syntax_uid: &str) -> bool {
    matches!(
        transfer_syntax_uid,
        uids::RLE_LOSSLESS | uids::JPEGLS_LOSSLESS | uids::JPEGLS_NEAR_LOSSLESS
    )
}

/// Replaces encapsulated pixel data by its decoded form, frame by frame.
fn decode_inline(obj: &mut DefaultDicomObject, info: &ImageInfo) -> Result<(), PixelError> {
    // no capacity up front: Number of Frames comes from the object and may be wrong
    let mut data = Vec::new();
    for index in 0..info.frames {
        data.extend_from_slice(&decode_frame_bytes(obj, info, index)?);
    }
    obj.put(native_pixel_data(data, info));
    if info.samples_per_pixel == 3 {
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "RGB",
        ));
    }
    Ok(())
}

/// A native Pixel Data element holding `data` (little-endian samples).
fn native_pixel_data(
    mut data: Vec<u8>,
    info: &ImageInfo,
) -> DataElement<dicom_object::InMemDicomObject> {
    if info.bits_allocated <= 8 {
        if data.len() % 2 == 1 {
            data.push(0);
        }
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(data.into()))
    } else {
        let words: Vec<u16> = data
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into()))
    }
}

/// A copy of `obj` holding only frame `index` (0-based), decoded here, as native Explicit VR
/// Little Endian pixel data, for dicom-pixeldata to render.
fn native_single_frame(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    index: u32,
) -> Result<DefaultDicomObject, PixelError> {
    let data = decode_frame_bytes(obj, info, index)?;
    let mut copy = obj.clone();
    copy.put(native_pixel_data(data, info));
    if copy.get(tags::NUMBER_OF_FRAMES).is_some() {
        copy.put(DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, "1"));
    }
    if info.samples_per_pixel == 3 {
        copy.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ));
        if !keeps_stored_colour(&transfer_syntax(obj)) {
            copy.put(DataElement::new(
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "RGB",
            ));
        }
    }
    copy.update_meta(|meta| meta.set_transfer_syntax(&EXPLICIT_VR_LITTLE_ENDIAN));
    Ok(copy)
}

/// Puts attributes right after encapsulated pixel data was replaced by its decoded form.
fn tidy_after_decoding(
    obj: &mut DefaultDicomObject,
    info: &ImageInfo,
    source_ts: &str,
) -> Result<(), PixelError> {
    // 8-bit samples: OB, even length (dicom-pixeldata writes them as OW)
    if info.bits_allocated <= 8 {
        let mut bytes = native_pixel_bytes(obj)?.into_owned();
        if bytes.len() % 2 == 1 {
            bytes.push(0);
        }
        let len = bytes.len() as u32;
        obj.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::defined(len),
            PrimitiveValue::U8(bytes.into()),
        ));
    }
    // decoders deliver interleaved samples
    if info.samples_per_pixel > 1 {
        obj.put(DataElement::new(
            tags::PLANAR_CONFIGURATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ));
    }
    // attributes that only describe encapsulated pixel data; an icon (type 3) would still be
    // encapsulated in the old transfer syntax
    for tag in [
        tags::EXTENDED_OFFSET_TABLE,
        tags::EXTENDED_OFFSET_TABLE_LENGTHS,
        tags::ENCAPSULATED_PIXEL_DATA_VALUE_TOTAL_LENGTH,
        tags::ICON_IMAGE_SEQUENCE,
    ] {
        obj.remove_element(tag);
    }
    // JPEG baseline / extended are always lossy: keep that fact once the data is native
    let always_lossy = matches!(
        source_ts,
        uids::JPEG_BASELINE8_BIT | uids::JPEG_EXTENDED12_BIT
    );
    if always_lossy && obj.get(tags::LOSSY_IMAGE_COMPRESSION).is_none() {
        obj.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION,
            VR::CS,
            "01",
        ));
    }
    Ok(())
}

/// In Explicit VR Big Endian, pixel data with 32-bit samples is normally encoded as OW, which
/// dicom-rs reads as 16-bit words; put the words of each sample back in little-endian order so
/// that the in-memory bytes are the samples' little-endian encoding (as they are for 8 and 16
/// bits).
fn fix_big_endian_wide_samples(obj: &mut DefaultDicomObject) -> Result<(), PixelError> {
    if int_attr(obj, tags::BITS_ALLOCATED) != Some(32) {
        return Ok(());
    }
    let Some(elem) = obj.get(tags::PIXEL_DATA) else {
        return Ok(());
    };
    let fixed: Vec<u32> = match elem.value() {
        DicomValue::Primitive(PrimitiveValue::U16(words)) => words
            .chunks(2)
            .map(|w| (u32::from(w[0]) << 16) | u32::from(*w.get(1).unwrap_or(&0)))
            .collect(),
        DicomValue::Primitive(PrimitiveValue::U8(bytes)) => bytes
            .chunks(4)
            .map(|b| {
                let mut be = [0u8; 4];
                be[..b.len()].copy_from_slice(b);
                u32::from_be_bytes(be)
            })
            .collect(),
        _ => return Ok(()),
    };
    let words: Vec<u16> = fixed
        .iter()
        .flat_map(|v| [(*v & 0xFFFF) as u16, (*v >> 16) as u16])
        .collect();
    let len = words.len() as u32 * 2;
    obj.put(DataElement::new_with_len(
        tags::PIXEL_DATA,
        VR::OW,
        Length::defined(len),
        PrimitiveValue::U16(words.into()),
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

/// One frame (1-based) as native pixel data, exactly as it would appear in an Explicit VR Little
/// Endian Pixel Data value for that frame (little endian samples), i.e. the bytes of that frame
/// in the output of [`transcode_to_explicit_le`]:
///
/// * stored native: the stored layout is kept: the object's Planar Configuration, YBR_FULL_422
///   kept subsampled (2 samples per pixel), 1-bit frames packed 8 pixels a byte (LSB first);
/// * stored compressed: as the codec decodes it, samples interleaved (planar configuration 0),
///   `Bits Allocated` wide; colour in RGB for JPEG and JPEG 2000 (their decoders convert YCbCr),
///   in the stored photometric interpretation for RLE and JPEG-LS.
pub fn decode_frame(part10: &[u8], frame: u32) -> Result<Vec<u8>, PixelError> {
    guard(|| {
        let obj = open(part10)?;
        let info = ImageInfo::read(&obj)?;
        let index = info.frame_index(frame)?;
        decode_frame_bytes(&obj, &info, index)
    })
}

/// The largest decoded frame: Rows and Columns from a data set (up to 65535 each) must not
/// make a decoder allocate gigabytes for a frame of a few bytes.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// Frame `index` (0-based) as native little-endian bytes (see [`decode_frame`]).
fn decode_frame_bytes(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    index: u32,
) -> Result<Vec<u8>, PixelError> {
    let expected = info.decoded_frame_len()?;
    if !is_encapsulated(obj) {
        let data = native_pixel_bytes(obj)?;
        return native_frame(&data, info, index);
    }
    ensure_decodable(obj)?;
    let mut data = if own_decoder(obj, info) {
        if transfer_syntax(obj) == uids::RLE_LOSSLESS {
            rle::decode_frame(obj, info, index)?
        } else {
            jpeg12::decode(&encapsulated_frame(obj, info.frames, index)?, info)?
        }
    } else {
        obj.decode_pixel_data_frame(index)
            .map_err(decode_err)?
            .into_data()
    };
    if data.len() < expected {
        return Err(PixelError::Decode(format!(
            "frame {} decoded to {} bytes, {expected} expected",
            index + 1,
            data.len()
        )));
    }
    data.truncate(expected);
    Ok(data)
}

/// Cuts frame `index` (0-based) out of native pixel data.
fn native_frame(data: &[u8], info: &ImageInfo, index: u32) -> Result<Vec<u8>, PixelError> {
    let frame_bits = info.native_frame_bits()?;
    let end_bit = frame_bits
        .checked_mul(u64::from(index) + 1)
        .ok_or_else(|| info.too_large())?;
    let start_bit = end_bit - frame_bits;
    if end_bit.div_ceil(8) > data.len() as u64 {
        return Err(PixelError::Decode(format!(
            "Pixel Data holds {} bytes, too few for frame {} of {}",
            data.len(),
            index + 1,
            info.frames
        )));
    }
    if start_bit.is_multiple_of(8) && frame_bits.is_multiple_of(8) {
        return Ok(data[(start_bit / 8) as usize..(end_bit / 8) as usize].to_vec());
    }
    // 1-bit frames that do not start on a byte boundary: repack from bit 0
    let mut out = vec![0u8; frame_bits.div_ceil(8) as usize];
    for i in 0..frame_bits {
        let src = start_bit + i;
        if data[(src / 8) as usize] & (1 << (src % 8)) != 0 {
            out[(i / 8) as usize] |= 1 << (i % 8);
        }
    }
    Ok(out)
}
