//! Validated DICOM UIDs.
//!
//! PS3.5 9.1: a UID is at most 64 characters of digits and dots, made of components that do not
//! start with 0 unless the component is 0 itself. Storage keys are derived from these only, so
//! nothing a peer sends can name a path outside the store.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UID {value:?}: {reason}")]
pub struct InvalidUid {
    pub value: String,
    pub reason: &'static str,
}

impl Uid {
    /// Parses a UID, tolerating the trailing NUL or space padding of the UI value
    /// representation (PS3.5 6.2).
    pub fn parse(value: &str) -> Result<Uid, InvalidUid> {
        let v = value.trim_end_matches(['\0', ' ']);
        let fail = |reason| {
            Err(InvalidUid {
                value: value.chars().take(80).collect(),
                reason,
            })
        };
        if v.is_empty() {
            return fail("empty");
        }
        if v.len() > 64 {
            return fail("longer than 64 characters");
        }
        if !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return fail("only digits and dots are allowed");
        }
        for component in v.split('.') {
            if component.is_empty() {
                return fail("empty component");
            }
            if component.len() > 1 && component.starts_with('0') {
                return fail("component with a leading zero");
            }
        }
        Ok(Uid(v.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_padded_uids() {
        assert_eq!(
            Uid::parse("1.2.840.10008.1.2\0").unwrap().as_str(),
            "1.2.840.10008.1.2"
        );
        assert!(Uid::parse("0.1.0").is_ok());
        assert!(Uid::parse(&format!("1.{}", "2".repeat(62))).is_ok());
    }

    #[test]
    fn rejects_path_traversal_and_malformed_uids() {
        for bad in [
            "",
            "../../etc/passwd",
            "1..2",
            "1.2.",
            ".1",
            "1.02",
            "1.2/3",
            "1.2 3",
            "1.2a",
        ] {
            assert!(Uid::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Uid::parse(&format!("1.{}", "2".repeat(63))).is_err());
    }
}
