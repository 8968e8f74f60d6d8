//! What the HTTP front-end counts, through the `metrics` facade (the node installs the
//! recorder and serves `/metrics`): every request's time by matched route, method and status
//! class, and the instances STOW-RS stored.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Metrics of this crate: name, kind, help.
pub const METRICS: &[(&str, &str, &str)] = &[(
    REQUEST_DURATION,
    "histogram",
    "HTTP requests from arrival to the response head, by matched route template, method, service (qido, wado, stow, api, other) and status class (2xx...)",
)];

pub const REQUEST_DURATION: &str = "pacs_http_request_duration_seconds";
/// The DIMSE front-end's names (declared and described by `pacs-dimse`, whose C-STORE counts
/// under `protocol="dimse"`; the two protocol crates do not depend on each other).
const RECEIVED_INSTANCES: &str = "pacs_received_instances_total";
const RECEIVED_BYTES: &str = "pacs_received_bytes_total";

/// The route a request matched, put into its response by [`tag_route`] for the layer that
/// records the request's time (which runs outside the router and cannot see it otherwise).
#[derive(Clone)]
pub(crate) struct MatchedRoute(pub MatchedPath);

/// A route layer: tells the outer layers which route answered.
pub(crate) async fn tag_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(MatchedRoute(m));
    }
    response
}

/// Records one request. `route` is the matched template (`/dicom-web/studies/{study}`), or
/// `unmatched` (the viewer's files, unknown paths, requests refused before routing).
pub(crate) fn record_request(
    dicomweb_root: &str,
    method: &Method,
    response: &Response,
    took: Duration,
) {
    let route = response
        .extensions()
        .get::<MatchedRoute>()
        .map(|m| m.0.as_str().to_string());
    let service = service(dicomweb_root, method, route.as_deref());
    metrics::histogram!(
        REQUEST_DURATION,
        "route" => route.unwrap_or_else(|| "unmatched".into()),
        "method" => method_label(method),
        "service" => service,
        "status" => status_class(response.status()),
    )
    .record(took.as_secs_f64());
}

/// The PS3.18 service of a route: STOW-RS (POST under the root), QIDO-RS (GET of a
/// `studies`, `series` or `instances` collection), WADO-RS (any other GET under the root),
/// `api` (the node's `/api/...`), else `other`.
pub(crate) fn service(dicomweb_root: &str, method: &Method, route: Option<&str>) -> &'static str {
    let Some(route) = route else {
        return "other";
    };
    let root = dicomweb_root.trim_end_matches('/');
    match route.strip_prefix(root).filter(|r| r.starts_with('/')) {
        Some(_) if method == Method::POST => "stow",
        Some(rest)
            if rest.ends_with("/studies")
                || rest.ends_with("/series")
                || rest.ends_with("/instances") =>
        {
            "qido"
        }
        Some(_) => "wado",
        None if route.starts_with("/api/") => "api",
        None => "other",
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// An instance STOW-RS stored (success or warning), `bytes` its part.
pub(crate) fn stow_received(bytes: u64) {
    metrics::counter!(RECEIVED_INSTANCES, "protocol" => "stow", "calling_ae" => "").increment(1);
    metrics::counter!(RECEIVED_BYTES, "protocol" => "stow", "calling_ae" => "").increment(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_their_service() {
        let r = "/dicom-web";
        let cases = [
            (Method::GET, "/dicom-web/studies", "qido"),
            (Method::GET, "/dicom-web/studies/{study}/series", "qido"),
            (
                Method::GET,
                "/dicom-web/studies/{study}/series/{series}/instances",
                "qido",
            ),
            (Method::GET, "/dicom-web/studies/{study}", "wado"),
            (Method::GET, "/dicom-web/studies/{study}/metadata", "wado"),
            (
                Method::GET,
                "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
                "wado",
            ),
            (Method::POST, "/dicom-web/studies", "stow"),
            (Method::POST, "/dicom-web/studies/{study}", "stow"),
            (Method::GET, "/api/statistics", "api"),
            (Method::GET, "/healthz", "other"),
            (Method::GET, "/dicom-webby", "other"),
        ];
        for (method, route, expected) in cases {
            assert_eq!(service(r, &method, Some(route)), expected, "{route}");
        }
        assert_eq!(service(r, &Method::GET, None), "other");
    }
}
