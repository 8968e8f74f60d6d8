//! P-DATA-TF: DIMSE messages to and from presentation data values (PS3.8 9.3.5, Annex E).
//!
//! A DIMSE message is a command set, then (if the command says so) a data set, each split into
//! fragments that travel as presentation data values (PDVs); a PDV's message control header
//! says whether it holds command or data bytes and whether it is the last fragment
//! (PS3.8 E.2). [`Reassembler::push`] is the one place that puts fragments back together, for
//! the association acceptor and the storage SCU alike; [`send_message`] is the one place that
//! splits messages for the peer.
//!
//! # Why this module writes P-DATA-TF PDUs itself
//!
//! dicom-ul 0.10 has a P-DATA writer (`AsyncAssociation::send_pdata`), which was considered and
//! not used:
//! - its `Drop` runs `tokio::task::block_in_place` unconditionally, even after `finish()`, which
//!   panics on a current-thread runtime (as `#[tokio::test]` uses) and on the multi-threaded one
//!   hands this worker thread's other tasks to another thread once per message;
//! - it copies every byte into its own PDU buffer and issues one `write` per PDU: a 512 KiB CT
//!   slice to a peer with DCMTK's default 16 KiB maximum PDU is 32 copies and 32 system calls.
//!   `Association::send(&Pdu::PData)` is worse: a copy into the `PDataValue`, a copy into the
//!   association's write buffer, one `write` per PDU.
//!
//! Here the 12 header bytes of each PDU are built on the stack and written with the data set's
//! slices in vectored writes of up to [`WRITE_BATCH`] bytes, straight from the `Bytes` the object
//! store returned: no copy of the data set, and a handful of system calls per instance.
//!
//! The fragment size follows PS3.8 9.3.1 and D.1: the peer's Maximum Length bounds the variable
//! part of a P-DATA-TF PDU (the PDU length field), which holds the PDV item's 4-byte length, the
//! presentation context ID and the message control header before the data. So a fragment holds
//! up to max - 6 bytes. (An earlier version of this crate sent max - 12, counting the 6-byte PDU
//! header against the limit as well; dicom-ul 0.10 itself allows a PDU of max + 6 bytes in all,
//! i.e. a PDU length of max.)

use std::io::IoSlice;

use bytes::Bytes;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::command::Command;

/// Bytes before a PDV's data in a P-DATA-TF PDU: PDU type, reserved, PDU length (4), item
/// length (4), presentation context ID, message control header.
pub const PDU_PDV_HEADER_LEN: usize = 12;

/// What a fragment can carry at most: the PDV item length, the context ID and the message
/// control header count against the peer's maximum PDU length (PS3.8 9.3.5, D.1).
const PDV_ITEM_OVERHEAD: u32 = 6;

/// Largest command set accepted from a peer. A command set is a few hundred bytes; the limit
/// only stops a peer from growing memory without end.
pub const MAX_COMMAND_LEN: usize = 1 << 20;

/// Data written to the socket per system call, at most.
pub const WRITE_BATCH: usize = 1 << 20;

/// Fragments per vectored write, at most (two slices each, well under Linux's IOV_MAX of 1024).
const MAX_BATCH_FRAGMENTS: usize = 256;

/// Largest P-DATA value that fits the peer's maximum PDU length (PS3.8 9.3.5): the PDU length
/// field counts the PDV item's 4-byte length, the presentation context ID and the message
/// control header before the data.
pub fn max_fragment(peer_max_pdu_length: u32) -> usize {
    let max = if peer_max_pdu_length == 0 {
        // 0 means "no limit" (PS3.8 D.1); stay reasonable
        1 << 20
    } else {
        peer_max_pdu_length
    };
    (max.saturating_sub(PDV_ITEM_OVERHEAD) as usize).max(1024)
}

/// Why fragments could not be put together; the association is aborted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReassemblyError {
    #[error("command fragment while a data set was expected")]
    CommandDuringDataSet,
    #[error("data fragment without a command")]
    DataWithoutCommand,
    #[error("fragment on another presentation context")]
    ContextChanged,
    #[error("command set larger than the limit")]
    CommandTooLong,
    #[error("data set larger than the limit")]
    DataSetTooLong,
    #[error("undecodable command set")]
    UndecodableCommand,
}

