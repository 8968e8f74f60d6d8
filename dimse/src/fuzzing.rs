//! Entry points for the fuzz targets in `fuzz/` (not part of the crate's API): what the
//! acceptor does with the bytes a requestor sends, driven without a socket.
//!
//! [`acceptor`] plays the association acceptor over an in-memory stream: the A-ASSOCIATE-RQ
//! (User Identity sub-item included) read and negotiated with the node's own settings, the
//! A-ASSOCIATE-AC written, then every PDU read with [`PduReader`], its presentation data values
//! put back together by [`Reassembler`], each command set decoded, answered (a response is
//! encoded and fragmented for the requestor's Maximum Length) and each C-FIND, C-MOVE or C-GET
//! identifier decoded in the presentation context's transfer syntax, as the session does.
//!
//! [`PduReader`]: crate::server::pdu_reader::PduReader

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use dicom_encoding::TransferSyntaxIndex;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::command::{field, status, Response};
use crate::pdata::{Assembled, Outgoing, Reassembler, MAX_COMMAND_LEN};
use crate::server::association::{check_request, negotiate, Requested};
use crate::server::{acceptor_settings, DimseConfig};

/// A requestor's bytes, handed out `chunk` bytes per read (as a TCP stream would cut them);
/// what the acceptor writes is dropped.
struct Wire<'a> {
    input: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Wire<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.input.len().min(self.chunk).min(buf.remaining());
        let (now, later) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose I/O is all in memory to completion. Nothing here waits on a timer or a
/// socket, so it is always ready; a pending poll would be a harness bug.
fn run<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// The acceptor's side of one connection. `data[0]` picks our Maximum Length and how the
/// bytes are cut into reads; the rest is what the requestor sends. Returns how many DIMSE
/// messages were answered.
#[doc(hidden)]
pub fn acceptor(data: &[u8]) -> usize {
    let Some((&knobs, wire)) = data.split_first() else {
        return 0;
    };
    let mut answered = 0;
    let config = DimseConfig {
        ae_title: "PACS".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        // 0 (unlimited), the smallest length PS3.8 allows, DCMTK's default, the node's default
        max_pdu_length: [0, 4096, 16384, 65536][usize::from(knobs & 3)],
        max_associations: 1,
        idle_timeout: std::time::Duration::from_secs(1),
        artim_timeout: std::time::Duration::from_secs(1),
        spill_threshold: 1 << 20,
        spill_dir: std::env::temp_dir(),
        spill_min_free_bytes: 0,
        move_associations: 1,
        plain: true,
        tls: None,
        tls_client: None,
        max_associations_per_host: 1,
        max_instance_bytes: 64 << 20,
    };
    let settings = acceptor_settings(&config);
    let chunk = [1, 7, 512, 1 << 16][usize::from((knobs >> 2) & 3)];
    run(async {
        let answered = &mut answered;
        let stream = Wire { input: wire, chunk };
        let Ok(requested) = Requested::read(stream, &settings).await else {
            return;
        };
        let _ = requested.identity();
        if check_request(requested.request()).is_err() {
            return;
        }
        // negotiated once more with a User Identity response, as an accepted identity gets
        let _ = negotiate(&settings, requested.request(), Some(b"server-response"));
        let Ok(mut association) = requested.accept(&settings, None).await else {
            return;
        };
        let mut reassembler = Reassembler::new(MAX_COMMAND_LEN, 1 << 24);
        // the command whose data set is being received, and the data set so far
        let mut pending: Option<(crate::command::Command, Vec<u8>)> = None;
        loop {
            let values = match association.receive().await {
                Ok(Pdu::PData { data }) => data,
                Ok(Pdu::ReleaseRQ) => {
                    let _ = association.send(&Pdu::ReleaseRP).await;
                    return;
                }
                _ => return,
            };
            for value in values {
                match reassembler.push(value) {
                    Err(_) => return,
                    Ok(Assembled::Partial) => {}
                    Ok(Assembled::Command {
                        context_id,
                        command,
                    }) => {
                        let accepted = association.presentation_contexts().iter().any(|pc| {
                            pc.id == context_id
                                && pc.reason == PresentationContextResultReason::Acceptance
                        });
                        if !accepted {
                            return;
                        }
                        if command.has_dataset {
                            pending = Some((command, Vec::new()));
                        } else {
                            respond(&mut association, context_id, &command).await;
                            *answered += 1;
                        }
                    }
                    Ok(Assembled::Data {
                        context_id,
                        bytes,
                        last,
                    }) => {
                        let Some((_, data)) = pending.as_mut() else {
                            return;
                        };
                        data.extend_from_slice(&bytes);
                        if !last {
                            continue;
                        }
                        let Some((command, data)) = pending.take() else {
                            return;
                        };
                        let transfer_syntax = association
                            .presentation_contexts()
                            .iter()
                            .find(|pc| pc.id == context_id)
                            .map(|pc| pc.transfer_syntax.clone())
                            .unwrap_or_default();
                        if matches!(
                            command.command_field,
                            field::C_FIND_RQ | field::C_MOVE_RQ | field::C_GET_RQ
                        ) {
                            identifier(&data, &transfer_syntax);
                        }
                        respond(&mut association, context_id, &command).await;
                        *answered += 1;
                    }
                }
            }
        }
    });
    answered
}

