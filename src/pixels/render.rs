//! Rendering frames to JPEG or PNG (`/rendered`, `/thumbnail`).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::image::codecs::jpeg::JpegEncoder;
use dicom_pixeldata::image::codecs::png::PngEncoder;
use dicom_pixeldata::image::imageops::FilterType;
use dicom_pixeldata::image::{DynamicImage, GrayImage, RgbImage};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption, WindowLevel};

use super::{
    decode_err, decode_frame_bytes, encode_err, ensure_decodable, guard, int_attr, is_encapsulated,
    keeps_stored_colour, native_single_frame, open, own_decoder, transfer_syntax, ImageInfo,
    PixelError,
};

/// Largest output side `render` produces; larger viewports are clamped to it.
const MAX_VIEWPORT: u32 = 8192;
/// JPEG quality used when [`RenderOptions::quality`] is not set.
const DEFAULT_JPEG_QUALITY: u8 = 90;

/// Output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
}

/// Parameters of a `/rendered` or `/thumbnail` request.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// 1-based frame number; None = first frame.
    pub frame: Option<u32>,
    /// (centre, width) overriding the stored VOI; from `window=center,width,function`.
    pub window: Option<(f64, f64)>,
    /// Fit inside (width, height) keeping the aspect ratio, scaling down or up (each side is
    /// capped at 8192).
    pub viewport: Option<(u32, u32)>,
    /// Default Jpeg.
    pub format: Option<ImageFormat>,
    /// JPEG quality 1-100, default 90 (ignored for PNG).
    pub quality: Option<u8>,
}

/// Renders a frame to JPEG or PNG: applies Modality LUT (Rescale Slope/Intercept), then the VOI
/// window (the `window` option, else the stored VOI LUT or WindowCenter/WindowWidth first values,
/// else the frame's min-max), MONOCHROME1 inversion, 8-bit output; colour (RGB, YBR_FULL,
/// YBR_FULL_422, YBR_ICT/RCT, PALETTE COLOR) rendered as colour. Returns the encoded image bytes
/// (8-bit greyscale or RGB; PNG without alpha).
pub fn render(part10: &[u8], options: &RenderOptions) -> Result<Vec<u8>, PixelError> {
    check_options(options)?;
    guard(|| {
        let obj = open(part10)?;
        let info = ImageInfo::read(&obj)?;
        let index = info.frame_index(options.frame.unwrap_or(1))?;
        let image = render_frame(&obj, &info, index, options.window)?;
        let image = match options.viewport {
            Some(viewport) => fit(image, viewport),
            None => image,
        };
        encode(&image, options)
    })
}

fn check_options(options: &RenderOptions) -> Result<(), PixelError> {
    if let Some((center, width)) = options.window {
        if !center.is_finite() || !width.is_finite() || width <= 0.0 {
            return Err(PixelError::InvalidArgument(format!(
                "window centre {center}, width {width}: the width must be a positive number"
            )));
        }
    }
    if let Some((w, h)) = options.viewport {
        if w == 0 || h == 0 {
            return Err(PixelError::InvalidArgument(format!(
                "viewport {w},{h}: both sides must be positive"
            )));
        }
    }
    if let Some(q) = options.quality {
        if !(1..=100).contains(&q) {
            return Err(PixelError::InvalidArgument(format!(
                "quality {q}: must be between 1 and 100"
            )));
        }
    }
    Ok(())
}

/// Scales `image` to the largest size that fits in `viewport` with the same aspect ratio.
fn fit(image: DynamicImage, (max_w, max_h): (u32, u32)) -> DynamicImage {
    let (max_w, max_h) = (max_w.min(MAX_VIEWPORT), max_h.min(MAX_VIEWPORT));
    let (w, h) = (image.width(), image.height());
    let scale = (f64::from(max_w) / f64::from(w)).min(f64::from(max_h) / f64::from(h));
    let new_w = ((f64::from(w) * scale).round() as u32).clamp(1, max_w);
    let new_h = ((f64::from(h) * scale).round() as u32).clamp(1, max_h);
    if (new_w, new_h) == (w, h) {
        image
    } else {
        image.resize_exact(new_w, new_h, FilterType::Triangle)
    }
}

fn encode(image: &DynamicImage, options: &RenderOptions) -> Result<Vec<u8>, PixelError> {
    let mut out = Vec::new();
    match options.format.unwrap_or(ImageFormat::Jpeg) {
        ImageFormat::Jpeg => {
            let quality = options.quality.unwrap_or(DEFAULT_JPEG_QUALITY);
            image
                .write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
                .map_err(encode_err)?;
        }
        ImageFormat::Png => {
            image
                .write_with_encoder(PngEncoder::new(&mut out))
                .map_err(encode_err)?;
        }
    }
    Ok(out)
}