impl ReassemblyError {
    /// The reason, for logs and for the session's abort.
    pub fn reason(&self) -> &'static str {
        match self {
            ReassemblyError::CommandDuringDataSet => {
                "command fragment while a data set was expected"
            }
            ReassemblyError::DataWithoutCommand => "data fragment without a command",
            ReassemblyError::ContextChanged => "fragment on another presentation context",
            ReassemblyError::CommandTooLong => "command set larger than 1 MiB",
            ReassemblyError::DataSetTooLong => "data set larger than the limit",
            ReassemblyError::UndecodableCommand => "undecodable command set",
        }
    }
}

/// What one presentation data value completed.
#[derive(Debug)]
pub enum Assembled {
    /// A fragment of a command set that is not complete yet.
    Partial,
    /// A complete command set. When it announces a data set, the data fragments that follow
    /// are expected on the same presentation context.
    Command { context_id: u8, command: Command },
    /// The next fragment of the data set announced by the last command, as it came (no copy);
    /// `last` ends the data set.
    Data {
        context_id: u8,
        bytes: Bytes,
        last: bool,
    },
}

/// Puts DIMSE messages back together from presentation data values, in the order PS3.7 Annex
/// E and PS3.8 9.3.5 prescribe: the command set's fragments, then, if the command announced
/// one, the data set's fragments on the same presentation context.
#[derive(Debug)]
pub struct Reassembler {
    command: Vec<u8>,
    command_context: Option<u8>,
    /// The data set being received: its presentation context and the bytes seen so far.
    data: Option<(u8, u64)>,
    max_command: usize,
    max_data: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(MAX_COMMAND_LEN, u64::MAX)
    }
}

impl Reassembler {
    /// A reassembler that refuses command sets longer than `max_command` and data sets longer
    /// than `max_data` bytes.
    pub fn new(max_command: usize, max_data: u64) -> Self {
        Reassembler {
            command: Vec::new(),
            command_context: None,
            data: None,
            max_command,
            max_data,
        }
    }

    /// Whether a command set or a data set is partly received.
    pub fn in_message(&self) -> bool {
        self.command_context.is_some() || self.data.is_some()
    }

    /// Takes the next presentation data value.
    pub fn push(&mut self, value: PDataValue) -> Result<Assembled, ReassemblyError> {
        let context_id = value.presentation_context_id;
        match value.value_type {
            PDataValueType::Command => {
                if self.data.is_some() {
                    return Err(ReassemblyError::CommandDuringDataSet);
                }
                if self.command_context.is_some_and(|c| c != context_id) {
                    return Err(ReassemblyError::ContextChanged);
                }
                if self.command.len() + value.data.len() > self.max_command {
                    return Err(ReassemblyError::CommandTooLong);
                }
                self.command_context = Some(context_id);
                if self.command.is_empty() && value.is_last {
                    // the usual case: the whole command set in one fragment
                    return self.complete(context_id, &value.data);
                }
                self.command.extend_from_slice(&value.data);
                if !value.is_last {
                    return Ok(Assembled::Partial);
                }
                let bytes = std::mem::take(&mut self.command);
                self.complete(context_id, &bytes)
            }
            PDataValueType::Data => {
                let Some((expected, received)) = self.data.as_mut() else {
                    return Err(ReassemblyError::DataWithoutCommand);
                };
                if *expected != context_id {
                    return Err(ReassemblyError::ContextChanged);
                }
                *received += value.data.len() as u64;
                if *received > self.max_data {
                    return Err(ReassemblyError::DataSetTooLong);
                }
                if value.is_last {
                    self.data = None;
                }
                Ok(Assembled::Data {
                    context_id,
                    bytes: Bytes::from(value.data),
                    last: value.is_last,
                })
            }
        }
    }

    fn complete(&mut self, context_id: u8, bytes: &[u8]) -> Result<Assembled, ReassemblyError> {
        self.command_context = None;
        let command = Command::decode(bytes).map_err(|_| ReassemblyError::UndecodableCommand)?;
        if command.has_dataset {
            self.data = Some((context_id, 0));
        }
        Ok(Assembled::Command {
            context_id,
            command,
        })
    }
}

/// The 12 bytes before one fragment: P-DATA-TF PDU header, PDV item length, presentation
/// context ID and message control header (PS3.8 9.3.5, E.2: bit 0 command, bit 1 last).
pub fn pdv_header(context_id: u8, command: bool, last: bool, len: usize) -> [u8; 12] {
    let pdu_len = (len as u32 + PDV_ITEM_OVERHEAD).to_be_bytes();
    let item_len = (len as u32 + 2).to_be_bytes();
    let control = u8::from(command) | (u8::from(last) << 1);
    [
        0x04,
        0x00,
        pdu_len[0],
        pdu_len[1],
        pdu_len[2],
        pdu_len[3],
        item_len[0],
        item_len[1],
        item_len[2],
        item_len[3],
        context_id,
        control,
    ]
}