/// Decodes an identifier as the session's `read_identifier` does.
fn identifier(bytes: &[u8], transfer_syntax: &str) {
    if let Some(ts) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(transfer_syntax) {
        let _ = crate::dataset::read_dataset(bytes, ts);
    }
}

/// Answers a command with a response that echoes what the request gave (UIDs, message ID),
/// fragmented for the requestor's Maximum Length.
async fn respond<S>(
    association: &mut crate::server::association::Association<S>,
    context_id: u8,
    command: &crate::command::Command,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut response = Response::to(command, command.command_field | 0x8000, status::SUCCESS);
    response.error_comment = command.move_destination.clone();
    let encoded = response.encode();
    let _ = association
        .send_messages(&[Outgoing {
            context_id,
            command: &encoded,
            data: None,
        }])
        .await;
}

#[cfg(test)]
mod tests {
    use dicom_ul::pdu::{AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed};

    use super::*;
    use crate::command::Request;

    fn encode(pdu: &Pdu) -> Vec<u8> {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        bytes
    }

    /// An association that echoes, then releases: the harness runs it to the end, for each
    /// of the ways the bytes may be cut.
    #[test]
    fn a_whole_association_runs_through_the_harness() {
        let rq = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: "PACS".into(),
            application_context_name: crate::server::association::APPLICATION_CONTEXT_NAME.into(),
            presentation_contexts: vec![PresentationContextProposed {
                id: 1,
                abstract_syntax: dicom_dictionary_std::uids::VERIFICATION.into(),
                transfer_syntaxes: vec![
                    dicom_dictionary_std::uids::IMPLICIT_VR_LITTLE_ENDIAN.into()
                ],
            }],
            user_variables: vec![],
        });
        let echo = Request {
            command_field: field::C_ECHO_RQ,
            message_id: 1,
            affected_sop_class_uid: dicom_dictionary_std::uids::VERIFICATION.into(),
            affected_sop_instance_uid: None,
            has_dataset: false,
            move_originator: None,
        };
        let mut wire = vec![0];
        wire.extend(encode(&rq));
        wire.extend(encode(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type: PDataValueType::Command,
                is_last: true,
                data: echo.encode(),
            }],
        }));
        wire.extend(encode(&Pdu::ReleaseRQ));
        for knobs in 0..16 {
            wire[0] = knobs;
            assert_eq!(acceptor(&wire), 1, "knobs {knobs}");
        }
        assert_eq!(acceptor(&[]), 0);
        assert_eq!(acceptor(&wire[..40]), 0);
    }

    /// The inputs the `pdu` fuzz target once failed on (fuzz/regressions/pdu/) run through.
    #[test]
    fn regression_inputs_run_through_the_harness() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/pdu");
        for entry in std::fs::read_dir(dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            acceptor(&std::fs::read(&path).unwrap());
        }
    }
}
