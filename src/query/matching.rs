//! Attribute matching (PS3.4 C.2.2.2) and its SQL.

use super::{limits, Attribute, QueryError};
use crate::uid::Uid;

/// How one matching key matches (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Empty value or `*`: matches everything (C.2.2.2.3).
    Universal,
    /// Single value matching (C.2.2.2.1).
    Single(String),
    /// Wildcard matching with `*` and `?` (C.2.2.2.4), kept as the raw pattern.
    Wildcard(String),
    /// List of UIDs separated by backslashes (C.2.2.2.2), or a list of values for
    /// multi-valued attributes such as Modalities in Study.
    List(Vec<String>),
    /// Range matching of dates and times (C.2.2.2.5); either bound may be open.
    Range(Option<String>, Option<String>),
}

fn invalid(attribute: &Attribute, value: &str, reason: &str) -> QueryError {
    QueryError::InvalidValue {
        attribute: attribute.keyword.to_string(),
        value: value.chars().take(100).collect(),
        reason: reason.to_string(),
    }
}

fn check_date(attribute: &Attribute, value: &str, bound: &str) -> Result<(), QueryError> {
    let ok = match attribute.vr {
        "DA" => bound.len() == 8 && bound.bytes().all(|b| b.is_ascii_digit()),
        "TM" => {
            let (hms, frac) = bound.split_once('.').unwrap_or((bound, ""));
            !hms.is_empty()
                && hms.len() <= 6
                && hms.len() % 2 == 0
                && hms.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        _ => {
            !bound.is_empty()
                && bound
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.".contains(&b))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            attribute,
            value,
            match attribute.vr {
                "DA" => "expected a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD",
                "TM" => "expected a time HHMMSS or a range HHMMSS-HHMMSS",
                _ => "malformed value",
            },
        ))
    }
}

/// The most characters one value of a VR holds (PS3.5 Table 6.2-1); VRs without a smaller
/// maximum are held to [`limits::MAX_VALUE_CHARS`]. PN: 64 per component group, three groups
/// and their two `=`. US is matched as a decimal number, like IS.
const VR_MAX_CHARS: &[(&str, usize)] = &[
    ("AE", 16),
    ("AS", 4),
    ("CS", 16),
    ("DA", 8),
    ("DS", 16),
    ("DT", 26),
    ("IS", 12),
    ("LO", 64),
    ("PN", 3 * 64 + 2),
    ("SH", 16),
    ("TM", 14),
    ("UI", 64),
    ("US", 12),
];

