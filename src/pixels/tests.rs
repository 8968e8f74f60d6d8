//! Tests on the real DICOM files shipped with pydicom (`pip install pydicom`), plus a small
//! HTJ2K object built here.

use super::*;
use dicom_core::value::PixelFragmentSequence;
use dicom_dictionary_std::uids;
use dicom_pixeldata::image::{self, DynamicImage, ImageFormat as Fmt};
use std::path::PathBuf;
use std::sync::OnceLock;

/// pydicom's `data/test_files` directory.
fn test_files() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import pydicom, os; print(os.path.dirname(pydicom.__file__))",
            ])
            .output()
            .expect("these tests need python3 with pydicom: `pip install pydicom`");
        assert!(
            out.status.success(),
            "these tests need the pydicom package for its DICOM test files: `pip install pydicom` \
             ({})",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            .join("data")
            .join("test_files");
        assert!(dir.is_dir(), "{} is missing", dir.display());
        dir
    })
}

fn file(name: &str) -> Vec<u8> {
    let path = test_files().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Applies `change` to the object in `part10` and serialises it again.
fn modified(part10: &[u8], change: impl FnOnce(&mut DefaultDicomObject)) -> Vec<u8> {
    let mut obj = open(part10).unwrap();
    change(&mut obj);
    let mut out = Vec::new();
    obj.write_all(&mut out).unwrap();
    out
}

fn ts_of(part10: &[u8]) -> String {
    transfer_syntax(&open(part10).unwrap())
}

/// Transfer syntax and native Pixel Data bytes of an Explicit VR LE output.
fn native_pixels(part10: &[u8]) -> Vec<u8> {
    assert_eq!(&part10[128..132], b"DICM", "no Part 10 preamble + magic");
    let obj = open(part10).unwrap();
    assert_eq!(transfer_syntax(&obj), uids::EXPLICIT_VR_LITTLE_ENDIAN);
    native_pixel_bytes(&obj).unwrap().into_owned()
}

/// Compares byte strings without printing them whole.
#[track_caller]
fn assert_same(got: &[u8], want: &[u8], context: &str) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{context}: {} bytes vs {} expected, first difference at {first:?}",
            got.len(),
            want.len()
        );
    }
}

fn decode_image(bytes: &[u8], format: Fmt) -> DynamicImage {
    image::load_from_memory_with_format(bytes, format).unwrap()
}

fn render_png(part10: &[u8], options: RenderOptions) -> DynamicImage {
    let png = render(
        part10,
        &RenderOptions {
            format: Some(ImageFormat::Png),
            ..options
        },
    )
    .unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    decode_image(&png, Fmt::Png)
}

fn is_colourful(img: &DynamicImage) -> bool {
    img.as_rgb8()
        .expect("an RGB image")
        .pixels()
        .any(|p| p[0].abs_diff(p[1]) > 30 || p[1].abs_diff(p[2]) > 30)
}

/// A 16x8, 12-bit HTJ2K lossless codestream made with OpenJPH's `ojph_compress -reversible true`
/// from the samples of [`htj2k_expected`].
const HTJ2K_CODESTREAM: &str = "ff4fff5100294000000000100000000800000000000000000000001000000008\
    000000000000000000010b0101ff500008000200000007ff52000c00020001000204044001ff5c000a2070787878\
    707078ff64001600014f70656e4a50482056657220302e392e302eff90000a0000000000970001ff93c0016900fd\
    ff62d13eb3d53ee88abbf800210031b600c000a980015d000270400211e8408536950002c80284098c0184000840\
    16b600200bf846033400c0016a40016ec000b440d50410848188750220e944957132c22b3d7dea00112308600ce0\
    15089101be00504034fe6210028221002d74f29b8f5d009be6a848e52ced299e7eaef21ffba45a00ffd9";

fn htj2k_expected() -> Vec<u16> {
    (0..8u16)
        .flat_map(|y| (0..16u16).map(move |x| (x * 37 + y * 101 + (x * y) % 7) % 4096))
        .collect()
}