/// Decodes frame `index` (0-based) to an 8-bit greyscale or RGB image.
fn render_frame(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    index: u32,
    window: Option<(f64, f64)>,
) -> Result<DynamicImage, PixelError> {
    let colour = info.samples_per_pixel == 3 || info.photometric == "PALETTE COLOR";
    let image = if info.photometric == "PALETTE COLOR" {
        palette_to_rgb(obj, info, &decode_frame_bytes(obj, info, index)?)?
    } else if info.bits_allocated == 32 {
        // dicom-pixeldata's image conversion stops at 16 bits
        let frame = decode_frame_bytes(obj, info, index)?;
        if colour {
            rgb32_to_rgb(obj, info, &frame)?
        } else {
            mono32_to_luma(obj, info, &frame, window)?
        }
    } else if colour
        && info.photometric == "YBR_FULL_422"
        && info.bits_allocated == 8
        && !is_encapsulated(obj)
    {
        // native YBR_FULL_422 is subsampled, which dicom-pixeldata does not expect
        ybr422_to_rgb(&decode_frame_bytes(obj, info, index)?, info)?
    } else {
        ensure_decodable(obj)?;
        let substitute;
        let (source, frame) = if own_decoder(obj, info) {
            substitute = native_single_frame(obj, info, index)?;
            (&substitute, 0)
        } else {
            (obj, index)
        };
        let decoded = source.decode_pixel_data_frame(frame).map_err(decode_err)?;
        let mut convert = ConvertOptions::new().force_8bit();
        if let Some((center, width)) = window {
            convert = convert.with_voi_lut(VoiLutOption::Custom(WindowLevel { center, width }));
        }
        let image = decoded
            .to_dynamic_image_with_options(0, &convert)
            .map_err(decode_err)?;
        if colour
            && info.photometric == "YBR_FULL"
            && is_encapsulated(obj)
            && keeps_stored_colour(&transfer_syntax(obj))
        {
            // decoded samples are still YCbCr although dicom-pixeldata labels them RGB
            let mut rgb = image.into_rgb8();
            for p in rgb.pixels_mut() {
                p.0 = ycbcr_to_rgb(p[0], p[1], p[2]);
            }
            DynamicImage::ImageRgb8(rgb)
        } else {
            image
        }
    };
    Ok(if colour {
        DynamicImage::ImageRgb8(image.into_rgb8())
    } else {
        DynamicImage::ImageLuma8(image.into_luma8())
    })
}

/// First value of a numeric attribute.
fn first_f64(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    obj.get(tag)
        .and_then(|e| e.to_multi_float64().ok())
        .and_then(|v| v.first().copied())
        .filter(|v| v.is_finite())
}

/// Linear VOI window (PS3.3 C.11.2.1.2.1) to 0..=255.
fn window_linear(x: f64, center: f64, width: f64) -> u8 {
    if width <= 1.0 {
        return if x < center - 0.5 { 0 } else { 255 };
    }
    let v = ((x - (center - 0.5)) / (width - 1.0) + 0.5) * 255.0;
    v.round().clamp(0.0, 255.0) as u8
}

/// 32-bit monochrome samples (dose grids, parametric maps): Rescale Slope/Intercept, then the
/// linear window (requested, else the stored first WindowCenter/WindowWidth, else min-max).
fn mono32_to_luma(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    frame: &[u8],
    window: Option<(f64, f64)>,
) -> Result<DynamicImage, PixelError> {
    let signed = int_attr(obj, tags::PIXEL_REPRESENTATION) == Some(1);
    let slope = first_f64(obj, tags::RESCALE_SLOPE).unwrap_or(1.0);
    let intercept = first_f64(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0);
    let values: Vec<f64> = frame
        .chunks_exact(4)
        .map(|c| {
            let raw = [c[0], c[1], c[2], c[3]];
            let v = if signed {
                f64::from(i32::from_le_bytes(raw))
            } else {
                f64::from(u32::from_le_bytes(raw))
            };
            v * slope + intercept
        })
        .collect();
    let stored = match (
        first_f64(obj, tags::WINDOW_CENTER),
        first_f64(obj, tags::WINDOW_WIDTH),
    ) {
        (Some(center), Some(width)) if width > 0.0 => Some((center, width)),
        _ => None,
    };
    let mut pixels: Vec<u8> = match window.or(stored) {
        Some((center, width)) => values
            .iter()
            .map(|&x| window_linear(x, center, width))
            .collect(),
        None => {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = max - min;
            values
                .iter()
                .map(|&x| {
                    if range > 0.0 {
                        ((x - min) / range * 255.0).round() as u8
                    } else {
                        0
                    }
                })
                .collect()
        }
    };
    if info.photometric == "MONOCHROME1" {
        pixels.iter_mut().for_each(|v| *v = 255 - *v);
    }
    GrayImage::from_raw(info.columns, info.rows, pixels)
        .map(DynamicImage::ImageLuma8)
        .ok_or_else(|| PixelError::Decode("the frame has fewer samples than Rows x Columns".into()))
}

