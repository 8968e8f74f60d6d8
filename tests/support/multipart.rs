//! multipart/related bodies for the DICOMweb tests: splitting responses, building STOW-RS
//! requests.

/// One part: its headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str())
    }
}

/// The boundary parameter of a Content-Type.
pub fn boundary(content_type: &str) -> String {
    content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no boundary in {content_type:?}"))
}

/// Splits a multipart body (RFC 2046 5.1) into its parts.
pub fn parse(content_type: &str, body: &[u8]) -> Vec<Part> {
    let delimiter = format!("--{}", boundary(content_type)).into_bytes();
    let find = |from: usize| -> Option<usize> {
        body[from..]
            .windows(delimiter.len())
            .position(|w| w == &delimiter[..])
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut pos = find(0).expect("first boundary");
    loop {
        let after = pos + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let header_start = after + 2; // CRLF
        let header_end = body[header_start..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of part headers")
            + header_start;
        let headers = String::from_utf8_lossy(&body[header_start..header_end])
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let content_start = header_end + 4;
        let next = find(content_start).expect("next boundary");
        // the CRLF before a delimiter belongs to the delimiter
        let content_end = next - 2;
        parts.push(Part {
            headers,
            body: body[content_start..content_end].to_vec(),
        });
        pos = next;
    }
    parts
}

/// A STOW-RS body from (content type, bytes) parts; returns (Content-Type header, body).
pub fn build(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "test-boundary-7e3b1c";
    let mut body = Vec::new();
    for (ct, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {ct}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        body,
    )
}