/// MR_small's attributes around a 16x8 HTJ2K Lossless (1.2.840.10008.1.2.4.201) frame.
fn htj2k_object() -> Vec<u8> {
    let hex: String = HTJ2K_CODESTREAM.split_whitespace().collect();
    let codestream: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    modified(&file("MR_small.dcm"), |obj| {
        for (tag, value) in [
            (tags::ROWS, 8u16),
            (tags::COLUMNS, 16),
            (tags::BITS_STORED, 12),
            (tags::HIGH_BIT, 11),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        }
        obj.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::UNDEFINED,
            PixelFragmentSequence::new(vec![0], vec![codestream]),
        ));
        obj.update_meta(|m| m.transfer_syntax = uids::HTJ2K_LOSSLESS.to_string());
    })
}

// ----- capabilities --------------------------------------------------------------------------

#[test]
fn can_decode_reports_the_compiled_codecs() {
    for uid in [
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        "1.2.840.10008.1.2.2", // Explicit VR Big Endian: retired, so its constant is deprecated
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        uids::JPEG_BASELINE8_BIT,
        uids::JPEG_EXTENDED12_BIT,
        uids::JPEG_LOSSLESS,
        uids::JPEG_LOSSLESS_SV1,
        uids::JPEGLS_LOSSLESS,
        uids::JPEGLS_NEAR_LOSSLESS,
        uids::JPEG2000_LOSSLESS,
        uids::JPEG2000,
        uids::HTJ2K_LOSSLESS,
        uids::HTJ2K_LOSSLESS_RPCL,
        uids::HTJ2K,
        uids::RLE_LOSSLESS,
        "1.2.840.10008.1.2.4.50\0",
    ] {
        assert!(can_decode(uid), "{uid} should decode");
    }
    for uid in [
        uids::JPIP_REFERENCED,
        uids::MPEG2MPML,
        uids::JPEGXL_LOSSLESS,
        "1.2.3.4",
        "",
    ] {
        assert!(!can_decode(uid), "{uid} should not decode");
    }
}

// ----- transcoding ---------------------------------------------------------------------------

