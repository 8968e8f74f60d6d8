//! Command sets and identifiers read from a peer's bytes without trusting their value lengths.
//!
//! dicom-parser reserves and zero-fills a value's whole declared length before it reads the
//! value, so a 30-byte command set whose element claims 4 GiB would cost 4 GiB of memory before
//! the read fails. Here the parser reads through [`Bounded`], which refuses any value longer
//! than what is left of the bytes: memory stays within the size of what the peer sent.

use std::io::Read;

use dicom_core::header::{DataElementHeader, SequenceItemHeader};
use dicom_core::PrimitiveValue;
use dicom_encoding::transfer_syntax::{Codec, TransferSyntax};
use dicom_object::InMemDicomObject;
use dicom_parser::stateful::decode::{Error, Result, StatefulDecode, StatefulDecoder};

/// A data set that inflates to more than this is refused (an identifier is a few hundred
/// bytes; a C-STORE data set never comes through here).
pub const MAX_INFLATED_LEN: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot parse the data set: {0}")]
    Parse(String),
    #[error("the data set inflates to more than {MAX_INFLATED_LEN} bytes")]
    TooLarge,
}

/// Reads a whole data set (a command set, a C-FIND, C-MOVE or C-GET identifier) encoded in
/// `ts`. A deflated one is inflated first, up to [`MAX_INFLATED_LEN`].
pub fn read_dataset(bytes: &[u8], ts: &TransferSyntax) -> Result<InMemDicomObject, DatasetError> {
    let parse = |e: &dyn std::error::Error| DatasetError::Parse(chain(e));
    let inflated;
    let bytes = match ts.codec() {
        Codec::Dataset(Some(adapter)) => {
            let mut out = Vec::new();
            adapter
                .adapt_reader(Box::new(bytes))
                .take(MAX_INFLATED_LEN + 1)
                .read_to_end(&mut out)
                .map_err(|e| parse(&e))?;
            if out.len() as u64 > MAX_INFLATED_LEN {
                return Err(DatasetError::TooLarge);
            }
            inflated = out;
            &inflated[..]
        }
        _ => bytes,
    };
    let decoder = StatefulDecoder::new_with_ts(bytes, ts, 0).map_err(|e| parse(&e))?;
    InMemDicomObject::read_dataset(Bounded {
        inner: decoder,
        end: bytes.len() as u64,
    })
    .map_err(|e| parse(&e))
}

/// An error and its causes, as one line (dicom-rs errors say the detail in their sources).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A decoder that refuses to read (and so to allocate for) a value that runs past `end`.
struct Bounded<D> {
    inner: D,
    end: u64,
}

impl<D: StatefulDecode> Bounded<D> {
    fn fits(&self, len: u32) -> Result<()> {
        // an undefined length is the inner decoder's to refuse
        if len != u32::MAX && u64::from(len) > self.end.saturating_sub(self.inner.position()) {
            return Err(Error::AllocateValueData { len });
        }
        Ok(())
    }
}

impl<D: StatefulDecode> StatefulDecode for Bounded<D> {
    type Reader = D::Reader;

    fn decode_header(&mut self) -> Result<DataElementHeader> {
        self.inner.decode_header()
    }

    fn decode_item_header(&mut self) -> Result<SequenceItemHeader> {
        self.inner.decode_item_header()
    }

    fn read_value(&mut self, header: &DataElementHeader) -> Result<PrimitiveValue> {
        self.fits(header.len.0)?;
        self.inner.read_value(header)
    }

    fn read_value_preserved(&mut self, header: &DataElementHeader) -> Result<PrimitiveValue> {
        self.fits(header.len.0)?;
        self.inner.read_value_preserved(header)
    }

    fn read_value_bytes(&mut self, header: &DataElementHeader) -> Result<PrimitiveValue> {
        self.fits(header.len.0)?;
        self.inner.read_value_bytes(header)
    }

    fn read_to_vec(&mut self, length: u32, vec: &mut Vec<u8>) -> Result<()> {
        self.fits(length)?;
        self.inner.read_to_vec(length, vec)
    }

