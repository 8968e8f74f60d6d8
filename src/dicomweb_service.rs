//! The archive behind the DICOMweb front-end: QIDO-RS through the shared query engine,
//! WADO-RS from the index (metadata, frame positions) and ranged reads of stored objects,
//! STOW-RS through the same ingest path as C-STORE.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use pacs_dicomweb::archive::{
    ArchiveError, BulkData, ByteStream, InstanceInfo, Metadata, ReceivedPart, RenderRequest,
    Rendered, Scope, SearchLevel, SearchRequest, SearchResponse, StoreResult, StoredFrames,
};

use pacs_dicomweb::Identity;

use crate::audit::{AuditEvent, EventKind, ObjectRef, Outcome, Participant, StoredNote, StudyRef};
use crate::index::{Index, IndexError, InstanceFilter, LocatedInstance};

/// The SOP class a QIDO-RS query is recorded under (PS3.15 A.5.3.10 names the query's SOP
/// class): Study Root Query/Retrieve Information Model - FIND.
const QIDO_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.2.2.1";
use crate::ingest::{Incoming, Ingest, IngestError, IngestOutcome, Origin};
use crate::query::{Include, Level, Query, QueryError};
use crate::storage::{Storage, StorageError};
use crate::uid::Uid;

/// Settings of the DICOMweb archive.
#[derive(Debug, Clone)]
pub struct DicomWebArchiveConfig {
    /// Results a search returns at most (and when no limit is asked for).
    pub max_results: usize,
}

pub struct DicomWebArchive {
    pub ingest: Arc<Ingest>,
    pub config: DicomWebArchiveConfig,
    /// Where queries, reads and stores are recorded.
    pub audit: crate::audit::Audit,
}

fn index_err(e: IndexError) -> ArchiveError {
    match e {
        IndexError::Unavailable(m) | IndexError::OutcomeUnknown(m) => ArchiveError::Unavailable(m),
        other => ArchiveError::Internal(other.to_string()),
    }
}

fn storage_err(e: StorageError) -> ArchiveError {
    ArchiveError::Internal(format!("stored object unreadable: {e}"))
}

fn pixel_err(e: crate::pixels::PixelError) -> ArchiveError {
    match e.http_status() {
        400 => ArchiveError::BadRequest(e.to_string()),
        404 => ArchiveError::NotFound(e.to_string()),
        406 => ArchiveError::NotAcceptable(e.to_string()),
        _ => ArchiveError::Internal(e.to_string()),
    }
}

fn query_err(e: QueryError) -> ArchiveError {
    match e {
        QueryError::Index(e) => index_err(e),
        other => ArchiveError::BadRequest(other.to_string()),
    }
}

/// Validates the UIDs of a resource path (400 for anything that is not a UID).
fn check_scope(scope: &Scope) -> Result<(), ArchiveError> {
    let check = |what: &str, v: &str| {
        Uid::parse(v)
            .map(|_| ())
            .map_err(|e| ArchiveError::BadRequest(format!("{what}: {e}")))
    };
    check("study", &scope.study)?;
    if let Some(s) = &scope.series {
        check("series", s)?;
    }
    if let Some(i) = &scope.instance {
        check("instance", i)?;
    }
    Ok(())
}

impl DicomWebArchive {
    fn index(&self) -> &Arc<dyn Index> {
        self.ingest.index()
    }

    fn storage(&self) -> &Storage {
        self.ingest.storage()
    }

    fn not_found(scope: &Scope) -> ArchiveError {
        ArchiveError::NotFound(match (&scope.series, &scope.instance) {
            (_, Some(i)) => format!("no instance {i} in that study and series"),
            (Some(s), None) => format!("no series {s} in study {}", scope.study),
            _ => format!("no study {}", scope.study),
        })
    }

    /// Each instance in scope, in series then instance order, with its stored metadata when
    /// `with_metadata`; NotFound when there are none.
    async fn select_scope(
        &self,
        scope: &Scope,
        with_metadata: bool,
    ) -> Result<Vec<(LocatedInstance, Option<Vec<u8>>)>, ArchiveError> {
        check_scope(scope)?;
        let filter = InstanceFilter {
            studies: vec![scope.study.clone()],
            series: scope.series.iter().cloned().collect(),
            instances: scope.instance.iter().cloned().collect(),
            ..Default::default()
        };
        let rows = self
            .index()
            .instances_in(&filter, with_metadata)
            .await
            .map_err(index_err)?;
        if rows.is_empty() {
            return Err(Self::not_found(scope));
        }
        Ok(rows)
    }