#[test]
fn transcoding_mr_small_from_every_lossless_syntax_gives_the_same_pixels() {
    let reference = native_pixels(&file("MR_small.dcm"));
    assert_eq!(reference.len(), 64 * 64 * 2);
    for name in [
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ] {
        let input = file(name);
        assert_ne!(ts_of(&input), uids::EXPLICIT_VR_LITTLE_ENDIAN);
        let out = transcode_to_explicit_le(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(&native_pixels(&out), &reference, name);
        let obj = open(&out).unwrap();
        assert_eq!(int_attr(&obj, tags::ROWS), Some(64), "{name}");
        assert_eq!(
            obj.element(tags::PIXEL_DATA).unwrap().vr(),
            VR::OW,
            "{name}"
        );
        // the output reads back as the same image
        assert_same(&decode_frame(&out, 1).unwrap(), &reference, name);
    }
}

#[test]
fn transcoding_explicit_le_returns_the_input() {
    let input = file("CT_small.dcm");
    assert_eq!(transcode_to_explicit_le(&input).unwrap(), input);
}

#[test]
fn transcoding_deflated_inflates_the_data_set() {
    let input = file("image_dfl.dcm");
    assert_eq!(ts_of(&input), uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN);
    let out = transcode_to_explicit_le(&input).unwrap();
    let pixels = native_pixels(&out);
    assert_eq!(pixels.len(), 512 * 512);
    assert_same(&decode_frame(&input, 1).unwrap(), &pixels, "deflated");
    let uid = |b: &[u8]| {
        open(b)
            .unwrap()
            .element(tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .into_owned()
    };
    assert_eq!(uid(&input), uid(&out));
}

#[test]
fn transcoding_lossy_jpeg_gives_native_rgb() {
    // JPEG baseline stored as YBR_FULL: decoded to interleaved RGB
    let out = transcode_to_explicit_le(&file("SC_rgb_jpeg_dcmtk.dcm")).unwrap();
    let obj = open(&out).unwrap();
    let pixel_data = obj.element(tags::PIXEL_DATA).unwrap();
    assert_eq!(pixel_data.vr(), VR::OB);
    assert_eq!(pixel_data.to_bytes().unwrap().len(), 100 * 100 * 3);
    let text = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(text(tags::PHOTOMETRIC_INTERPRETATION), "RGB");
    assert_eq!(text(tags::LOSSY_IMAGE_COMPRESSION), "01");
    assert_eq!(int_attr(&obj, tags::PLANAR_CONFIGURATION), Some(0));
    // close to the lossless RLE version of the same picture
    let rle = decode_frame(&file("SC_rgb_rle.dcm"), 1).unwrap();
    let pixels = native_pixels(&out);
    let mean_error = pixels
        .iter()
        .zip(&rle)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / rle.len() as f64;
    assert!(mean_error < 8.0, "mean error {mean_error}");

    // 12-bit JPEG extended (libjpeg-turbo)
    let out = transcode_to_explicit_le(&file("JPEG-lossy.dcm")).unwrap();
    assert_eq!(native_pixels(&out).len(), 1024 * 256 * 2);
    assert_same(
        &native_pixels(&out),
        &decode_frame(&file("JPGExtended.dcm"), 1).unwrap(),
        "12-bit JPEG",
    );

    // odd-length 8-bit data is padded to an even OB value
    let out = transcode_to_explicit_le(&file("SC_rgb_small_odd_jpeg.dcm")).unwrap();
    let obj = open(&out).unwrap();
    let pixel_data = obj.element(tags::PIXEL_DATA).unwrap();
    assert_eq!(pixel_data.vr(), VR::OB);
    assert_eq!(pixel_data.to_bytes().unwrap().len(), 28);
    assert_eq!(decode_frame(&out, 1).unwrap().len(), 27);
}

#[test]
fn twelve_bit_jpeg_matches_a_reference_decoder() {
    // reference: pydicom + pylibjpeg (IJG-style IDCT; libjpeg-turbo may differ by 1)
    let samples: Vec<u16> = decode_frame(&file("JPGExtended.dcm"), 1)
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(samples.len(), 1024 * 256);
    for (index, want) in [(0, 1u16), (500 * 256 + 100, 31), (1024 * 256 - 1, 1)] {
        assert!(samples[index].abs_diff(want) <= 1, "sample {index}");
    }
    assert!((263..=265).contains(samples.iter().max().unwrap()));
    let sum: u64 = samples.iter().map(|&v| u64::from(v)).sum();
    assert!(sum.abs_diff(3_770_427) < 3_770_427 / 500, "sum {sum}");
}

#[test]
fn objects_without_preamble_are_accepted() {
    let ct = file("CT_small.dcm");
    let bare = &ct[128..];
    let out = transcode_to_explicit_le(bare).unwrap();
    assert_same(&out[..128], &[0; 128], "preamble");
    assert_same(&out[128..], bare, "CT_small without preamble");
    assert_same(
        &decode_frame(bare, 1).unwrap(),
        &decode_frame(&ct, 1).unwrap(),
        "frame without preamble",
    );
    let mr = file("MR_small_RLE.dcm");
    let out = transcode_to_explicit_le(&mr[128..]).unwrap();
    assert_same(
        &native_pixels(&out),
        &native_pixels(&file("MR_small.dcm")),
        "RLE without preamble",
    );
}

#[test]
fn transcoding_32_bit_samples() {
    // big endian OW with 32-bit samples, and 32-bit RLE
    let reference = native_pixels(&transcode_to_explicit_le(&file("rtdose.dcm")).unwrap());
    assert_eq!(reference.len(), 10 * 10 * 4 * 15);
    for name in ["rtdose_expb.dcm", "rtdose_rle.dcm"] {
        let out = transcode_to_explicit_le(&file(name)).unwrap();
        assert_same(&native_pixels(&out), &reference, name);
    }
    // 32-bit RGB RLE: the top byte of each sample is the 8-bit picture
    let wide = native_pixels(&transcode_to_explicit_le(&file("SC_rgb_rle_32bit.dcm")).unwrap());
    let narrow = native_pixels(&transcode_to_explicit_le(&file("SC_rgb_rle.dcm")).unwrap());
    let top: Vec<u8> = wide.chunks_exact(4).map(|s| s[3]).collect();
    assert_same(&top, &narrow, "32-bit RGB");
}

#[test]
fn palette_colour_survives_compression_and_transcoding() {
    // compress the palette example with dicom-rs's JPEG-LS lossless encoder, then decode it back
    let native = file("examples_palette.dcm");
    let jls = modified(&native, |obj| {
        obj.transcode(
            &dicom_transfer_syntax_registry::entries::JPEG_LS_LOSSLESS_IMAGE_COMPRESSION.erased(),
        )
        .unwrap();
        // the dicom-rs JPEG-LS encoder relabels single samples MONOCHROME2
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "PALETTE COLOR",
        ));
    });
    assert_eq!(ts_of(&jls), uids::JPEGLS_LOSSLESS);
    let out = transcode_to_explicit_le(&jls).unwrap();
    let obj = open(&out).unwrap();
    let pi = obj.element(tags::PHOTOMETRIC_INTERPRETATION).unwrap();
    assert_eq!(pi.to_str().unwrap().trim(), "PALETTE COLOR");
    assert_same(
        &native_pixels(&out),
        &native_pixels(&native),
        "palette indices",
    );
    let a = render_png(&jls, RenderOptions::default());
    let b = render_png(&native, RenderOptions::default());
    assert_same(a.as_bytes(), b.as_bytes(), "palette rendering");
}

