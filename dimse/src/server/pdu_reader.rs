//! Receiving PDUs (PS3.8 9.3): bytes are buffered as they come and a PDU is parsed, with
//! dicom-ul's `read_pdu`, once all of it (as its length field says) has arrived; the Maximum
//! Length this node announced bounds P-DATA-TF (PS3.8 D.1).

use bytes::{Bytes, BytesMut};
use dicom_ul::pdu::{AbortRQServiceProviderReason, MAXIMUM_PDU_SIZE, PDU_HEADER_SIZE};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncReadExt};

/// PDUs other than P-DATA-TF (an A-ASSOCIATE-RQ proposing 128 presentation contexts with many
/// transfer syntaxes each runs to a hundred KiB) may be this long even when our maximum PDU
/// length, which bounds P-DATA-TF only (PS3.8 D.1), is smaller.
const MAX_CONTROL_PDU: u32 = 1 << 20;

/// P-DATA-TF (PS3.8 9.3.5).
const P_DATA_TF: u8 = 0x04;

/// Why no PDU could be received.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("connection closed by the peer")]
    Closed,
    #[error("cannot read from the connection: {0}")]
    Io(#[from] std::io::Error),
    /// A P-DATA-TF longer than the maximum length we announced is a protocol error (PS3.8
    /// D.1), as is any other PDU beyond [`MAX_CONTROL_PDU`].
    #[error("PDU of type {pdu_type:#04x} with length {length}, over the limit of {max}")]
    TooLong { pdu_type: u8, length: u32, max: u32 },
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

impl ReceiveError {
    /// The A-ABORT reason for this error, when the connection is still there to send one
    /// (PS3.8 Table 9-26).
    pub fn abort_reason(&self) -> Option<AbortRQServiceProviderReason> {
        match self {
            ReceiveError::Closed | ReceiveError::Io(_) => None,
            ReceiveError::TooLong { .. } | ReceiveError::Malformed(_) => {
                Some(AbortRQServiceProviderReason::InvalidPduParameter)
            }
        }
    }
}

/// Reads PDUs: bytes are buffered until a whole PDU (as its length field says) has arrived,
/// then it is parsed once. Dropping a `receive` before it completes loses nothing: what was
/// read stays in the buffer for the next call.
#[derive(Debug)]
pub struct PduReader {
    pub(super) buffer: BytesMut,
    /// The Maximum Length we announced: the limit for P-DATA-TF PDUs.
    max_pdu_length: u32,
}

impl PduReader {
    pub fn new(max_pdu_length: u32) -> Self {
        PduReader {
            buffer: BytesMut::with_capacity(64 * 1024),
            max_pdu_length,
        }
    }

    /// The next PDU, reading from `stream` as needed.
    pub async fn receive<R>(&mut self, stream: &mut R) -> Result<Pdu, ReceiveError>
    where
        R: AsyncRead + Unpin,
    {
        self.receive_raw(stream).await.map(|(pdu, _)| pdu)
    }

    /// The next PDU and its bytes.
    pub(super) async fn receive_raw<R>(
        &mut self,
        stream: &mut R,
    ) -> Result<(Pdu, Bytes), ReceiveError>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            if let Some(pdu) = self.next_buffered()? {
                return Ok(pdu);
            }
            if self.buffer.capacity() - self.buffer.len() < 4096 {
                self.buffer.reserve(64 * 1024);
            }
            if stream.read_buf(&mut self.buffer).await? == 0 {
                return Err(ReceiveError::Closed);
            }
        }
    }

    /// The next PDU if all of it is buffered, and its bytes.
    pub(super) fn next_buffered(&mut self) -> Result<Option<(Pdu, Bytes)>, ReceiveError> {
        // PDU type, reserved, 4-byte length (PS3.8 9.3.1)
        let Some(&[pdu_type, _, l0, l1, l2, l3]) = self.buffer.get(..PDU_HEADER_SIZE as usize)
        else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let max = if pdu_type == P_DATA_TF {
            self.max_pdu_length
        } else {
            self.max_pdu_length.max(MAX_CONTROL_PDU)
        };
        if length > max {
            return Err(ReceiveError::TooLong {
                pdu_type,
                length,
                max,
            });
        }
        let total = PDU_HEADER_SIZE as usize + length as usize;
        if self.buffer.len() < total {
            self.buffer.reserve(total - self.buffer.len());
            return Ok(None);
        }
        let bytes = self.buffer.split_to(total).freeze();
        // the length was checked above; the parser only reads what the PDU holds
        match dicom_ul::read_pdu(bytes.clone(), MAXIMUM_PDU_SIZE, false) {
            Ok(Some(pdu)) => Ok(Some((pdu, bytes))),
            Ok(None) => Err(ReceiveError::Malformed(
                "items run past the end of the PDU".into(),
            )),
            Err(e) => Err(ReceiveError::Malformed(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed};
    use tokio::io::AsyncWriteExt;

    fn encode(pdu: &Pdu) -> Vec<u8> {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        bytes
    }

    fn pdata(len: usize) -> Vec<u8> {
        encode(&Pdu::PData {
            data: vec![dicom_ul::pdu::PDataValue {
                presentation_context_id: 1,
                value_type: dicom_ul::pdu::PDataValueType::Data,
                is_last: true,
                data: vec![7; len],
            }],
        })
    }

    #[test]
    fn a_p_data_longer_than_announced_is_refused() {
        // PDU length = 6 + data: exactly the limit passes, one byte more does not
        let mut reader = PduReader::new(16384);
        reader.buffer.extend_from_slice(&pdata(16384 - 6));
        assert!(matches!(
            reader.next_buffered().unwrap(),
            Some((Pdu::PData { .. }, _))
        ));
        reader.buffer.extend_from_slice(&pdata(16384 - 5)[..6]);
        let err = reader.next_buffered().unwrap_err();
        assert!(
            matches!(
                err,
                ReceiveError::TooLong {
                    pdu_type: 0x04,
                    length: 16385,
                    max: 16384
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.abort_reason(),
            Some(AbortRQServiceProviderReason::InvalidPduParameter)
        );
        // an A-ASSOCIATE-RQ may be longer than the P-DATA limit
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".into(),
            called_ae_title: "PACS".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: (0..100u8)
                .map(|i| PresentationContextProposed {
                    id: 2 * i + 1,
                    abstract_syntax: uids::CT_IMAGE_STORAGE.into(),
                    transfer_syntaxes: vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.into(); 10],
                })
                .collect(),
            user_variables: vec![],
        };
        let bytes = encode(&Pdu::AssociationRQ(rq));
        assert!(bytes.len() > 16384);
        let mut reader = PduReader::new(16384);
        reader.buffer.extend_from_slice(&bytes);
        assert!(matches!(
            reader.next_buffered().unwrap(),
            Some((Pdu::AssociationRQ(_), _))
        ));
    }

    /// Whatever the peer sends, the reader answers a PDU or an error, never a panic: random
    /// bodies under valid headers of every PDU type, and random headers.
    #[test]
    fn random_pdus_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for round in 0..20_000 {
            let len = (next() % 300) as usize;
            let mut pdu = vec![(round % 8) as u8 + 1, 0];
            pdu.extend_from_slice(&(len as u32).to_be_bytes());
            pdu.extend((0..len).map(|_| next() as u8));
            if round % 5 == 0 {
                // structured enough to reach the item parsers: P-DATA items, AC/RQ items
                if let Some(b) = pdu.get_mut(6..10) {
                    b.copy_from_slice(&((len as u32).saturating_sub(4)).to_be_bytes());
                }
            }
            let mut reader = PduReader::new(16384);
            reader.buffer.extend_from_slice(&pdu);
            let _ = reader.next_buffered();
        }
    }

    #[tokio::test]
    async fn pdus_are_read_whole_however_they_arrive() {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut wire = pdata(1000);
        wire.extend(encode(&Pdu::ReleaseRQ));
        let writer = tokio::spawn(async move {
            // a byte at a time for the first PDU's header, then the rest in odd pieces
            for chunk in wire[..10].chunks(1).chain(wire[10..].chunks(333)) {
                theirs.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            theirs
        });
        let mut reader = PduReader::new(16384);
        let Pdu::PData { data } = reader.receive(&mut ours).await.unwrap() else {
            panic!("not P-DATA");
        };
        assert_eq!(data[0].data, vec![7; 1000]);
        assert_eq!(reader.receive(&mut ours).await.unwrap(), Pdu::ReleaseRQ);
        drop(writer.await.unwrap());
        assert!(matches!(
            reader.receive(&mut ours).await,
            Err(ReceiveError::Closed)
        ));
        // garbage: a malformed PDU
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        theirs
            .write_all(&[0x04, 0, 0, 0, 0, 3, 0, 0, 0])
            .await
            .unwrap();
        assert!(matches!(
            PduReader::new(16384).receive(&mut ours).await,
            Err(ReceiveError::Malformed(_))
        ));
    }
}