/// At most [`limits::MAX_LIST_VALUES`] values, each no longer than its VR allows (`*`, which
/// stands for any number of characters, not counted; each bound of a range on its own).
fn check_lengths(attribute: &Attribute, value: &str) -> Result<(), QueryError> {
    let max = VR_MAX_CHARS
        .iter()
        .find(|(vr, _)| *vr == attribute.vr)
        .map_or(limits::MAX_VALUE_CHARS, |(_, n)| *n);
    let range = matches!(attribute.vr, "DA" | "TM" | "DT");
    for (n, item) in value.split('\\').enumerate() {
        if n >= limits::MAX_LIST_VALUES {
            return Err(invalid(
                attribute,
                value,
                &format!("more than {} values", limits::MAX_LIST_VALUES),
            ));
        }
        // splitting at a character the item cannot hold leaves it whole
        for piece in item.split(if range { '-' } else { '\\' }) {
            if piece.chars().filter(|c| *c != '*').count() > max {
                return Err(invalid(
                    attribute,
                    value,
                    &format!(
                        "a value longer than {max} characters (the most a {} holds)",
                        attribute.vr
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Matcher {
    pub fn parse(attribute: &Attribute, raw: &str, fuzzy: bool) -> Result<Matcher, QueryError> {
        let value = raw.trim();
        if value.is_empty() || value == "*" {
            return Ok(Matcher::Universal);
        }
        check_lengths(attribute, value)?;
        let _ = fuzzy;
        match attribute.vr {
            "UI" => {
                let uids: Vec<String> = value
                    .split('\\')
                    .map(|u| {
                        Uid::parse(u)
                            .map(|u| u.to_string())
                            .map_err(|e| invalid(attribute, value, &e.to_string()))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(if uids.len() == 1 {
                    Matcher::Single(uids.into_iter().next().expect("one"))
                } else {
                    Matcher::List(uids)
                })
            }
            "DA" | "TM" | "DT" => {
                if let Some((lo, hi)) = value.split_once('-') {
                    let (lo, hi) = (lo.trim(), hi.trim());
                    if lo.is_empty() && hi.is_empty() {
                        return Err(invalid(
                            attribute,
                            value,
                            "a range needs at least one bound",
                        ));
                    }
                    if !lo.is_empty() {
                        check_date(attribute, value, lo)?;
                    }
                    if !hi.is_empty() {
                        check_date(attribute, value, hi)?;
                    }
                    if !lo.is_empty() && !hi.is_empty() && lo > hi {
                        return Err(invalid(attribute, value, "range start is after its end"));
                    }
                    Ok(Matcher::Range(
                        (!lo.is_empty()).then(|| lo.to_string()),
                        (!hi.is_empty()).then(|| hi.to_string()),
                    ))
                } else {
                    check_date(attribute, value, value)?;
                    Ok(Matcher::Single(value.to_string()))
                }
            }
            "IS" | "US" => {
                let n: i64 = value
                    .parse()
                    .map_err(|_| invalid(attribute, value, "expected an integer"))?;
                Ok(Matcher::Single(n.to_string()))
            }
            _ => {
                if value.contains('\\') {
                    let items: Vec<String> = value.split('\\').map(str::to_string).collect();
                    return Ok(Matcher::List(items));
                }
                if value.contains('*') || value.contains('?') {
                    Ok(Matcher::Wildcard(value.to_string()))
                } else {
                    Ok(Matcher::Single(value.to_string()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::attributes::by_tag;

    fn attr(tag: u32) -> &'static Attribute {
        by_tag(tag).unwrap()
    }

    #[test]
    fn parses_each_kind_of_matching() {
        let name = attr(0x0010_0010);
        assert_eq!(Matcher::parse(name, "", false).unwrap(), Matcher::Universal);
        assert_eq!(
            Matcher::parse(name, "*", false).unwrap(),
            Matcher::Universal
        );
        assert_eq!(
            Matcher::parse(name, "DOE^J*", false).unwrap(),
            Matcher::Wildcard("DOE^J*".into())
        );
        assert_eq!(
            Matcher::parse(name, "DOE^JANE", false).unwrap(),
            Matcher::Single("DOE^JANE".into())
        );
        let uid = attr(0x0020_000D);
        assert_eq!(
            Matcher::parse(uid, "1.2\\1.3", false).unwrap(),
            Matcher::List(vec!["1.2".into(), "1.3".into()])
        );
        assert!(Matcher::parse(uid, "1.2.x", false).is_err());
        let date = attr(0x0008_0020);
        assert_eq!(
            Matcher::parse(date, "20240101-20240131", false).unwrap(),
            Matcher::Range(Some("20240101".into()), Some("20240131".into()))
        );
        assert_eq!(
            Matcher::parse(date, "-20240131", false).unwrap(),
            Matcher::Range(None, Some("20240131".into()))
        );
        assert_eq!(
            Matcher::parse(date, "20240101-", false).unwrap(),
            Matcher::Range(Some("20240101".into()), None)
        );
        for bad in ["2024", "2024-01-01", "20240131-20240101", "-", "yesterday"] {
            assert!(Matcher::parse(date, bad, false).is_err(), "{bad}");
        }
        assert!(Matcher::parse(attr(0x0008_0030), "0800-1230", false).is_ok());
        assert!(Matcher::parse(attr(0x0020_0011), "x", false).is_err());
    }

    #[test]
    fn values_are_held_to_their_vr_and_lists_to_a_thousand() {
        let reason = |tag: u32, value: &str| match Matcher::parse(attr(tag), value, false) {
            Err(QueryError::InvalidValue { reason, .. }) => reason,
            other => panic!("{value:.40}: {other:?}"),
        };
        // SH (Accession Number) holds 16: a 16-character prefix and a wildcard is fine
        let accession = 0x0008_0050;
        assert!(Matcher::parse(attr(accession), &"A".repeat(16), false).is_ok());
        assert!(Matcher::parse(attr(accession), &format!("{}*", "A".repeat(16)), false).is_ok());
        assert!(reason(accession, &"A".repeat(17)).contains("longer than 16"));
        // PN: three component groups of 64
        let name = 0x0010_0010;
        let full = format!("{0}={0}={0}", "N".repeat(64));
        assert!(Matcher::parse(attr(name), &full, false).is_ok());
        assert!(reason(name, &"N".repeat(195)).contains("longer than 194"));
        // a date range: each bound on its own
        assert!(Matcher::parse(attr(0x0008_0020), "20240101-20240131", false).is_ok());
        assert!(reason(0x0008_0020, "202401011-2024").contains("longer than 8"));
        // UID lists: a thousand UIDs of at most 64 characters
        let study = 0x0020_000D;
        let uids: Vec<String> = (0..1000).map(|n| format!("1.2.3.{n}")).collect();
        assert!(Matcher::parse(attr(study), &uids.join("\\"), false).is_ok());
        let more: Vec<String> = (0..1001).map(|n| format!("1.2.3.{n}")).collect();
        assert!(reason(study, &more.join("\\")).contains("more than 1000 values"));
        let long_uid = format!("1.{}", "2".repeat(63));
        assert!(reason(study, &long_uid).contains("longer than 64"));
        // the value in the error is cut short
        match Matcher::parse(attr(name), &"N".repeat(5000), false) {
            Err(QueryError::InvalidValue { value, .. }) => assert_eq!(value.len(), 100),
            other => panic!("{other:?}"),
        }
    }
}