#[test]
fn transcoding_htj2k() {
    let input = htj2k_object();
    assert!(can_decode(&ts_of(&input)));
    let out = transcode_to_explicit_le(&input).unwrap();
    let samples: Vec<u16> = native_pixels(&out)
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(samples, htj2k_expected());
}

// ----- frames --------------------------------------------------------------------------------

#[test]
fn lossless_compressed_frames_equal_the_native_pixels() {
    let reference = native_pixels(&file("MR_small.dcm"));
    for name in [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ] {
        let frame = decode_frame(&file(name), 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same(&frame, &reference, name);
    }
    // JPEG lossless (process 14, SV1) against RLE of the same RGB picture
    assert_same(
        &decode_frame(&file("SC_rgb_jpeg_gdcm.dcm"), 1).unwrap(),
        &decode_frame(&file("SC_rgb_rle.dcm"), 1).unwrap(),
        "JPEG lossless",
    );
    // HTJ2K
    let samples: Vec<u16> = decode_frame(&htj2k_object(), 1)
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(samples, htj2k_expected());
}

#[test]
fn multi_frame_frames_are_distinct_and_bounded() {
    for name in ["SC_rgb_rle_2frame.dcm", "SC_rgb_rle_16bit_2frame.dcm"] {
        let input = file(name);
        let one = decode_frame(&input, 1).unwrap();
        let two = decode_frame(&input, 2).unwrap();
        assert!(one != two, "{name}: frames 1 and 2 are equal");
        assert_eq!(one.len(), two.len());
        // frame 2 is frame 1 inverted
        assert_eq!(one[0] ^ 0xFF, two[0]);
        for bad in [0, 3] {
            match decode_frame(&input, bad) {
                Err(PixelError::FrameOutOfRange { frame, frames: 2 }) => assert_eq!(frame, bad),
                other => panic!("{name} frame {bad}: {other:?}"),
            }
        }
    }

    // native multi-frame: the frames are slices of the pixel data
    let dose = file("rtdose.dcm");
    let all = native_pixels(&transcode_to_explicit_le(&dose).unwrap());
    assert_same(&decode_frame(&dose, 2).unwrap(), &all[400..800], "frame 2");
    assert_same(
        &decode_frame(&dose, 15).unwrap(),
        &all[5600..6000],
        "frame 15",
    );
    assert_same(
        &decode_frame(&file("rtdose_expb.dcm"), 2).unwrap(),
        &all[400..800],
        "big endian frame 2",
    );
    assert_same(
        &decode_frame(&file("rtdose_rle.dcm"), 2).unwrap(),
        &all[400..800],
        "RLE frame 2",
    );
    assert!(matches!(
        decode_frame(&dose, 16),
        Err(PixelError::FrameOutOfRange {
            frame: 16,
            frames: 15
        })
    ));
    let err = decode_frame(&dose, 16).unwrap_err();
    assert_eq!(err.http_status(), 404);
    assert!(err.to_string().contains("15 frame"), "{err}");
}

#[test]
fn native_frames_keep_the_stored_layout() {
    // YBR_FULL_422 stays subsampled
    assert_eq!(
        decode_frame(&file("SC_ybr_full_422_uncompressed.dcm"), 1)
            .unwrap()
            .len(),
        100 * 100 * 2
    );
    // 1-bit: packed
    assert_eq!(
        decode_frame(&file("liver_1frame.dcm"), 1).unwrap().len(),
        512 * 512 / 8
    );
    assert_same(
        &decode_frame(&file("liver_expb_1frame.dcm"), 1).unwrap(),
        &decode_frame(&file("liver_1frame.dcm"), 1).unwrap(),
        "1-bit big endian",
    );
    // 8-bit samples in big endian OW
    assert_same(
        &decode_frame(&file("SC_rgb_small_odd_big_endian.dcm"), 1).unwrap(),
        &decode_frame(&file("SC_rgb_small_odd.dcm"), 1).unwrap(),
        "8-bit big endian OW",
    );
}

#[test]
fn one_bit_frames_off_byte_boundaries_are_repacked() {
    let info = ImageInfo {
        rows: 1,
        columns: 3,
        samples_per_pixel: 1,
        bits_allocated: 1,
        frames: 3,
        photometric: "MONOCHROME2".into(),
        planar: false,
    };
    // frames: 101, 110, 011 (bits LSB first)
    let data = [0b1011_0101u8, 0b0000_0001];
    assert_eq!(native_frame(&data, &info, 0).unwrap(), [0b101]);
    assert_eq!(native_frame(&data, &info, 1).unwrap(), [0b110]);
    assert_eq!(native_frame(&data, &info, 2).unwrap(), [0b110]);
}

// ----- rendering -----------------------------------------------------------------------------

#[test]
fn render_jpeg_and_png() {
    let ct = file("CT_small.dcm");
    let jpeg = render(&ct, &RenderOptions::default()).unwrap();
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let img = decode_image(&jpeg, Fmt::Jpeg);
    assert_eq!((img.width(), img.height()), (128, 128));
    assert!(img.as_luma8().is_some(), "greyscale JPEG expected");

    let png = render_png(&ct, RenderOptions::default());
    assert_eq!((png.width(), png.height()), (128, 128));
    // no stored window: min-max over the whole range
    let luma = png.to_luma8();
    assert_eq!(luma.pixels().map(|p| p[0]).max(), Some(255));
    assert_eq!(luma.pixels().map(|p| p[0]).min(), Some(0));

    // quality changes the JPEG
    let small = render(
        &ct,
        &RenderOptions {
            quality: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(small.len() < jpeg.len());
}

#[test]
fn render_every_decodable_test_image() {
    for name in [
        "693_J2KI.dcm",
        "GDCMJ2K_TextGBR.dcm",
        "J2K_pixelrep_mismatch.dcm",
        "JPEG-lossy.dcm",
        "JPEG2000.dcm",
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "JPGExtended.dcm",
        "MR_small_RLE.dcm",
        "MR_small_bigendian.dcm",
        "SC_jpeg_no_color_transform.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_small_odd_jpeg.dcm",
        "examples_jpeg2k.dcm",
        "examples_overlay.dcm",
        "examples_rgb_color.dcm",
        "image_dfl.dcm",
        "liver_1frame.dcm",
        "rtdose_rle.dcm",
    ] {
        let input = file(name);
        let info = ImageInfo::read(&open(&input).unwrap()).unwrap();
        let jpeg =
            render(&input, &RenderOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&jpeg[..2], [0xFF, 0xD8], "{name}");
        let img = decode_image(&jpeg, Fmt::Jpeg);
        assert_eq!(
            (img.width(), img.height()),
            (info.columns, info.rows),
            "{name}"
        );
    }
}

#[test]
fn viewport_fits_keeping_the_aspect_ratio() {
    // 256 columns x 1024 rows
    let input = file("JPEG-lossy.dcm");
    let img = render_png(
        &input,
        RenderOptions {
            viewport: Some((64, 64)),
            ..Default::default()
        },
    );
    assert_eq!((img.width(), img.height()), (16, 64));
    let img = render_png(
        &input,
        RenderOptions {
            viewport: Some((128, 4096)),
            ..Default::default()
        },
    );
    assert_eq!((img.width(), img.height()), (128, 512));
    // JPEG output too
    let jpeg = render(
        &file("CT_small.dcm"),
        &RenderOptions {
            viewport: Some((32, 100)),
            ..Default::default()
        },
    )
    .unwrap();
    let img = decode_image(&jpeg, Fmt::Jpeg);
    assert_eq!((img.width(), img.height()), (32, 32));
    // a zero side is a bad request
    let err = render(
        &input,
        &RenderOptions {
            viewport: Some((0, 10)),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, PixelError::InvalidArgument(_)));
    assert_eq!(err.http_status(), 400);
}

#[test]
fn window_changes_the_output() {
    let mr = file("MR_small.dcm");
    // MR_small stores window 600/1600
    let stored = render_png(&mr, RenderOptions::default()).to_luma8();
    let same = render_png(
        &mr,
        RenderOptions {
            window: Some((600.0, 1600.0)),
            ..Default::default()
        },
    )
    .to_luma8();
    assert_same(stored.as_raw(), same.as_raw(), "stored window");
    let narrow = render_png(
        &mr,
        RenderOptions {
            window: Some((300.0, 200.0)),
            ..Default::default()
        },
    )
    .to_luma8();
    assert!(stored != narrow, "the window had no effect");
    // a narrow window saturates more pixels
    let saturated = |img: &image::GrayImage| img.pixels().filter(|p| p[0] == 255).count();
    assert!(saturated(&narrow) > saturated(&stored));

    // CT: modality LUT applied before the window (HU soft tissue window)
    let ct = file("CT_small.dcm");
    let soft = render_png(
        &ct,
        RenderOptions {
            window: Some((40.0, 400.0)),
            ..Default::default()
        },
    )
    .to_luma8();
    let bone = render_png(
        &ct,
        RenderOptions {
            window: Some((500.0, 2000.0)),
            ..Default::default()
        },
    )
    .to_luma8();
    assert!(soft != bone, "the window had no effect");

    assert!(matches!(
        render(
            &mr,
            &RenderOptions {
                window: Some((40.0, 0.0)),
                ..Default::default()
            }
        ),
        Err(PixelError::InvalidArgument(_))
    ));
}

#[test]
fn colour_images_render_in_colour() {
    for name in [
        "SC_rgb_rle.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_gdcm_KY.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "ExplVR_BigEnd.dcm",
        "examples_ybr_color.dcm",
        "examples_palette.dcm",
    ] {
        let img = render_png(&file(name), RenderOptions::default());
        assert!(is_colourful(&img), "{name} rendered without colour");
        let jpeg = render(&file(name), &RenderOptions::default()).unwrap();
        let img = decode_image(&jpeg, Fmt::Jpeg);
        assert!(img.as_rgb8().is_some(), "{name}: colour JPEG expected");
    }

    // exact colours: RLE (RGB) and native YBR_FULL_422 converted to RGB
    let rgb = render_png(&file("SC_rgb_rle.dcm"), RenderOptions::default()).to_rgb8();
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(rgb.get_pixel(80, 50).0, [128, 128, 255]);
    let ybr = render_png(
        &file("SC_ybr_full_422_uncompressed.dcm"),
        RenderOptions::default(),
    )
    .to_rgb8();
    for ((x, y), want) in [
        ((0, 0), [254, 0, 0]),
        ((30, 30), [130, 254, 130]),
        ((80, 50), [125, 130, 255]),
        ((99, 99), [255, 255, 255]),
    ] {
        let got = ybr.get_pixel(x, y).0;
        for c in 0..3 {
            assert!(
                got[c].abs_diff(want[c]) <= 2,
                "({x},{y}): {got:?} vs {want:?}"
            );
        }
    }
    // palette: index 244 -> (9472, 15872, 24064) >> 8
    let palette = render_png(&file("examples_palette.dcm"), RenderOptions::default()).to_rgb8();
    assert_eq!(palette.get_pixel(0, 0).0, [37, 62, 94]);
    // big endian RGB equals little endian RGB
    let big = render_png(
        &file("SC_rgb_small_odd_big_endian.dcm"),
        RenderOptions::default(),
    );
    let little = render_png(&file("SC_rgb_small_odd.dcm"), RenderOptions::default());
    assert_same(big.as_bytes(), little.as_bytes(), "big endian RGB");
}

#[test]
fn monochrome1_is_inverted() {
    let mr = file("MR_small.dcm");
    let mono1 = modified(&mr, |obj| {
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME1",
        ));
    });
    let normal = render_png(&mr, RenderOptions::default()).to_luma8();
    let inverted = render_png(&mono1, RenderOptions::default()).to_luma8();
    for (a, b) in normal.pixels().zip(inverted.pixels()) {
        assert!((255u8 - a[0]).abs_diff(b[0]) <= 1, "{} vs {}", a[0], b[0]);
    }

    // the 32-bit path as well
    let dose = file("rtdose_1frame.dcm");
    let dose1 = modified(&dose, |obj| {
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME1",
        ));
    });
    let normal = render_png(&dose, RenderOptions::default()).to_luma8();
    let inverted = render_png(&dose1, RenderOptions::default()).to_luma8();
    for (a, b) in normal.pixels().zip(inverted.pixels()) {
        assert_eq!(255 - a[0], b[0]);
    }
}