/// 32-bit colour samples: the 8 most significant bits of each.
fn rgb32_to_rgb(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    frame: &[u8],
) -> Result<DynamicImage, PixelError> {
    let samples: Vec<u8> = frame.chunks_exact(4).map(|c| c[3]).collect();
    let mut pixels = if info.planar && !is_encapsulated(obj) {
        interleave_planes(&samples)
    } else {
        samples
    };
    if info.photometric == "YBR_FULL" {
        for p in pixels.chunks_exact_mut(3) {
            let rgb = ycbcr_to_rgb(p[0], p[1], p[2]);
            p.copy_from_slice(&rgb);
        }
    }
    RgbImage::from_raw(info.columns, info.rows, pixels)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| {
            PixelError::Decode("the frame has fewer samples than Rows x Columns x 3".into())
        })
}

fn interleave_planes(planes: &[u8]) -> Vec<u8> {
    let n = planes.len() / 3;
    (0..n)
        .flat_map(|i| [planes[i], planes[n + i], planes[2 * n + i]])
        .collect()
}

/// YCbCr (full range, PS3.3 C.7.6.3.1.2) to RGB.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let y = f64::from(y);
    let cb = f64::from(cb) - 128.0;
    let cr = f64::from(cr) - 128.0;
    let r = y + 1.402 * cr;
    let g = y - 0.344_136 * cb - 0.714_136 * cr;
    let b = y + 1.772 * cb;
    [r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8)
}

/// Native YBR_FULL_422 frame (Y1 Y2 Cb Cr for each pair of pixels) to RGB.
fn ybr422_to_rgb(frame: &[u8], info: &ImageInfo) -> Result<DynamicImage, PixelError> {
    let (w, h) = (info.columns as usize, info.rows as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    // each row is subsampled on its own; an odd row width ends with a pair that has one pixel
    let row_bytes = w.div_ceil(2) * 4;
    let mut offset = 0usize;
    for _ in 0..h {
        let row = frame
            .get(offset..offset + row_bytes.min(frame.len().saturating_sub(offset)))
            .unwrap_or(&[]);
        for x in 0..w {
            let pair = row
                .get((x / 2) * 4..(x / 2) * 4 + 4)
                .unwrap_or(&[0, 0, 128, 128]);
            out.extend_from_slice(&ycbcr_to_rgb(pair[x % 2], pair[2], pair[3]));
        }
        offset += if w % 2 == 0 { w * 2 } else { row_bytes };
    }
    RgbImage::from_raw(info.columns, info.rows, out)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| PixelError::Decode("invalid YBR_FULL_422 frame".into()))
}

/// One channel of a Palette Color LUT: (first mapped value, 8-bit entries).
struct PaletteChannel {
    first: i64,
    entries: Vec<u8>,
}

fn palette_channel(
    obj: &DefaultDicomObject,
    descriptor: Tag,
    data: Tag,
) -> Result<PaletteChannel, PixelError> {
    let desc: Vec<i64> = obj
        .get(descriptor)
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| {
            PixelError::Decode(format!("PALETTE COLOR image without a valid {descriptor}"))
        })?;
    let count = if desc[0] == 0 {
        65536
    } else {
        desc[0] as usize
    };
    let bits = desc[2];
    let raw = obj
        .get(data)
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| {
            PixelError::Decode(format!(
                "PALETTE COLOR image without {data} (segmented palettes are not supported)"
            ))
        })?;
    let entries: Vec<u8> = if bits == 8 && raw.len() < count * 2 {
        // 8-bit entries packed one per byte
        raw.iter().copied().collect()
    } else {
        raw.chunks_exact(2)
            .map(|c| {
                let v = u16::from_le_bytes([c[0], c[1]]);
                if bits == 8 {
                    v as u8
                } else {
                    (v >> 8) as u8
                }
            })
            .collect()
    };
    if entries.is_empty() {
        return Err(PixelError::Decode(format!("empty palette {data}")));
    }
    Ok(PaletteChannel {
        first: desc[1],
        entries,
    })
}

/// PALETTE COLOR: maps stored indices through the red, green and blue LUTs.
fn palette_to_rgb(
    obj: &DefaultDicomObject,
    info: &ImageInfo,
    frame: &[u8],
) -> Result<DynamicImage, PixelError> {
    let channels = [
        palette_channel(
            obj,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
        palette_channel(
            obj,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
        palette_channel(
            obj,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        )?,
    ];
    let indices: Vec<i64> = match info.bits_allocated {
        8 => frame.iter().map(|&b| i64::from(b)).collect(),
        16 => frame
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        other => {
            return Err(PixelError::Decode(format!(
                "PALETTE COLOR with Bits Allocated {other} is not supported"
            )))
        }
    };
    let mut out = Vec::with_capacity(indices.len() * 3);
    for index in indices {
        for ch in &channels {
            let i = (index - ch.first).clamp(0, ch.entries.len() as i64 - 1) as usize;
            out.push(ch.entries[i]);
        }
    }
    RgbImage::from_raw(info.columns, info.rows, out)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| PixelError::Decode("the frame has fewer samples than Rows x Columns".into()))
}
