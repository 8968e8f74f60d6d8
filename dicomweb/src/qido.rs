//! QIDO-RS (PS3.18 10.6): search for studies, series and instances.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::archive::{SearchLevel, SearchRequest};
use crate::error::HttpError;
use crate::identity::Identity;
use crate::{base_url, AppState};

/// Parameters that are not matching keys (PS3.18 8.3.4).
fn parse_query(
    raw: Option<&str>,
    level: SearchLevel,
    study: Option<String>,
    series: Option<String>,
    base: String,
) -> Result<SearchRequest, HttpError> {
    let mut request = SearchRequest {
        level,
        study,
        series,
        filters: Vec::new(),
        include: Vec::new(),
        fuzzy: false,
        limit: None,
        offset: 0,
        base_url: base,
    };
    for (key, value) in form_pairs(raw.unwrap_or("")) {
        match key.as_str() {
            "includefield" => request.include.extend(
                value
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            ),
            "limit" => {
                request.limit = Some(value.parse().map_err(|_| {
                    HttpError::bad_request(format!("limit must be a number, not {value:?}"))
                })?)
            }
            "offset" => {
                request.offset = value.parse().map_err(|_| {
                    HttpError::bad_request(format!("offset must be a number, not {value:?}"))
                })?
            }
            "fuzzymatching" => request.fuzzy = value.eq_ignore_ascii_case("true"),
            // accepted and ignored: we answer UTC times as stored
            "timezoneadjustment" => {}
            _ => request.filters.push((key, value)),
        }
    }
    Ok(request)
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded.
pub(crate) fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// `+` is a space, `%XX` the byte XX; a `%` not followed by two hex digits stays as it is;
/// bytes that are not UTF-8 become U+FFFD.
fn percent_decode(s: &str) -> String {
    let mut rest = s.as_bytes();
    let mut out = Vec::with_capacity(rest.len());
    while let Some((&b, after)) = rest.split_first() {
        rest = after;
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                // two hex digits (from_str_radix alone would take "+1")
                let hex = rest
                    .get(..2)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(decoded) => {
                        out.push(decoded);
                        rest = rest.get(2..).unwrap_or_default();
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn search(
    state: Arc<AppState>,
    identity: Identity,
    headers: &HeaderMap,
    uri: &Uri,
    level: SearchLevel,
    study: Option<String>,
    series: Option<String>,
) -> Result<Response, HttpError> {
    let ranges =
        crate::media::parse_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let json_type = if crate::media::accepts(&ranges, "application/dicom+json") {
        "application/dicom+json"
    } else if crate::media::accepts(&ranges, "application/json") {
        "application/json"
    } else {
        return Err(HttpError::not_acceptable(
            "QIDO-RS answers application/dicom+json (application/dicom+xml is not supported)",
        ));
    };
    let request = parse_query(
        uri.query(),
        level,
        study,
        series,
        base_url(&state, headers, uri)?,
    )?;
    let result = state.archive.search(request, &identity).await?;
    let body = serde_json::to_vec(&result.datasets)
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut response = (StatusCode::OK, [(header::CONTENT_TYPE, json_type)], body).into_response();
    if result.truncated {
        // PS3.18 8.3.4.4.1: say that there are more results than were returned.
        let warning = format!(
            "299 pacs \"The number of results exceeded the maximum supported by the server ({}). Additional results can be requested.\"",
            result.limit
        );
        if let Ok(v) = HeaderValue::try_from(warning) {
            response.headers_mut().insert(header::WARNING, v);
        }
    }
    Ok(response)
}

pub async fn studies(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(s, identity, &headers, &uri, SearchLevel::Study, None, None).await
}

pub async fn all_series(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(s, identity, &headers, &uri, SearchLevel::Series, None, None).await
}

pub async fn all_instances(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(
        s,
        identity,
        &headers,
        &uri,
        SearchLevel::Instance,
        None,
        None,
    )
    .await
}

pub async fn study_series(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(
        s,
        identity,
        &headers,
        &uri,
        SearchLevel::Series,
        Some(study),
        None,
    )
    .await
}

pub async fn study_instances(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path(study): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(
        s,
        identity,
        &headers,
        &uri,
        SearchLevel::Instance,
        Some(study),
        None,
    )
    .await
}

pub async fn series_instances(
    State(s): State<Arc<AppState>>,
    identity: Identity,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, HttpError> {
    search(
        s,
        identity,
        &headers,
        &uri,
        SearchLevel::Instance,
        Some(study),
        Some(series),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_strings() {
        let pairs = form_pairs(
            "PatientName=DOE%5EJ*&includefield=00081030,StudyID&limit=5&x=a+b&bad=%zz&end=%4",
        );
        assert_eq!(pairs[0], ("PatientName".into(), "DOE^J*".into()));
        assert_eq!(pairs[1], ("includefield".into(), "00081030,StudyID".into()));
        assert_eq!(pairs[3], ("x".into(), "a b".into()));
        assert_eq!(pairs[4], ("bad".into(), "%zz".into()));
        assert_eq!(pairs[5], ("end".into(), "%4".into()));
    }

    #[test]
    fn percent_decoding_never_reads_past_the_end() {
        for (raw, decoded) in [
            ("%", "%"),
            ("%%", "%%"),
            ("%4", "%4"),
            ("%41", "A"),
            ("a%41%", "aA%"),
            ("%+1", "% 1"),
            ("%e9t%C3%A9", "\u{FFFD}t\u{e9}"),
            ("%C3", "\u{FFFD}"),
            ("%00", "\0"),
            ("\u{e9}%2", "\u{e9}%2"),
        ] {
            assert_eq!(percent_decode(raw), decoded, "{raw:?}");
        }
        assert_eq!(
            form_pairs("=&&a=&=b"),
            [
                ("".into(), "".into()),
                ("a".into(), "".into()),
                ("".into(), "b".into())
            ]
        );
    }
}
