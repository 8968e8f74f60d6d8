//! sRGB display colours as the CIELab triplets of Recommended Display CIELab Value (0062,000D).

/// Reference white of the conversion: D65, the white point of sRGB (as dcmqi and highdicom
/// convert, so viewers show the colour the manifest asked for).
const WHITE_D65: [f64; 3] = [0.950_47, 1.0, 1.088_83];

/// Converts an sRGB colour (0-255 per channel) to the DICOM encoding of CIELab: PS3.3
/// C.10.7.1.1 scales L* from 0..100 and a*, b* from -128..127 linearly onto 0..0xFFFF (the ICC
/// PCSLab 16-bit encoding), so neutral grey has a* = b* = 0x8080.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let [l, a, b] = srgb_to_lab(rgb);
    let scale =
        |v: f64, lo: f64, span: f64| ((v - lo) * 65535.0 / span).round().clamp(0.0, 65535.0) as u16;
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 255.0),
        scale(b, -128.0, 255.0),
    ]
}

/// CIE L*a*b* (D65) of an sRGB colour.
fn srgb_to_lab(rgb: [u8; 3]) -> [f64; 3] {
    // IEC 61966-2-1: undo the sRGB transfer function, then the sRGB primaries to XYZ.
    let lin = rgb.map(|c| {
        let c = f64::from(c) / 255.0;
        if c <= 0.040_45 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    let [r, g, b] = lin;
    let xyz = [
        0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b,
        0.212_672_9 * r + 0.715_152_2 * g + 0.072_175_0 * b,
        0.019_333_9 * r + 0.119_192_0 * g + 0.950_304_1 * b,
    ];
    // CIE 15: f(t) = t^(1/3) above (6/29)^3, linear below.
    let f = |t: f64| {
        const DELTA: f64 = 6.0 / 29.0;
        if t > DELTA * DELTA * DELTA {
            t.cbrt()
        } else {
            t / (3.0 * DELTA * DELTA) + 4.0 / 29.0
        }
    };
    let [fx, fy, fz] = [0, 1, 2].map(|i| f(xyz[i] / WHITE_D65[i]));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_black_and_grey_are_neutral() {
        assert_eq!(srgb_to_dicom_lab([255, 255, 255]), [65535, 0x8080, 0x8080]);
        assert_eq!(srgb_to_dicom_lab([0, 0, 0]), [0, 0x8080, 0x8080]);
        let grey = srgb_to_dicom_lab([119, 119, 119]);
        assert_eq!(&grey[1..], &[0x8080, 0x8080]);
    }

    #[test]
    fn pure_red_matches_the_published_lab_values() {
        // sRGB red is L* 53.24, a* 80.09, b* 67.20 (D65).
        let [l, a, b] = srgb_to_lab([255, 0, 0]);
        assert!((l - 53.24).abs() < 0.01, "{l}");
        assert!((a - 80.09).abs() < 0.01, "{a}");
        assert!((b - 67.20).abs() < 0.01, "{b}");
    }
}