    /// (study, series, instance, transfer syntax, size, object key) of each instance in scope.
    async fn scope_rows(&self, scope: &Scope) -> Result<Vec<(InstanceInfo, String)>, ArchiveError> {
        let rows = self.select_scope(scope, false).await?;
        Ok(rows
            .into_iter()
            .map(|(i, _)| {
                (
                    InstanceInfo {
                        study: i.study_instance_uid,
                        series: i.series_instance_uid,
                        instance: i.sop_instance_uid,
                        transfer_syntax_uid: i.transfer_syntax_uid,
                        size: i.size_bytes as u64,
                        handle: i.object_key.clone(),
                    },
                    i.object_key,
                )
            })
            .collect())
    }

    /// The one instance a scope names (an instance scope), with its object key.
    async fn one_instance(&self, scope: &Scope) -> Result<(InstanceInfo, String), ArchiveError> {
        let rows = self.scope_rows(scope).await?;
        let first_series = match rows.first() {
            Some((first, _)) if scope.instance.is_none() => first.series.clone(),
            _ => {
                return rows
                    .into_iter()
                    .next()
                    .ok_or_else(|| Self::not_found(scope))
            }
        };
        // a series or study: its representative image is the middle instance of its first
        // series (a scout or a localizer is usually first)
        let series: Vec<_> = rows
            .into_iter()
            .filter(|(i, _)| i.series == first_series)
            .collect();
        let middle = series.len() / 2;
        series
            .into_iter()
            .nth(middle)
            .ok_or_else(|| Self::not_found(scope))
    }

    async fn object_bytes(&self, key: &str) -> Result<Bytes, ArchiveError> {
        self.storage().get(key).await.map_err(storage_err)
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
    ) -> Result<T, ArchiveError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ArchiveError::Internal(e.to_string()))?
    }

    /// An encapsulated document as it is, in its own media type (PS3.18 8.3.5): one frame,
    /// no thumbnail image, and 406 unless the client accepts that type.
    async fn render_document(
        &self,
        key: &str,
        request: &RenderRequest,
    ) -> Result<Rendered, ArchiveError> {
        if request.thumbnail {
            return Err(ArchiveError::NotAcceptable(
                "an encapsulated document has no thumbnail image".into(),
            ));
        }
        if request.frame.is_some_and(|f| f != 1) {
            return Err(ArchiveError::NotFound(
                "an encapsulated document has one frame".into(),
            ));
        }
        let bytes = self.object_bytes(key).await?;
        let document =
            Self::blocking(move || crate::documents::read(&bytes).map_err(ArchiveError::Internal))
                .await?;
        if !request.accepts(&document.media_type) {
            return Err(ArchiveError::NotAcceptable(format!(
                "the document is {}",
                document.media_type
            )));
        }
        Ok(Rendered {
            bytes: Bytes::from(document.bytes),
            media_type: document.media_type,
        })
    }

    /// Frame byte ranges recorded at ingest, per frame.
    async fn frame_index(&self, sop: &str) -> Result<Vec<Vec<(u64, u64)>>, ArchiveError> {
        let json = self
            .index()
            .instance_frames(sop)
            .await
            .map_err(index_err)?
            .unwrap_or_default();
        Ok(serde_json::from_str(&json).unwrap_or_default())
    }
}

impl DicomWebArchive {
    /// Records a read of `scope` (Instances Accessed, or Instances Transferred for a
    /// retrieval of instances): the caller, the patient, the study with the SOP classes read.
    async fn audit_read(
        &self,
        kind: EventKind,
        what: &str,
        scope: &Scope,
        sop_classes: &[String],
        identity: &Identity,
        failure: Option<&ArchiveError>,
    ) {
        if !self.audit.enabled() {
            return;
        }
        let patient = self
            .index()
            .study_patient(&scope.study)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut study = StudyRef::new(&scope.study);
        for class in sop_classes {
            study.add(class, 1);
        }
        let node = Participant::node(&self.audit.node_ae);
        let caller = crate::audit::http_participant(identity).requestor();
        let transfer = kind == EventKind::InstancesTransferred;
        let mut event = AuditEvent::new(kind)
            .participant(if transfer {
                caller.destination()
            } else {
                caller
            })
            .participant(if transfer { node.source() } else { node })
            .patient(&patient.0, &patient.1)
            .study(study)
            .object(ObjectRef::uri(what));
        if let Some(e) = failure {
            event = event.failed(Outcome::MinorFailure, e.to_string());
        }
        self.audit.record(event).await;
    }

