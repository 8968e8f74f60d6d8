//! RLE Lossless (PS3.5 Annex G) frames with 32-bit samples, which the dicom-rs RLE decoder
//! (8 and 16 bits only) refuses. Narrower RLE data goes through dicom-pixeldata.

use dicom_object::DefaultDicomObject;

use super::{encapsulated_frame, ImageInfo, PixelError};

fn err(message: impl Into<String>) -> PixelError {
    PixelError::Decode(format!("RLE: {}", message.into()))
}

/// PackBits decoding of one segment into exactly `len` bytes.
fn unpack_segment(src: &[u8], len: usize) -> Result<Vec<u8>, PixelError> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len && i < src.len() {
        let n = src[i] as i8;
        i += 1;
        match n {
            0..=127 => {
                let count = n as usize + 1;
                let literal = src
                    .get(i..i + count)
                    .ok_or_else(|| err("literal run past the end of a segment"))?;
                out.extend_from_slice(literal);
                i += count;
            }
            -127..=-1 => {
                let value = *src
                    .get(i)
                    .ok_or_else(|| err("replicate run past the end of a segment"))?;
                out.resize(out.len() + (1 - n as isize) as usize, value);
                i += 1;
            }
            -128 => {}
        }
    }
    if out.len() < len {
        return Err(err(format!(
            "a segment decoded to {} bytes, {len} expected",
            out.len()
        )));
    }
    out.truncate(len);
    Ok(out)
}

/// Frame `index` (0-based) decoded to interleaved little-endian samples.
pub(super) fn decode_frame(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    index: u32,
) -> Result<Vec<u8>, PixelError> {
    let data = encapsulated_frame(obj, info.frames, index)?;
    let header = data
        .get(..64)
        .ok_or_else(|| err("frame shorter than the 64-byte RLE header"))?;
    let word = |i: usize| {
        u32::from_le_bytes([
            header[4 * i],
            header[4 * i + 1],
            header[4 * i + 2],
            header[4 * i + 3],
        ]) as usize
    };
    let spp = info.samples_per_pixel as usize;
    let bytes_per_sample = info.bits_allocated.div_ceil(8) as usize;
    let segments = word(0);
    if segments != spp * bytes_per_sample || segments > 15 {
        return Err(err(format!(
            "{segments} segments, {} expected",
            spp * bytes_per_sample
        )));
    }
    let pixels = info.rows as usize * info.columns as usize;
    let mut out = vec![0u8; pixels * segments];
    for segment in 0..segments {
        let start = word(segment + 1);
        let end = if segment + 1 < segments {
            word(segment + 2)
        } else {
            data.len()
        };
        let src = data
            .get(start..end.max(start))
            .ok_or_else(|| err("segment offset past the end of the frame"))?;
        let bytes = unpack_segment(src, pixels)?;
        // segments run sample by sample, most significant byte first
        let (sample, byte) = (segment / bytes_per_sample, segment % bytes_per_sample);
        let position = bytes_per_sample - 1 - byte;
        for (p, value) in bytes.into_iter().enumerate() {
            out[(p * spp + sample) * bytes_per_sample + position] = value;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::unpack_segment;

    #[test]
    fn packbits() {
        // literal 3, replicate 4 x 9, no-op, literal 1
        let src = [2, 1, 2, 3, 0xFD, 9, 0x80, 0, 7];
        assert_eq!(unpack_segment(&src, 8).unwrap(), [1, 2, 3, 9, 9, 9, 9, 7]);
        assert!(unpack_segment(&src, 9).is_err());
        assert!(unpack_segment(&[5, 1], 6).is_err());
    }
}
