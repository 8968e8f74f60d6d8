//! Media types: parsing `Accept` headers (RFC 9110 12.5.1) and writing multipart/related
//! bodies (RFC 2387) as PS3.18 8.7 uses them.

use bytes::Bytes;
use dicom_dictionary_std::uids;

/// Explicit VR Big Endian: retired (PS3.5 A.3, hence deprecated in the dictionary) but still
/// received from old modalities; its native frames are not the little endian bytes.
#[allow(deprecated)]
pub const EXPLICIT_VR_BIG_ENDIAN: &str = uids::EXPLICIT_VR_BIG_ENDIAN;

/// One media range of an Accept header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// e.g. `multipart/related`, lower case
    pub essence: String,
    /// the `type` parameter of multipart/related, lower case, unquoted
    pub part_type: Option<String>,
    /// the `transfer-syntax` parameter
    pub transfer_syntax: Option<String>,
    pub q: f32,
}

impl MediaRange {
    fn matches(&self, essence: &str) -> bool {
        let (want_main, _) = essence.split_once('/').unwrap_or((essence, ""));
        self.essence == "*/*"
            || self.essence == essence
            || (self.essence.ends_with("/*")
                && self.essence.starts_with(want_main)
                && self.essence.len() == want_main.len() + 2)
    }

    /// Whether this range accepts a multipart/related response whose parts are `part`.
    pub fn accepts_multipart_of(&self, part: &str) -> bool {
        if self.essence == "*/*" || self.essence == "multipart/*" {
            return true;
        }
        self.essence == "multipart/related"
            && self
                .part_type
                .as_deref()
                .is_none_or(|t| t == part || t == "*/*")
    }
}

/// Parses an Accept header; a missing or empty header accepts anything.
pub fn parse_accept(header: Option<&str>) -> Vec<MediaRange> {
    let Some(header) = header.filter(|h| !h.trim().is_empty()) else {
        return vec![MediaRange {
            essence: "*/*".into(),
            part_type: None,
            transfer_syntax: None,
            q: 1.0,
        }];
    };
    let mut out = Vec::new();
    for item in split_outside_quotes(header, ',') {
        let mut pieces = split_outside_quotes(&item, ';').into_iter();
        let essence = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if essence.is_empty() {
            continue;
        }
        let mut range = MediaRange {
            essence,
            part_type: None,
            transfer_syntax: None,
            q: 1.0,
        };
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "type" => range.part_type = Some(v.to_ascii_lowercase()),
                "transfer-syntax" => range.transfer_syntax = Some(v.to_string()),
                "q" => range.q = v.parse().unwrap_or(1.0),
                _ => {}
            }
        }
        out.push(range);
    }
    out.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    out
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Whether any range accepts `essence` (a single-part response such as application/dicom+json).
pub fn accepts(ranges: &[MediaRange], essence: &str) -> bool {
    ranges.iter().any(|r| r.q > 0.0 && r.matches(essence))
}

/// The transfer syntax a client wants for multipart responses with parts of type `part`:
/// `Some("*")` for "as stored", `Some(uid)` for that syntax, `None` when no range accepts such
/// a response. Without a transfer-syntax parameter the default is Explicit VR Little Endian
/// (PS3.18 8.7.3.5.2).
pub fn wanted_transfer_syntaxes(ranges: &[MediaRange], part: &str) -> Vec<String> {
    ranges
        .iter()
        .filter(|r| r.q > 0.0 && r.accepts_multipart_of(part))
        .map(|r| {
            r.transfer_syntax
                .clone()
                .unwrap_or_else(|| uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string())
        })
        .collect()
}

/// A multipart/related body under construction.
pub struct Multipart {
    boundary: String,
}

impl Multipart {
    pub fn new() -> Multipart {
        // A boundary that cannot occur in the parts: random enough for DICOM payloads.
        let n: u128 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Multipart {
            boundary: format!("pacs-{n:x}-{:x}", std::process::id()),
        }
    }

    /// The Content-Type of the whole body.
    pub fn content_type(&self, part_type: &str) -> String {
        format!(
            "multipart/related; type=\"{part_type}\"; boundary={}",
            self.boundary
        )
    }

