//! How deeply a data set's sequences nest, found without recursion, before anything parses it
//! into objects: dicom-object builds a nested sequence by recursion (`build_object` /
//! `build_sequence`), as do the DICOM JSON writer and the node's metadata walk, so a data set
//! nesting sequences a few thousand levels deep would overflow the stack. Used for C-FIND,
//! C-MOVE and C-GET identifiers here, and by the node's ingest for every received instance.
//!
//! The check walks the tokens of dicom-parser's lazy reader (the one dicom-object's collector
//! reads with, so both see the same structure), skipping values without reading them, up to
//! the top-level Pixel Data (where the parsers that build objects stop).

use std::io::{Read, Seek};

use dicom_encoding::TransferSyntax;
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;

/// Sequences may nest this deep (an item's sequence inside a sequence's item counts two). Real
/// objects stay under ten: structured reports, the deepest, rarely pass six.
pub const MAX_SEQUENCE_DEPTH: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NestingError {
    #[error("sequences nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("cannot read the data set: {0}")]
    Unreadable(String),
}

/// Checks that no sequence in the data set read from `source` (encoded in `ts`, starting at
/// the reader's position) nests deeper than `max_depth`.
pub fn check_sequence_depth<R: Read + Seek>(
    source: R,
    ts: &TransferSyntax,
    max_depth: usize,
) -> Result<(), NestingError> {
    let unreadable = |e: &dyn std::fmt::Display| NestingError::Unreadable(e.to_string());
    let mut reader = LazyDataSetReader::new_with_ts(source, ts).map_err(|e| unreadable(&e))?;
    let mut depth = 0usize;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| unreadable(&e))?;
        match token {
            LazyDataToken::PixelSequenceStart if depth == 0 => return Ok(()),
            LazyDataToken::SequenceStart { .. } | LazyDataToken::PixelSequenceStart => {
                depth += 1;
                if depth > max_depth {
                    return Err(NestingError::TooDeep(max_depth));
                }
            }
            LazyDataToken::SequenceEnd => depth = depth.saturating_sub(1),
            LazyDataToken::ElementHeader(header) if depth == 0 && is_pixel_data(header.tag) => {
                return Ok(());
            }
            value @ (LazyDataToken::LazyValue { .. } | LazyDataToken::LazyItemValue { .. }) => {
                value.skip().map_err(|e| unreadable(&e))?
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_pixel_data(tag: dicom_core::Tag) -> bool {
    use dicom_dictionary_std::tags;
    matches!(
        tag,
        tags::PIXEL_DATA | tags::FLOAT_PIXEL_DATA | tags::DOUBLE_FLOAT_PIXEL_DATA
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, Length, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };

    /// `levels` sequences, each in the one item of the one above, encoded in `ts`.
    pub(crate) fn nested(levels: usize, ts: &TransferSyntax) -> Vec<u8> {
        let mut inner = InMemDicomObject::from_element_iter([DataElement::new(
            tags::CODE_VALUE,
            VR::SH,
            PrimitiveValue::from("X"),
        )]);
        for _ in 0..levels {
            inner = InMemDicomObject::from_element_iter([DataElement::new(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                VR::SQ,
                DataSetSequence::new(vec![inner], Length::UNDEFINED),
            )]);
        }
        let mut bytes = Vec::new();
        inner.write_dataset_with_ts(&mut bytes, ts).unwrap();
        bytes
    }

    #[test]
    fn depth_is_counted_in_every_encoding() {
        for ts in [
            &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        ] {
            let ok = nested(MAX_SEQUENCE_DEPTH, ts);
            assert_eq!(
                check_sequence_depth(std::io::Cursor::new(&ok), ts, MAX_SEQUENCE_DEPTH),
                Ok(())
            );
            let deep = nested(MAX_SEQUENCE_DEPTH + 1, ts);
            assert_eq!(
                check_sequence_depth(std::io::Cursor::new(&deep), ts, MAX_SEQUENCE_DEPTH),
                Err(NestingError::TooDeep(MAX_SEQUENCE_DEPTH))
            );
        }
    }

    /// Deep enough to overflow a recursive parser's stack: refused, without recursion.
    #[test]
    fn very_deep_nesting_is_refused_without_recursion() {
        // item header and sequence header, undefined lengths, 100 000 levels, hand-made
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            // (0040,A043) SQ, undefined length, Explicit VR LE; then an item of undefined length
            bytes.extend_from_slice(&[0x40, 0x00, 0x43, 0xA0, b'S', b'Q', 0, 0]);
            bytes.extend_from_slice(&[0xFF; 4]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        assert_eq!(
            check_sequence_depth(std::io::Cursor::new(&bytes), &ts, MAX_SEQUENCE_DEPTH),
            Err(NestingError::TooDeep(MAX_SEQUENCE_DEPTH))
        );
        // garbage is unreadable, not a panic
        assert!(matches!(
            check_sequence_depth(std::io::Cursor::new(&[0x08, 0x00, 0x05]), &ts, 32),
            Ok(()) | Err(NestingError::Unreadable(_))
        ));
    }
}