    fn read_u32_to_vec(&mut self, length: u32, vec: &mut Vec<u32>) -> Result<()> {
        self.fits(length)?;
        self.inner.read_u32_to_vec(length, vec)
    }

    fn read_to<W>(&mut self, length: u32, out: W) -> Result<()>
    where
        Self: Sized,
        W: std::io::Write,
    {
        self.fits(length)?;
        self.inner.read_to(length, out)
    }

    fn skip_bytes(&mut self, length: u32) -> Result<()> {
        self.fits(length)?;
        self.inner.skip_bytes(length)
    }

    fn seek(&mut self, position: u64) -> Result<()>
    where
        Self::Reader: std::io::Seek,
    {
        self.inner.seek(position)
    }

    fn position(&self) -> u64 {
        self.inner.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use dicom_transfer_syntax_registry::entries::{
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };

    fn obj(elements: &[(dicom_core::Tag, dicom_core::VR, &str)]) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elements.iter().map(|(tag, vr, value)| {
            dicom_core::DataElement::new(*tag, *vr, PrimitiveValue::from(*value))
        }))
    }

    #[test]
    fn data_sets_read_as_before() {
        let identifier = obj(&[
            (tags::QUERY_RETRIEVE_LEVEL, dicom_core::VR::CS, "STUDY"),
            (tags::PATIENT_NAME, dicom_core::VR::PN, "DOE^J*"),
        ]);
        for ts in [
            IMPLICIT_VR_LITTLE_ENDIAN.erased(),
            EXPLICIT_VR_LITTLE_ENDIAN.erased(),
        ] {
            let mut bytes = Vec::new();
            identifier.write_dataset_with_ts(&mut bytes, &ts).unwrap();
            // what dicom-object's own reader makes of them
            let before = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).unwrap();
            assert_eq!(read_dataset(&bytes, &ts).unwrap(), before);
        }
        // deflated: written deflated by dicom-object, inflated here
        let ts = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut bytes = Vec::new();
        identifier.write_dataset_with_ts(&mut bytes, &ts).unwrap();
        let before = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).unwrap();
        assert_eq!(read_dataset(&bytes, &ts).unwrap(), before);
    }

    /// Found by the `pdu` fuzz target: (0000,0700) Priority, US, with a length of 0xFFFFFFFE
    /// in a command set of a few dozen bytes made the parser zero-fill 4 GiB.
    #[test]
    fn a_value_longer_than_the_data_is_refused_before_any_allocation() {
        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        // (0000,0100) US 2 bytes, then (0000,0700) claiming 0xFFFFFFFE bytes
        let mut bytes = vec![0x00, 0x00, 0x00, 0x01, 2, 0, 0, 0, 0x30, 0x00];
        bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x07, 0xFE, 0xFF, 0xFF, 0xFF, 0, 0]);
        let err = read_dataset(&bytes, &ts).unwrap_err();
        assert!(err.to_string().contains("4294967294"), "{err}");
        // exactly what is there is fine
        let mut bytes = bytes[..10].to_vec();
        bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x07, 2, 0, 0, 0, 0, 0]);
        let read = read_dataset(&bytes, &ts).unwrap();
        assert_eq!(
            read.element(tags::PRIORITY)
                .unwrap()
                .to_int::<u16>()
                .unwrap(),
            0
        );
        // and one byte more than there is is not
        let last = bytes.len() - 6;
        bytes[last] = 3;
        assert!(read_dataset(&bytes, &ts).is_err());
    }

    #[test]
    fn a_deflate_bomb_is_refused() {
        let ts = DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut deflated = Vec::new();
        {
            use std::io::Write;
            let mut encoder =
                flate2::write::DeflateEncoder::new(&mut deflated, flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..=MAX_INFLATED_LEN >> 20 {
                encoder.write_all(&zeros).unwrap();
            }
            encoder.finish().unwrap();
        }
        assert!(matches!(
            read_dataset(&deflated, &ts),
            Err(DatasetError::TooLarge)
        ));
    }
}