#[test]
fn multi_frame_rendering() {
    let input = file("SC_rgb_rle_2frame.dcm");
    let one = render_png(&input, RenderOptions::default());
    let first = render_png(
        &input,
        RenderOptions {
            frame: Some(1),
            ..Default::default()
        },
    );
    let two = render_png(
        &input,
        RenderOptions {
            frame: Some(2),
            ..Default::default()
        },
    );
    assert_same(one.as_bytes(), first.as_bytes(), "default frame");
    assert!(one != two, "frames 1 and 2 render the same");
    assert!(matches!(
        render(
            &input,
            &RenderOptions {
                frame: Some(3),
                ..Default::default()
            }
        ),
        Err(PixelError::FrameOutOfRange {
            frame: 3,
            frames: 2
        })
    ));

    // 32-bit dose grid, native little and big endian and RLE agree
    for frame in [1, 7] {
        let options = RenderOptions {
            frame: Some(frame),
            ..Default::default()
        };
        let le = render_png(&file("rtdose.dcm"), options.clone());
        assert_same(
            le.as_bytes(),
            render_png(&file("rtdose_expb.dcm"), options.clone()).as_bytes(),
            "big endian dose",
        );
        assert_same(
            le.as_bytes(),
            render_png(&file("rtdose_rle.dcm"), options).as_bytes(),
            "RLE dose",
        );
    }
    let first = render_png(&file("rtdose.dcm"), RenderOptions::default());
    let last = render_png(
        &file("rtdose.dcm"),
        RenderOptions {
            frame: Some(15),
            ..Default::default()
        },
    );
    assert!(first != last, "dose frames 1 and 15 render the same");
}