    /// Instances Accessed for a read of one instance's (or a scope's representative's) data:
    /// successful reads of one caller and study are grouped into one message per audit batch
    /// (a viewer reads hundreds of frames); a failed read is a message of its own.
    async fn audit_access(
        &self,
        what: &str,
        scope: &Scope,
        identity: &Identity,
        failure: Option<&ArchiveError>,
    ) {
        if !self.audit.enabled() {
            return;
        }
        // (SOP class, SOP instance) of what was read: a scope's representative for rendered
        let read: Vec<(String, String)> = match self.select_scope(scope, false).await {
            Ok(rows) => {
                let n = if scope.instance.is_some() || what == "rendered" {
                    1
                } else {
                    rows.len()
                };
                rows.into_iter()
                    .take(n)
                    .map(|(i, _)| (i.sop_class_uid, i.sop_instance_uid))
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        let classes: Vec<String> = read.iter().map(|(c, _)| c.clone()).collect();
        if failure.is_some() || classes.is_empty() {
            self.audit_read(
                EventKind::InstancesAccessed,
                &scope_path(what, scope),
                scope,
                &classes,
                identity,
                failure,
            )
            .await;
            return;
        }
        let (patient_id, patient_name) = self
            .index()
            .study_patient(&scope.study)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        for (class, instance) in read {
            self.audit
                .stored(StoredNote {
                    patient_id: patient_id.clone(),
                    patient_name: patient_name.clone(),
                    study_uid: scope.study.clone(),
                    sop_class_uid: class,
                    sop_instance_uid: instance,
                    ..StoredNote::by_http(EventKind::InstancesAccessed, identity)
                })
                .await;
        }
    }
}

fn scope_path(what: &str, scope: &Scope) -> String {
    let mut path = format!("studies/{}", scope.study);
    if let Some(s) = &scope.series {
        path.push_str(&format!("/series/{s}"));
    }
    if let Some(i) = &scope.instance {
        path.push_str(&format!("/instances/{i}"));
    }
    if !what.is_empty() {
        path.push('/');
        path.push_str(what);
    }
    path
}

/// A QIDO-RS request as the query string it came as (the query of the Query message).
fn query_string(request: &SearchRequest) -> String {
    let mut path = String::new();
    if let Some(s) = &request.study {
        path.push_str(&format!("studies/{s}/"));
    }
    if let Some(s) = &request.series {
        path.push_str(&format!("series/{s}/"));
    }
    path.push_str(match request.level {
        SearchLevel::Study => "studies",
        SearchLevel::Series => "series",
        SearchLevel::Instance => "instances",
    });
    let mut params: Vec<String> = request
        .filters
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    params.extend(request.include.iter().map(|i| format!("includefield={i}")));
    if request.fuzzy {
        params.push("fuzzymatching=true".into());
    }
    if let Some(l) = request.limit {
        params.push(format!("limit={l}"));
    }
    if request.offset > 0 {
        params.push(format!("offset={}", request.offset));
    }
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

impl DicomWebArchive {
    async fn search_inner(&self, request: SearchRequest) -> Result<SearchResponse, ArchiveError> {
        let include = if request
            .include
            .iter()
            .any(|i| i.eq_ignore_ascii_case("all"))
        {
            Include::All
        } else if request.include.is_empty() {
            Include::Defaults
        } else if request.include.len() > crate::query::limits::MAX_RETURN_KEYS {
            return Err(query_err(QueryError::TooMany {
                what: "includefield attributes".into(),
                limit: crate::query::limits::MAX_RETURN_KEYS,
            }));
        } else {
            Include::Tags(
                request
                    .include
                    .iter()
                    .map(|name| crate::query::resolve_tag(name))
                    .collect::<Result<_, _>>()
                    .map_err(query_err)?,
            )
        };
        let limit = request
            .limit
            .unwrap_or(self.config.max_results)
            .min(self.config.max_results);
        let query = Query::parse(
            to_level(request.level),
            &request.filters,
            include,
            request.fuzzy,
            limit,
            request.offset,
        )
        .and_then(|q| q.within(request.study.as_deref(), request.series.as_deref()))
        .map_err(query_err)?;
        let result = query
            .run(self.index().as_ref(), Some(&request.base_url))
            .await
            .map_err(query_err)?;
        Ok(SearchResponse {
            datasets: result.datasets,
            truncated: result.truncated,
            limit,
        })
    }
}

fn to_level(level: SearchLevel) -> Level {
    match level {
        SearchLevel::Study => Level::Study,
        SearchLevel::Series => Level::Series,
        SearchLevel::Instance => Level::Instance,
    }
}

#[async_trait::async_trait]
impl pacs_dicomweb::Archive for DicomWebArchive {
    async fn statistics(&self, _identity: &Identity) -> Result<serde_json::Value, ArchiveError> {
        let index = self.index();
        let (counts, bytes, per_hour) = tokio::join!(
            index.counts(),
            index.storage_bytes(),
            index.received_per_hour(24)
        );
        let counts = counts.map_err(index_err)?;
        let per_hour: Vec<serde_json::Value> = per_hour
            .map_err(index_err)?
            .into_iter()
            .map(|(hour, n)| {
                serde_json::json!({
                    "hour": time::OffsetDateTime::from_unix_timestamp(hour / 1000)
                        .ok()
                        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                    "instances": n,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "index": index.backend(),
            "storage": self.storage().describe(),
            "patients": counts.patients,
            "studies": counts.studies,
            "series": counts.series,
            "instances": counts.instances,
            // what the indexed instances take (the index's sizes; the store may hold more)
            "storage_bytes": bytes.map_err(index_err)?,
            // by the database's clock; the current hour last
            "received_per_hour": per_hour,
        }))
    }

    async fn search(
        &self,
        request: SearchRequest,
        identity: &Identity,
    ) -> Result<SearchResponse, ArchiveError> {
        let mut event = AuditEvent::new(EventKind::Query)
            .participant(crate::audit::http_participant(identity).requestor())
            .participant(Participant::node(&self.audit.node_ae))
            .object(ObjectRef::query(
                QIDO_SOP_CLASS,
                query_string(&request).into_bytes(),
            ));
        let filter = |names: &[&str]| {
            request
                .filters
                .iter()
                .find(|(k, _)| names.iter().any(|n| k.eq_ignore_ascii_case(n)))
                .map(|(_, v)| v.clone())
        };
        if let Some(p) = filter(&["PatientID", "00100020"]).filter(|p| !p.contains(['*', '?'])) {
            event = event.patient(&p, "");
        }
        if let Some(s) = request
            .study
            .clone()
            .or_else(|| filter(&["StudyInstanceUID", "0020000D"]))
            .filter(|s| !s.contains(','))
        {
            event = event.study(StudyRef::new(&s));
        }
        let result = self.search_inner(request).await;
        if let Err(e) = &result {
            event = event.failed(Outcome::MinorFailure, e.to_string());
        }
        self.audit.record(event).await;
        result
    }

    async fn instances(
        &self,
        scope: &Scope,
        identity: &Identity,
    ) -> Result<Vec<InstanceInfo>, ArchiveError> {
        let rows = self.select_scope(scope, false).await;
        let classes: Vec<String> = match &rows {
            Ok(rows) => rows.iter().map(|(i, _)| i.sop_class_uid.clone()).collect(),
            Err(_) => Vec::new(),
        };
        self.audit_read(
            EventKind::InstancesTransferred,
            &scope_path("", scope),
            scope,
            &classes,
            identity,
            rows.as_ref().err(),
        )
        .await;
        Ok(rows?
            .into_iter()
            .map(|(i, _)| InstanceInfo {
                study: i.study_instance_uid,
                series: i.series_instance_uid,
                instance: i.sop_instance_uid,
                transfer_syntax_uid: i.transfer_syntax_uid,
                size: i.size_bytes as u64,
                handle: i.object_key,
            })
            .collect())
    }

    async fn read_instance(
        &self,
        instance: &InstanceInfo,
        _identity: &Identity,
    ) -> Result<ByteStream, ArchiveError> {
        // The handle is the object key the scope query already returned. Typical objects are
        // read with one ranged read of their known size; large ones as a stream of large chunks.
        if instance.size <= 64 * 1024 * 1024 {
            let bytes = self
                .storage()
                .get_range(&instance.handle, 0..instance.size)
                .await
                .map_err(storage_err)?;
            return Ok(futures::stream::once(async move { Ok(bytes) }).boxed());
        }
        let stream = self
            .storage()
            .get_stream(&instance.handle)
            .await
            .map_err(storage_err)?;
        Ok(stream.map(|r| r.map_err(std::io::Error::other)).boxed())
    }

    fn can_transcode(&self, transfer_syntax_uid: &str) -> bool {
        crate::pixels::can_decode(transfer_syntax_uid)
    }

    async fn read_instance_explicit_le(
        &self,
        instance: &InstanceInfo,
        _identity: &Identity,
    ) -> Result<Bytes, ArchiveError> {
        let bytes = self.object_bytes(&instance.handle).await?;
        Self::blocking(move || {
            crate::pixels::transcode_to_explicit_le(&bytes)
                .map(Bytes::from)
                .map_err(pixel_err)
        })
        .await
    }

    async fn metadata(
        &self,
        scope: &Scope,
        base_url: &str,
        identity: &Identity,
    ) -> Result<Metadata, ArchiveError> {
        let result: Result<Metadata, ArchiveError> = async {
            let rows = self.select_scope(scope, true).await?;
            let mut etag = ring::digest::Context::new(&ring::digest::SHA256);
            let mut out = Vec::with_capacity(
                rows.iter()
                    .map(|(_, m)| m.as_ref().map_or(0, |b| b.len()) + 200)
                    .sum(),
            );
            out.push(b'[');
            for (n, (row, json)) in rows.into_iter().enumerate() {
                let (study, series, sop) = (
                    row.study_instance_uid,
                    row.series_instance_uid,
                    row.sop_instance_uid,
                );
                etag.update(sop.as_bytes());
                etag.update(row.sha256.as_bytes());
                if n > 0 {
                    out.push(b',');
                }
                let json = json.unwrap_or_default();
                // BulkDataURIs are stored relative to the instance (see ingest): make them absolute.
                let absolute = format!(
                    "\"BulkDataURI\":\"{base_url}/studies/{study}/series/{series}/instances/{sop}/bulkdata/"
                );
                out.extend_from_slice(&replace_all(
                    &json,
                    b"\"BulkDataURI\":\"bulkdata/",
                    absolute.as_bytes(),
                ));
            }
            out.push(b']');
            etag.update(base_url.as_bytes());
            let etag = hex::encode(&etag.finish().as_ref()[..16]);
            Ok(Metadata {
                json: Bytes::from(out),
                etag,
            })
        }
        .await;
        self.audit_access("metadata", scope, identity, result.as_ref().err())
            .await;
        result
    }

    async fn frames(
        &self,
        scope: &Scope,
        numbers: &[u32],
        identity: &Identity,
    ) -> Result<StoredFrames, ArchiveError> {
        let result: Result<StoredFrames, ArchiveError> = async {
            let (info, key) = self.one_instance(scope).await?;
            let index = self.frame_index(&info.instance).await?;
            if index.is_empty() {
                // no frame positions (deflated data set, or data ingest could not map): decode
                return Ok(StoredFrames {
                    transfer_syntax_uid: dicom_dictionary_std::uids::EXPLICIT_VR_LITTLE_ENDIAN
                        .into(),
                    frames: self.decoded_frames(scope, numbers, identity).await?,
                });
            }
            let mut frames = Vec::with_capacity(numbers.len());
            // a recorded range that does not fit in 64 bits is a damaged index, not a frame
            let span = |offset: u64, len: u64| {
                offset
                    .checked_add(len)
                    .map(|end| offset..end)
                    .ok_or_else(|| {
                        ArchiveError::Internal(format!("frame index of {}", info.instance))
                    })
            };
            for &n in numbers {
                let ranges = (n as usize)
                    .checked_sub(1)
                    .and_then(|i| index.get(i))
                    .ok_or_else(|| {
                        ArchiveError::NotFound(format!(
                            "frame {n} does not exist: the instance has {} frame(s)",
                            index.len()
                        ))
                    })?;
                if let [(offset, len)] = ranges[..] {
                    frames.push(
                        self.storage()
                            .get_range(&key, span(offset, len)?)
                            .await
                            .map_err(storage_err)?,
                    );
                } else {
                    let mut frame = Vec::new();
                    for &(offset, len) in ranges {
                        frame.extend_from_slice(
                            &self
                                .storage()
                                .get_range(&key, span(offset, len)?)
                                .await
                                .map_err(storage_err)?,
                        );
                    }
                    frames.push(Bytes::from(frame));
                }
            }
            Ok(StoredFrames {
                transfer_syntax_uid: info.transfer_syntax_uid,
                frames,
            })
        }
        .await;
        self.audit_access("frames", scope, identity, result.as_ref().err())
            .await;
        result
    }

    async fn decoded_frames(
        &self,
        scope: &Scope,
        numbers: &[u32],
        identity: &Identity,
    ) -> Result<Vec<Bytes>, ArchiveError> {
        let result: Result<Vec<Bytes>, ArchiveError> = async {
            let (info, key) = self.one_instance(scope).await?;
            if !crate::pixels::can_decode(&info.transfer_syntax_uid) {
                return Err(ArchiveError::NotAcceptable(format!(
                    "pixel data in transfer syntax {} cannot be decoded here; ask for transfer-syntax=*",
                    info.transfer_syntax_uid
                )));
            }
            let bytes = self.object_bytes(&key).await?;
            let numbers = numbers.to_vec();
            Self::blocking(move || {
                numbers
                    .iter()
                    .map(|&n| {
                        crate::pixels::decode_frame(&bytes, n)
                            .map(Bytes::from)
                            .map_err(pixel_err)
                    })
                    .collect()
            })
            .await
        }
        .await;
        self.audit_access("frames", scope, identity, result.as_ref().err())
            .await;
        result
    }

    async fn bulkdata(
        &self,
        scope: &Scope,
        path: &str,
        range: Option<Range<u64>>,
        identity: &Identity,
    ) -> Result<BulkData, ArchiveError> {
        let result: Result<BulkData, ArchiveError> = async {
            let (info, key) = self.one_instance(scope).await?;
            let path = path.trim_matches('/').to_ascii_uppercase();
            // RFC 9110 14.1.2: a range is satisfiable when it starts before the end of the value
            // (so no range of an empty value is); its end is clipped to the value's length.
            let clip = |total: u64| -> Result<Range<u64>, ArchiveError> {
                match range.clone() {
                    None => Ok(0..total),
                    Some(r) if r.start < total && r.start < r.end => Ok(r.start..r.end.min(total)),
                    Some(_) => Err(ArchiveError::RangeNotSatisfiable { length: total }),
                }
            };
            let is_pixel = matches!(path.as_str(), "7FE00010" | "7FE00008" | "7FE00009");
            if is_pixel {
                let index = self.frame_index(&info.instance).await?;
                let ranges: Vec<(u64, u64)> = index.into_iter().flatten().collect();
                let contiguous = ranges
                    .windows(2)
                    .all(|w| w[0].0.checked_add(w[0].1) == Some(w[1].0));
                if !ranges.is_empty() && contiguous {
                    // native pixel data: one range of the stored object
                    let start = ranges.first().map_or(0, |r| r.0);
                    let total = ranges.iter().map(|r| r.1).sum::<u64>();
                    let r = clip(total)?;
                    let bytes = self
                        .storage()
                        .get_range(
                            &key,
                            start.saturating_add(r.start)..start.saturating_add(r.end),
                        )
                        .await
                        .map_err(storage_err)?;
                    return Ok(BulkData {
                        bytes,
                        total_len: total,
                        range: r,
                    });
                }
            }
            // anything else: read the object and find the value
            let bytes = self.object_bytes(&key).await?;
            let value = Self::blocking(move || element_bytes(&bytes, &path)).await?;
            let total = value.len() as u64;
            let r = clip(total)?;
            // within the value: clip keeps start < end <= total
            let bytes = match (usize::try_from(r.start), usize::try_from(r.end)) {
                (Ok(start), Ok(end)) if start < end && end <= value.len() => {
                    value.slice(start..end)
                }
                _ => Bytes::new(),
            };
            Ok(BulkData {
                bytes,
                total_len: total,
                range: r,
            })
        }
        .await;
        self.audit_access("bulkdata", scope, identity, result.as_ref().err())
            .await;
        result
    }

    async fn render(
        &self,
        scope: &Scope,
        request: &RenderRequest,
        identity: &Identity,
    ) -> Result<Rendered, ArchiveError> {
        let result: Result<Rendered, ArchiveError> = async {
            let (info, key) = self.one_instance(scope).await?;
            let class = self
                .index()
                .find_instance(&info.instance)
                .await
                .map_err(index_err)?
                .map(|i| i.sop_class_uid)
                .unwrap_or_default();
            if crate::documents::is_document_class(&class) {
                return self.render_document(&key, request).await;
            }
            if !request.accepts_image() {
                return Err(ArchiveError::NotAcceptable(
                    "rendered images are image/jpeg or image/png".into(),
                ));
            }
            let bytes = self.object_bytes(&key).await?;
            let png = request.png;
            let options = crate::pixels::RenderOptions {
                frame: request.frame,
                window: request.window,
                viewport: request.viewport,
                format: Some(if request.png {
                    crate::pixels::ImageFormat::Png
                } else {
                    crate::pixels::ImageFormat::Jpeg
                }),
                quality: request.quality,
            };
            let image = Self::blocking(move || {
                crate::pixels::render(&bytes, &options)
                    .map(Bytes::from)
                    .map_err(pixel_err)
            })
            .await?;
            Ok(Rendered {
                bytes: image,
                media_type: if png { "image/png" } else { "image/jpeg" }.into(),
            })
        }
        .await;
        self.audit_access("rendered", scope, identity, result.as_ref().err())
            .await;
        result
    }

    async fn store(
        &self,
        object: ReceivedPart,
        study: Option<&str>,
        identity: &Identity,
    ) -> StoreResult {
        let origin = Origin::from(identity);
        // a spilled part's file lives (and is deleted) with `_spilled`, once ingest is done
        let (incoming, _spilled) = match object {
            ReceivedPart::Memory(bytes) => (Incoming::from_part10(bytes, origin), None),
            ReceivedPart::File { path, .. } => {
                let file = path.to_path_buf();
                let incoming =
                    tokio::task::spawn_blocking(move || Incoming::from_part10_file(file, origin))
                        .await
                        .unwrap_or_else(|e| {
                            Err(IngestError::CannotUnderstand(format!(
                                "cannot read the object: {e}"
                            )))
                        });
                (incoming, Some(path))
            }
        };
        let mut incoming = match incoming {
            Ok(i) => i,
            Err(e) => {
                return StoreResult::Failed {
                    sop_class_uid: None,
                    sop_instance_uid: None,
                    reason: crate::dimse_service::store_status(&Err(e)).status,
                    message: "not a DICOM Part 10 object".into(),
                }
            }
        };
        incoming.expected_study = study.map(str::to_string);
        let class = incoming.sop_class_uid.clone();
        let instance = incoming.sop_instance_uid.clone();
        let result = self.ingest.ingest(incoming).await;
        let status = crate::dimse_service::store_status(&result);
        // STOW-RS: instances of one caller and study are reported in one DICOM Instances
        // Transferred message per audit batch
        let (patient_id, patient_name, study_uid) = match &result {
            Ok(i) => (
                i.patient_id.clone(),
                i.patient_name.clone(),
                i.study_instance_uid.clone(),
            ),
            Err(_) => (
                String::new(),
                String::new(),
                study.unwrap_or_default().to_string(),
            ),
        };
        self.audit
            .stored(StoredNote {
                patient_id,
                patient_name,
                study_uid,
                sop_class_uid: class.clone(),
                sop_instance_uid: instance.clone(),
                success: result.is_ok(),
                ..StoredNote::by_http(EventKind::InstancesTransferred, identity)
            })
            .await;
        match result {
            Ok(ingested) => StoreResult::Stored {
                sop_class_uid: class,
                sop_instance_uid: instance,
                warning: (ingested.outcome == IngestOutcome::KeptExisting).then_some(status.status),
                study_instance_uid: ingested.study_instance_uid,
                series_instance_uid: ingested.series_instance_uid,
            },
            Err(IngestError::Storage(e)) => StoreResult::OutOfResources {
                sop_class_uid: class,
                sop_instance_uid: instance,
                lacking: pacs_dicomweb::archive::Lacking::Storage,
                message: format!("storage: {e}"),
            },
            Err(IngestError::Index(
                e @ (IndexError::Unavailable(_) | IndexError::OutcomeUnknown(_)),
            )) => StoreResult::OutOfResources {
                sop_class_uid: class,
                sop_instance_uid: instance,
                lacking: pacs_dicomweb::archive::Lacking::Index,
                message: format!("index: {e}"),
            },
            Err(e) => StoreResult::Failed {
                sop_class_uid: Some(class),
                sop_instance_uid: Some(instance),
                reason: status.status,
                message: match e {
                    IngestError::CannotUnderstand(m) | IngestError::DoesNotMatch(m) => m,
                    other => other.to_string(),
                },
            },
        }
    }
}

/// `haystack` with every `needle` replaced.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len() + with.len() * 2);
    let mut rest = haystack;
    while let Some((&first, after)) = rest.split_first() {
        if let Some(after_needle) = rest.strip_prefix(needle) {
            out.extend_from_slice(with);
            rest = after_needle;
        } else {
            out.push(first);
            rest = after;
        }
    }
    out
}

/// The value bytes of the element at `path` (`TTTTTTTT` or `TTTTTTTT/item/TTTTTTTT/...`).
fn element_bytes(part10: &[u8], path: &str) -> Result<Bytes, ArchiveError> {
    use dicom_core::value::Value as DValue;
    let unreadable = || ArchiveError::Internal("stored object unreadable: too short".into());
    let obj = dicom_object::OpenFileOptions::new()
        .from_reader(std::io::Cursor::new(
            part10.get(128..).ok_or_else(unreadable)?,
        ))
        .map_err(|e| ArchiveError::Internal(format!("stored object unreadable: {e}")))?;
    let not_found = || ArchiveError::NotFound(format!("no bulk data at {path}"));
    let parse_tag = |t: &str| -> Result<dicom_core::Tag, ArchiveError> {
        let n = u32::from_str_radix(t, 16).map_err(|_| not_found())?;
        Ok(dicom_core::Tag((n >> 16) as u16, n as u16))
    };
    let mut parts = path.split('/');
    let first = parse_tag(parts.next().ok_or_else(not_found)?)?;
    let mut element = obj.element(first).map_err(|_| not_found())?.clone();
    while let Some(item) = parts.next() {
        let item: usize = item.parse().map_err(|_| not_found())?;
        let tag = parse_tag(parts.next().ok_or_else(not_found)?)?;
        let items = element.items().ok_or_else(not_found)?;
        let next = items
            .get(item)
            .ok_or_else(not_found)?
            .element(tag)
            .map_err(|_| not_found())?
            .clone();
        element = next;
    }
    match element.value() {
        DValue::PixelSequence(seq) => {
            let mut out = Vec::new();
            for f in seq.fragments() {
                out.extend_from_slice(f);
            }
            Ok(Bytes::from(out))
        }
        _ => element
            .to_bytes()
            .map(|b| Bytes::from(b.into_owned()))
            .map_err(|_| not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_all_replaces_every_needle_and_nothing_else() {
        let r = |h: &[u8], n: &[u8], w: &[u8]| String::from_utf8(replace_all(h, n, w)).unwrap();
        assert_eq!(r(b"a-b-c", b"-", b"+-+"), "a+-+b+-+c");
        assert_eq!(r(b"--", b"-", b""), "");
        assert_eq!(r(b"abab", b"abab", b"x"), "x");
        assert_eq!(r(b"aba", b"abab", b"x"), "aba");
        assert_eq!(r(b"", b"x", b"y"), "");
        assert_eq!(r(b"xyz", b"", b"q"), "xyz");
    }

    #[test]
    fn element_bytes_refuses_what_is_not_there() {
        assert!(matches!(
            element_bytes(b"short", "00100010"),
            Err(ArchiveError::Internal(_))
        ));
        let mut part10 = vec![0u8; 128];
        part10.extend_from_slice(b"DICM");
        assert!(element_bytes(&part10, "00100010").is_err());
    }
}