/// One DIMSE message to send: a command set and, when present, its data set.
pub struct Outgoing<'a> {
    pub context_id: u8,
    pub command: &'a [u8],
    pub data: Option<&'a [u8]>,
}

/// The fragments of messages, in order: (header, data slice).
fn fragments<'a>(
    messages: &'a [Outgoing<'a>],
    max: usize,
) -> impl Iterator<Item = ([u8; 12], &'a [u8])> + 'a {
    messages.iter().flat_map(move |m| {
        let command = split(m.command, max)
            .map(move |(chunk, last)| (pdv_header(m.context_id, true, last, chunk.len()), chunk));
        let data = m.data.into_iter().flat_map(move |d| {
            split(d, max).map(move |(chunk, last)| {
                (pdv_header(m.context_id, false, last, chunk.len()), chunk)
            })
        });
        command.chain(data)
    })
}

/// `data` in chunks of at most `max` bytes, each with whether it is the last; an empty input
/// is one empty, last chunk (an empty data set is still one PDV).
fn split(data: &[u8], max: usize) -> impl Iterator<Item = (&[u8], bool)> {
    let n = data.len().div_ceil(max).max(1);
    (0..n).map(move |i| {
        let start = (i * max).min(data.len());
        let end = ((i + 1) * max).min(data.len());
        (&data[start..end], i + 1 == n)
    })
}

/// Writes messages as P-DATA-TF PDUs of at most `peer_max_pdu_length`, one PDV each, in
/// vectored writes of up to [`WRITE_BATCH`] bytes.
pub async fn write_messages<W>(
    stream: &mut W,
    peer_max_pdu_length: u32,
    messages: &[Outgoing<'_>],
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let max = max_fragment(peer_max_pdu_length);
    let mut pending: Vec<([u8; 12], &[u8])> = Vec::new();
    let mut batch = 0usize;
    for fragment in fragments(messages, max) {
        batch += PDU_PDV_HEADER_LEN + fragment.1.len();
        pending.push(fragment);
        if batch >= WRITE_BATCH || pending.len() >= MAX_BATCH_FRAGMENTS {
            write_all_vectored(stream, &pending).await?;
            pending.clear();
            batch = 0;
        }
    }
    if !pending.is_empty() {
        write_all_vectored(stream, &pending).await?;
    }
    Ok(())
}

async fn write_all_vectored<W>(
    stream: &mut W,
    fragments: &[([u8; 12], &[u8])],
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(fragments.len() * 2);
    for (header, data) in fragments {
        slices.push(IoSlice::new(header));
        if !data.is_empty() {
            slices.push(IoSlice::new(data));
        }
    }
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Sends a command and, when given, its data set, fragmented for the peer.
pub async fn send_message<A, S>(
    association: &mut A,
    context_id: u8,
    command: &[u8],
    data: Option<&[u8]>,
) -> Result<(), String>
where
    A: dicom_ul::association::AsyncAssociation<S> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    send_messages(
        association,
        &[Outgoing {
            context_id,
            command,
            data,
        }],
    )
    .await
}

/// Sends several messages in as few writes as their size allows.
pub async fn send_messages<A, S>(
    association: &mut A,
    messages: &[Outgoing<'_>],
) -> Result<(), String>
where
    A: dicom_ul::association::AsyncAssociation<S> + Send,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max = association.peer_max_pdu_length();
    write_messages(association.inner_stream(), max, messages)
        .await
        .map_err(|e| format!("cannot send: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{field, Request};

    fn command_bytes(has_dataset: bool) -> Vec<u8> {
        Request {
            command_field: field::C_STORE_RQ,
            message_id: 9,
            affected_sop_class_uid: dicom_dictionary_std::uids::CT_IMAGE_STORAGE.into(),
            affected_sop_instance_uid: Some("1.2.3.4".into()),
            has_dataset,
            move_originator: None,
        }
        .encode()
    }

    fn pdv(context: u8, command: bool, last: bool, data: &[u8]) -> PDataValue {
        PDataValue {
            presentation_context_id: context,
            value_type: if command {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last: last,
            data: data.to_vec(),
        }
    }

    /// Feeds a command and a data set cut into `size`-byte fragments (the way a peer with that
    /// fragment size sends them); returns the command and the data set put back together.
    fn round_trip(command: &[u8], data: &[u8], size: usize) -> (Command, Vec<u8>) {
        let mut r = Reassembler::default();
        let mut cmd = None;
        for (chunk, last) in split(command, size) {
            match r.push(pdv(3, true, last, chunk)).unwrap() {
                Assembled::Partial => assert!(!last),
                Assembled::Command {
                    context_id,
                    command,
                } => {
                    assert!(last);
                    assert_eq!(context_id, 3);
                    cmd = Some(command);
                }
                Assembled::Data { .. } => panic!("data from a command fragment"),
            }
        }
        let mut out = Vec::new();
        let mut ended = false;
        for (chunk, last) in split(data, size) {
            match r.push(pdv(3, false, last, chunk)).unwrap() {
                Assembled::Data {
                    context_id,
                    bytes,
                    last: l,
                } => {
                    assert_eq!(context_id, 3);
                    assert_eq!(l, last);
                    out.extend_from_slice(&bytes);
                    ended = l;
                }
                other => panic!("{other:?} from a data fragment"),
            }
        }
        assert!(ended);
        assert!(!r.in_message());
        (cmd.expect("command completed"), out)
    }

    #[test]
    fn fragments_of_every_size_boundary_reassemble() {
        let command = command_bytes(true);
        let max = max_fragment(16384);
        let data: Vec<u8> = (0..3 * max + 5).map(|i| (i % 251) as u8).collect();
        for size in [1, 2, 7, command.len() - 1, command.len(), command.len() + 1] {
            let (c, d) = round_trip(&command, &data[..100], size);
            assert_eq!(c.message_id, 9, "fragment size {size}");
            assert_eq!(d, &data[..100], "fragment size {size}");
        }
        for size in [max - 1, max, max + 1] {
            for len in [0, 1, max - 1, max, max + 1, 2 * max, data.len()] {
                let (_, d) = round_trip(&command, &data[..len], size);
                assert_eq!(d, &data[..len], "fragment size {size}, data set {len}");
            }
        }
    }

    #[test]
    fn empty_fragments_are_kept_in_place() {
        let command = command_bytes(true);
        let mut r = Reassembler::default();
        // an empty first command fragment, then the command, then an empty last one
        assert!(matches!(
            r.push(pdv(1, true, false, &[])).unwrap(),
            Assembled::Partial
        ));
        assert!(matches!(
            r.push(pdv(1, true, false, &command)).unwrap(),
            Assembled::Partial
        ));
        assert!(matches!(
            r.push(pdv(1, true, true, &[])).unwrap(),
            Assembled::Command { .. }
        ));
        // empty data fragments in the middle and an empty last fragment
        for (bytes, last) in [(&b""[..], false), (b"ab", false), (b"", false), (b"", true)] {
            match r.push(pdv(1, false, last, bytes)).unwrap() {
                Assembled::Data {
                    bytes: b, last: l, ..
                } => {
                    assert_eq!(&b[..], bytes);
                    assert_eq!(l, last);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(!r.in_message());
    }

    #[test]
    fn a_command_without_data_set_expects_none() {
        let mut r = Reassembler::default();
        let Assembled::Command { command, .. } =
            r.push(pdv(1, true, true, &command_bytes(false))).unwrap()
        else {
            panic!("no command");
        };
        assert!(!command.has_dataset);
        assert!(!r.in_message());
        assert_eq!(
            r.push(pdv(1, false, true, b"x")).unwrap_err(),
            ReassemblyError::DataWithoutCommand
        );
    }

    #[test]
    fn interleaving_is_refused() {
        // a command fragment in the middle of a data set
        let mut r = Reassembler::default();
        r.push(pdv(1, true, true, &command_bytes(true))).unwrap();
        r.push(pdv(1, false, false, b"abc")).unwrap();
        assert_eq!(
            r.push(pdv(1, true, true, &command_bytes(false)))
                .unwrap_err(),
            ReassemblyError::CommandDuringDataSet
        );
        // a data fragment on another context
        let mut r = Reassembler::default();
        r.push(pdv(1, true, true, &command_bytes(true))).unwrap();
        assert_eq!(
            r.push(pdv(3, false, true, b"abc")).unwrap_err(),
            ReassemblyError::ContextChanged
        );
        // a command continued on another context
        let mut r = Reassembler::default();
        let c = command_bytes(false);
        r.push(pdv(1, true, false, &c[..10])).unwrap();
        assert_eq!(
            r.push(pdv(3, true, true, &c[10..])).unwrap_err(),
            ReassemblyError::ContextChanged
        );
        // data before any command
        let mut r = Reassembler::default();
        assert_eq!(
            r.push(pdv(1, false, false, b"abc")).unwrap_err(),
            ReassemblyError::DataWithoutCommand
        );
        // a command fragment marked last that is not a command set
        let mut r = Reassembler::default();
        assert_eq!(
            r.push(pdv(1, true, true, b"garbage")).unwrap_err(),
            ReassemblyError::UndecodableCommand
        );
    }

    #[test]
    fn too_long_input_is_refused() {
        let c = command_bytes(true);
        // exactly the limit is fine, one byte more is not
        let mut r = Reassembler::new(c.len(), 10);
        assert!(matches!(
            r.push(pdv(1, true, true, &c)).unwrap(),
            Assembled::Command { .. }
        ));
        r.push(pdv(1, false, false, &[0; 6])).unwrap();
        r.push(pdv(1, false, false, &[0; 4])).unwrap();
        assert_eq!(
            r.push(pdv(1, false, true, &[0; 1])).unwrap_err(),
            ReassemblyError::DataSetTooLong
        );
        let mut r = Reassembler::new(c.len() - 1, 10);
        r.push(pdv(1, true, false, &c[..c.len() - 1])).unwrap();
        assert_eq!(
            r.push(pdv(1, true, true, &c[c.len() - 1..])).unwrap_err(),
            ReassemblyError::CommandTooLong
        );
        // the default limit
        let mut r = Reassembler::default();
        r.push(pdv(1, true, false, &vec![0; MAX_COMMAND_LEN]))
            .unwrap();
        assert_eq!(
            r.push(pdv(1, true, true, &[0])).unwrap_err(),
            ReassemblyError::CommandTooLong
        );
    }

    #[test]
    fn fragments_fit_the_peer_limit() {
        assert_eq!(max_fragment(16384), 16378);
        assert_eq!(max_fragment(0), (1 << 20) - 6);
        assert_eq!(max_fragment(100), 1024);
    }

    /// Parses P-DATA-TF PDUs the way dicom-ul (the receiving side of these tests) does,
    /// checking each against the maximum PDU length.
    fn parse_pdus(mut wire: &[u8], max_pdu: u32) -> Vec<PDataValue> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let mut cursor = std::io::Cursor::new(wire);
            let pdu = dicom_ul::pdu::read_pdu(&mut cursor, max_pdu, true)
                .unwrap()
                .expect("a whole PDU");
            let used = cursor.position() as usize;
            let dicom_ul::Pdu::PData { data } = pdu else {
                panic!("not P-DATA");
            };
            let pdu_len = u32::from_be_bytes(wire[2..6].try_into().unwrap());
            assert!(pdu_len <= max_pdu, "PDU length {pdu_len} over {max_pdu}");
            out.extend(data);
            wire = &wire[used..];
        }
        out
    }

    #[tokio::test]
    async fn written_messages_are_read_back() {
        let command = command_bytes(true);
        for max_pdu in [4096u32, 16384, 16385, 262_144] {
            let max = max_fragment(max_pdu);
            for len in [0, 1, max - 1, max, max + 1, 5 * max + 3, WRITE_BATCH + 17] {
                let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                let mut wire = Vec::new();
                let messages = [
                    Outgoing {
                        context_id: 5,
                        command: &command,
                        data: Some(&data),
                    },
                    Outgoing {
                        context_id: 7,
                        command: &command_bytes(false),
                        data: None,
                    },
                ];
                write_messages(&mut wire, max_pdu, &messages).await.unwrap();
                let mut r = Reassembler::default();
                let mut got = Vec::new();
                let mut commands = Vec::new();
                for value in parse_pdus(&wire, max_pdu) {
                    match r.push(value).unwrap() {
                        Assembled::Partial => {}
                        Assembled::Command {
                            context_id,
                            command,
                        } => commands.push((context_id, command.has_dataset)),
                        Assembled::Data { bytes, .. } => got.extend_from_slice(&bytes),
                    }
                }
                assert_eq!(commands, [(5, true), (7, false)]);
                assert_eq!(got, data, "max PDU {max_pdu}, data set {len}");
            }
        }
    }
}