#[test]
fn render_htj2k() {
    let img = render_png(&htj2k_object(), RenderOptions::default()).to_luma8();
    assert_eq!((img.width(), img.height()), (16, 8));
}

// ----- errors --------------------------------------------------------------------------------

#[test]
fn errors_are_reported_readably() {
    // not DICOM
    let err = render(b"hello world", &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, PixelError::Parse(_)), "{err:?}");

    // no pixel data
    let err = decode_frame(&file("rtplan.dcm"), 1).unwrap_err();
    assert!(matches!(err, PixelError::NotAnImage), "{err:?}");
    assert!(err.to_string().contains("Pixel Data"), "{err}");
    assert!(matches!(
        render(&file("rtplan.dcm"), &RenderOptions::default()),
        Err(PixelError::NotAnImage)
    ));

    // a transfer syntax without a decoder here (JPEG XL)
    let jxl = modified(&file("MR_small_RLE.dcm"), |obj| {
        obj.update_meta(|m| m.transfer_syntax = uids::JPEGXL_LOSSLESS.to_string());
    });
    for err in [
        decode_frame(&jxl, 1).unwrap_err(),
        transcode_to_explicit_le(&jxl).unwrap_err(),
        render(&jxl, &RenderOptions::default()).unwrap_err(),
    ] {
        assert!(
            matches!(err, PixelError::UnsupportedTransferSyntax(ref ts) if ts.contains(uids::JPEGXL_LOSSLESS)),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 406);
    }

    // corrupt compressed data
    let broken = modified(&file("MR_small_RLE.dcm"), |obj| {
        obj.put(DataElement::new_with_len(
            tags::PIXEL_DATA,
            VR::OB,
            Length::UNDEFINED,
            PixelFragmentSequence::new(vec![0], vec![vec![1, 2, 3, 4]]),
        ));
    });
    let err = decode_frame(&broken, 1).unwrap_err();
    assert!(matches!(err, PixelError::Decode(_)), "{err:?}");

    // bad quality
    assert!(matches!(
        render(
            &file("CT_small.dcm"),
            &RenderOptions {
                quality: Some(0),
                ..Default::default()
            }
        ),
        Err(PixelError::InvalidArgument(_))
    ));
}