    /// Bytes that open a part.
    pub fn part_header(&self, content_type: &str, extra: &[(&str, String)]) -> Bytes {
        let mut h = format!("--{}\r\nContent-Type: {content_type}\r\n", self.boundary);
        for (k, v) in extra {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        Bytes::from(h)
    }

    /// Bytes that close a part.
    pub fn part_end(&self) -> Bytes {
        Bytes::from_static(b"\r\n")
    }

    /// The closing delimiter.
    pub fn close(&self) -> Bytes {
        Bytes::from(format!("--{}--\r\n", self.boundary))
    }

    /// A whole body from parts held in memory.
    pub fn body(&self, parts: Vec<(String, Bytes)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (ct, bytes) in parts {
            out.extend_from_slice(&self.part_header(&ct, &[]));
            out.extend_from_slice(&bytes);
            out.extend_from_slice(&self.part_end());
        }
        out.extend_from_slice(&self.close());
        out
    }
}

impl Default for Multipart {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_media_type;

    #[test]
    fn frame_media_types_follow_ps3_18() {
        let cases = [
            (uids::JPEG_BASELINE8_BIT, Some("image/jpeg")),
            (uids::JPEG_EXTENDED12_BIT, Some("image/jpeg")),
            (uids::JPEG_LOSSLESS, Some("image/jpeg")),
            (uids::JPEG_LOSSLESS_SV1, Some("image/jpeg")),
            (uids::JPEGLS_LOSSLESS, Some("image/jls")),
            (uids::JPEGLS_NEAR_LOSSLESS, Some("image/jls")),
            (uids::JPEG2000_LOSSLESS, Some("image/jp2")),
            (uids::JPEG2000, Some("image/jp2")),
            (uids::HTJ2K_LOSSLESS, Some("image/jphc")),
            (uids::HTJ2K_LOSSLESS_RPCL, Some("image/jphc")),
            (uids::HTJ2K, Some("image/jphc")),
            (uids::RLE_LOSSLESS, Some("image/dicom-rle")),
            (uids::MPEG2MPML, Some("video/mpeg")),
            (uids::IMPLICIT_VR_LITTLE_ENDIAN, None),
            (uids::EXPLICIT_VR_LITTLE_ENDIAN, None),
            (EXPLICIT_VR_BIG_ENDIAN, None),
            (uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, None),
            (uids::JPEG2000MC, Some("image/jpx")),
            (uids::JPEGXL, Some("image/jxl")),
            (uids::HEVCMP51, Some("video/mp4")),
            (
                uids::ENCAPSULATED_UNCOMPRESSED_EXPLICIT_VR_LITTLE_ENDIAN,
                Some("application/octet-stream"),
            ),
            ("1.2.3", None),
        ];
        for (uid, media_type) in cases {
            assert_eq!(frame_media_type(uid), media_type, "{uid}");
        }
        // UIDs padded to even length (PS3.5 9.1) are the same UID
        let padded = format!("{}\0", uids::JPEG_BASELINE8_BIT);
        assert_eq!(frame_media_type(&padded), Some("image/jpeg"));
    }

    #[test]
    fn parses_dicomweb_accept_headers() {
        let r = parse_accept(Some(
            "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*, application/json;q=0.5",
        ));
        assert_eq!(r[0].essence, "multipart/related");
        assert_eq!(r[0].part_type.as_deref(), Some("application/octet-stream"));
        assert_eq!(r[0].transfer_syntax.as_deref(), Some("*"));
        assert!(accepts(&r, "application/json"));
        assert!(!accepts(&r, "application/dicom+json"));
        assert_eq!(
            wanted_transfer_syntaxes(&r, "application/octet-stream"),
            vec!["*".to_string()]
        );
        assert!(wanted_transfer_syntaxes(&r, "application/dicom").is_empty());
        let any = parse_accept(None);
        assert_eq!(
            wanted_transfer_syntaxes(&any, "application/dicom"),
            vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.to_string()]
        );
        assert!(accepts(
            &parse_accept(Some("application/*")),
            "application/dicom+json"
        ));
    }
}
