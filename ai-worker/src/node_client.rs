//! The worker's side of the node's HTTP interfaces: the job queue (`/api/worker/...`, see the
//! node's `src/ai/api.rs`), WADO-RS to fetch a series and STOW-RS to store results (PS3.18).
//! Every request carries the worker token as a bearer token.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

/// A job as the node hands it out (a subset of the node's job record).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: i64,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub model: String,
    pub model_version: String,
    pub run: i64,
    pub attempts: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {source}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: {message}")]
    Body { what: String, message: String },
}

/// What the node says about a job the worker reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The worker still holds the job.
    Yes,
    /// It does not (lease expired and re-leased, or cancelled): drop the job.
    Lost,
}

/// HTTP client of one node.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    dicomweb: String,
    token: String,
}

impl NodeClient {
    /// `base` is the node's HTTP address (`http://host:port`), `dicomweb_root` the path of its
    /// DICOMweb service (`/dicom-web`).
    pub fn new(base: &str, dicomweb_root: &str, token: &str) -> Result<NodeClient, ClientError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Http {
                what: "HTTP client".into(),
                source,
            })?;
        let base = base.trim_end_matches('/').to_string();
        let dicomweb = format!("{base}/{}", dicomweb_root.trim_matches('/'));
        Ok(NodeClient {
            http,
            base,
            dicomweb,
            token: token.to_string(),
        })
    }

    async fn post_json(
        &self,
        what: &str,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let http = |source| ClientError::Http {
            what: what.into(),
            source,
        };
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        Ok((status, bytes))
    }

    /// Leases the next job for one of `models`, or `None` when there is nothing to do.
    pub async fn lease(
        &self,
        worker: &str,
        models: &[String],
        lease_secs: u64,
    ) -> Result<Option<Job>, ClientError> {
        let what = "lease";
        let body = json!({ "worker": worker, "models": models, "lease_secs": lease_secs });
        let (status, bytes) = self
            .post_json(what, "/api/worker/lease", body, Duration::from_secs(30))
            .await?;
        match status {
            StatusCode::NO_CONTENT => Ok(None),
            StatusCode::OK => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ClientError::Body {
                        what: what.into(),
                        message: e.to_string(),
                    })
            }
            status => Err(status_error(what, status, &bytes)),
        }
    }

    async fn report(
        &self,
        what: &str,
        job: i64,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<Held, ClientError> {
        let path = format!("/api/worker/jobs/{job}/{verb}");
        let (status, bytes) = self
            .post_json(what, &path, body, Duration::from_secs(30))
            .await?;
        match status {
            StatusCode::OK => Ok(Held::Yes),
            StatusCode::CONFLICT => Ok(Held::Lost),
            status => Err(status_error(what, status, &bytes)),
        }
    }

    pub async fn heartbeat(
        &self,
        job: i64,
        worker: &str,
        lease_secs: u64,
    ) -> Result<Held, ClientError> {
        let body = json!({ "worker": worker, "lease_secs": lease_secs });
        self.report("heartbeat", job, "heartbeat", body).await
    }

    pub async fn complete(
        &self,
        job: i64,
        worker: &str,
        result: serde_json::Value,
    ) -> Result<Held, ClientError> {
        let body = json!({ "worker": worker, "result": result });
        self.report("complete", job, "complete", body).await
    }

    pub async fn fail(
        &self,
        job: i64,
        worker: &str,
        error: &str,
        retryable: bool,
    ) -> Result<Held, ClientError> {
        let body = json!({ "worker": worker, "error": error, "retryable": retryable });
        self.report("fail", job, "fail", body).await
    }

    pub async fn release(&self, job: i64, worker: &str) -> Result<Held, ClientError> {
        self.report("release", job, "release", json!({ "worker": worker }))
            .await
    }

    /// WADO-RS RetrieveSeries (PS3.18 10.4) in the stored transfer syntaxes
    /// (`transfer-syntax=*`): one Part 10 file per instance.
    pub async fn fetch_series(&self, study: &str, series: &str) -> Result<Vec<Bytes>, ClientError> {
        let what = format!("WADO-RS series {series}");
        let http = |source| ClientError::Http {
            what: what.clone(),
            source,
        };
        let response = self
            .http
            .get(format!("{}/studies/{study}/series/{series}", self.dicomweb))
            .bearer_auth(&self.token)
            .header(
                reqwest::header::ACCEPT,
                "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
            )
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.bytes().await.map_err(http)?;
        if status != StatusCode::OK {
            return Err(status_error(&what, status, &body));
        }
        let boundary = boundary(&content_type).ok_or_else(|| ClientError::Body {
            what: what.clone(),
            message: format!("Content-Type {content_type:?} is not multipart with a boundary"),
        })?;
        // multer reads any multipart body (its `parse_boundary` only accepts form-data, hence
        // `boundary` below); a part needs no Content-Disposition to be read.
        let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut parts = Vec::new();
        loop {
            match multipart.next_field().await {
                Ok(Some(field)) => {
                    let bytes = field.bytes().await.map_err(|e| ClientError::Body {
                        what: what.clone(),
                        message: e.to_string(),
                    })?;
                    parts.push(bytes);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ClientError::Body {
                        what: what.clone(),
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(parts)
    }

    /// STOW-RS into `study` (PS3.18 10.5): every object must be stored, or already be there
    /// (a retried job storing the same SOP Instance UIDs again).
    pub async fn store(&self, study: &str, objects: &[Vec<u8>]) -> Result<(), ClientError> {
        let what = format!("STOW-RS into study {study}");
        let boundary = format!("pacs-ai-worker-{}", uuid::Uuid::new_v4().simple());
        let mut body = Vec::with_capacity(objects.iter().map(|o| o.len() + 128).sum());
        for object in objects {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(object);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let http = |source| ClientError::Http {
            what: what.clone(),
            source,
        };
        let response = self
            .http
            .post(format!("{}/studies/{study}", self.dicomweb))
            .bearer_auth(&self.token)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(body)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(http)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http)?;
        // 200: all stored; 202: stored with warnings (e.g. an identical object already there).
        if status == StatusCode::OK || status == StatusCode::ACCEPTED {
            let failed = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("00081198").cloned());
            if let Some(failed) = failed {
                return Err(ClientError::Body {
                    what,
                    message: format!("the node refused objects: {failed}"),
                });
            }
            return Ok(());
        }
        Err(status_error(&what, status, &bytes))
    }
}

/// The boundary parameter of a `multipart/...` Content-Type (RFC 2046 5.1.1), unquoted.
fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let media = params.next()?.trim();
    if !media.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

fn status_error(what: &str, status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Status {
        what: what.into(),
        status,
        body: String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned(),
    }
}

impl ClientError {
    /// Worth trying the job again later (up to the node's attempt limit): the node or the
    /// network, not the series. A 4xx answer (series gone, access refused) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Http { .. } => true,
            ClientError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            // a response the worker cannot read: the node's problem, not the series'
            ClientError::Body { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::boundary;

    #[test]
    fn boundary_of_a_multipart_related_content_type() {
        assert_eq!(
            boundary("multipart/related; type=\"application/dicom\"; boundary=abc-1").as_deref(),
            Some("abc-1")
        );
        assert_eq!(
            boundary("Multipart/Related; BOUNDARY=\"q r\"; type=application/dicom").as_deref(),
            Some("q r")
        );
        assert_eq!(boundary("application/dicom; boundary=x"), None);
        assert_eq!(boundary("multipart/related; type=application/dicom"), None);
    }
}