/// Rows, Columns, Samples per Pixel and Number of Frames come from the data set: frame sizes
/// and offsets computed from them are checked, never wrapped, and a frame too large to decode
/// is refused before a decoder allocates it.
#[test]
fn frame_arithmetic_on_hostile_values_is_checked() {
    let info = ImageInfo {
        rows: 65535,
        columns: 65535,
        samples_per_pixel: 3,
        bits_allocated: 32,
        frames: u32::MAX,
        photometric: "RGB".into(),
        planar: false,
    };
    assert!(info.decoded_frame_len().is_err());
    // frame_bits x index overflows u64: an error, not a wrapped offset into the data
    assert!(native_frame(&[0u8; 64], &info, u32::MAX - 1).is_err());
    let small = ImageInfo {
        rows: 2,
        columns: 2,
        samples_per_pixel: 1,
        bits_allocated: 8,
        frames: 4,
        photometric: "MONOCHROME2".into(),
        planar: false,
    };
    assert_eq!(small.decoded_frame_len().unwrap(), 4);
    assert_eq!(
        native_frame(&[1, 2, 3, 4, 5, 6, 7, 8], &small, 1).unwrap(),
        [5, 6, 7, 8]
    );
    assert!(native_frame(&[1, 2, 3, 4, 5, 6, 7, 8], &small, 2).is_err());
}
