//! Lossy JPEG with more than 8 bits per sample (JPEG Extended, process 4: 12-bit), through
//! libjpeg-turbo's TurboJPEG 3 API; jpeg-decoder, which dicom-rs uses, decodes 8-bit lossy JPEG
//! only.

use std::ffi::CStr;
use std::os::raw::c_int;

use turbojpeg_sys as tj;

use super::{ImageInfo, PixelError};

/// A TurboJPEG decompressor, destroyed on drop.
struct Decompressor(tj::tjhandle);

impl Decompressor {
    fn new() -> Result<Self, PixelError> {
        // SAFETY: plain constructor call; a null handle is checked below.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if handle.is_null() {
            return Err(PixelError::Decode(
                "could not initialise the JPEG decoder".into(),
            ));
        }
        Ok(Decompressor(handle))
    }

    fn error(&self, what: &str) -> PixelError {
        // SAFETY: the handle is valid; TurboJPEG returns a NUL-terminated string it owns.
        let text = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        PixelError::Decode(format!("JPEG {what}: {}", text.to_string_lossy()))
    }

    /// Whether the last failure was only a warning (the image was still decoded).
    fn only_warning(&self) -> bool {
        // SAFETY: the handle is valid.
        unsafe { tj::tj3GetErrorCode(self.0) == tj::TJERR_TJERR_WARNING as c_int }
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: the handle is valid; unknown parameters return -1.
        unsafe { tj::tj3Get(self.0, param as c_int) }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// Decodes one JPEG frame to interleaved little-endian samples `Bits Allocated` wide (16),
/// colour as RGB.
pub(super) fn decode(jpeg: &[u8], info: &ImageInfo) -> Result<Vec<u8>, PixelError> {
    let decompressor = Decompressor::new()?;
    // SAFETY: the handle is valid and the buffer outlives the call.
    if unsafe { tj::tj3DecompressHeader(decompressor.0, jpeg.as_ptr(), jpeg.len() as _) } != 0
        && !decompressor.only_warning()
    {
        return Err(decompressor.error("header"));
    }
    let width = decompressor.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
    let height = decompressor.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
    let precision = decompressor.get(tj::TJPARAM_TJPARAM_PRECISION);
    if width != info.columns as c_int || height != info.rows as c_int {
        return Err(PixelError::Decode(format!(
            "the JPEG frame is {width}x{height}, Columns x Rows say {}x{}",
            info.columns, info.rows
        )));
    }
    let (format, channels) = match info.samples_per_pixel {
        1 => (tj::TJPF_TJPF_GRAY, 1),
        3 => (tj::TJPF_TJPF_RGB, 3),
        n => {
            return Err(PixelError::Decode(format!(
                "JPEG with {n} samples per pixel is not supported"
            )))
        }
    };
    let len = info.rows as usize * info.columns as usize * channels;
    let samples: Vec<u16> = match precision {
        8 => {
            let mut out = vec![0u8; len];
            // SAFETY: `out` holds width x height x channels samples (pitch 0 = packed rows).
            let rc = unsafe {
                tj::tj3Decompress8(
                    decompressor.0,
                    jpeg.as_ptr(),
                    jpeg.len() as _,
                    out.as_mut_ptr(),
                    0,
                    format,
                )
            };
            if rc != 0 && !decompressor.only_warning() {
                return Err(decompressor.error("decoding"));
            }
            out.into_iter().map(u16::from).collect()
        }
        9..=12 => {
            let mut out = vec![0i16; len];
            // SAFETY: as above, with 12-bit samples held in 16-bit integers.
            let rc = unsafe {
                tj::tj3Decompress12(
                    decompressor.0,
                    jpeg.as_ptr(),
                    jpeg.len() as _,
                    out.as_mut_ptr(),
                    0,
                    format,
                )
            };
            if rc != 0 && !decompressor.only_warning() {
                return Err(decompressor.error("decoding"));
            }
            out.into_iter().map(|v| v as u16).collect()
        }
        other => {
            return Err(PixelError::Decode(format!(
                "lossy JPEG with {other}-bit precision is not supported"
            )))
        }
    };
    Ok(samples.into_iter().flat_map(u16::to_le_bytes).collect())
}
