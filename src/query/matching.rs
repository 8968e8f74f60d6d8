//! Attribute matching (PS3.4 C.2.2.2) and its SQL.

use super::{Attribute, QueryError, Source};
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

impl Matcher {
    pub fn parse(attribute: &Attribute, raw: &str, fuzzy: bool) -> Result<Matcher, QueryError> {
        let value = raw.trim();
        if value.is_empty() || value == "*" {
            return Ok(Matcher::Universal);
        }
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

    /// The SQL condition for this matcher on `attribute`; pushes its parameters (`?N`).
    pub fn to_sql(&self, attribute: &Attribute, fuzzy: bool, params: &mut Vec<String>) -> String {
        let mut param = |params: &mut Vec<String>, v: String| {
            params.push(v);
            format!("?{}", params.len())
        };
        match attribute.source {
            Source::ModalitiesInStudy => {
                // any of the study's series has a matching modality
                let inner = self.column_condition("x.modality", false, false, params, &mut param);
                format!("EXISTS (SELECT 1 FROM series x WHERE x.study_pk = st.pk AND {inner})")
            }
            Source::PersonName(display, normalized) => {
                // PN matching is case-insensitive here (PS3.4 C.2.2.2.1 leaves it to the SCP)
                let column = if display == normalized {
                    format!("UPPER({display})")
                } else {
                    normalized.to_string()
                };
                self.column_condition(&column, true, fuzzy, params, &mut param)
            }
            Source::Integer(column) => match self {
                // validated integers: inlined, since the column is not text
                Matcher::Single(n) => format!("{column} = {n}"),
                _ => "1 = 1".into(),
            },
            Source::Column(column) => {
                let padded_upper = matches!(attribute.vr, "TM" | "DT");
                match self {
                    Matcher::Range(lo, hi) => {
                        let mut parts = Vec::new();
                        if let Some(lo) = lo {
                            parts.push(format!("{column} >= {}", param(params, lo.clone())));
                        }
                        if let Some(hi) = hi {
                            // "-1200" includes 12:00:xx: compare against the bound followed by a
                            // character above every digit
                            let hi = if padded_upper {
                                format!("{hi}~")
                            } else {
                                hi.clone()
                            };
                            parts.push(format!("{column} <= {}", param(params, hi)));
                        }
                        // an empty stored value never matches a range
                        parts.push(format!("{column} <> ''"));
                        format!("({})", parts.join(" AND "))
                    }
                    _ => self.column_condition(column, false, false, params, &mut param),
                }
            }
            _ => "1 = 1".into(),
        }
    }

    fn column_condition(
        &self,
        column: &str,
        upper: bool,
        fuzzy: bool,
        params: &mut Vec<String>,
        param: &mut impl FnMut(&mut Vec<String>, String) -> String,
    ) -> String {
        let norm = |s: &str| {
            if upper {
                s.to_uppercase()
            } else {
                s.to_string()
            }
        };
        match self {
            Matcher::Universal | Matcher::Range(..) => "1 = 1".into(),
            Matcher::Single(v) if fuzzy && upper => {
                // fuzzy PN: any name component starting with the value
                let a = param(params, format!("{}%", like_escape(&norm(v))));
                let b = param(params, format!("%^{}%", like_escape(&norm(v))));
                let c = param(params, format!("% {}%", like_escape(&norm(v))));
                format!("({column} LIKE {a} ESCAPE '!' OR {column} LIKE {b} ESCAPE '!' OR {column} LIKE {c} ESCAPE '!')")
            }
            Matcher::Single(v) => format!("{column} = {}", param(params, norm(v))),
            Matcher::Wildcard(p) => {
                let pattern = wildcard_to_like(&norm(p));
                format!("{column} LIKE {} ESCAPE '!'", param(params, pattern))
            }
            Matcher::List(items) => {
                let placeholders: Vec<String> =
                    items.iter().map(|v| param(params, norm(v))).collect();
                format!("{column} IN ({})", placeholders.join(", "))
            }
        }
    }
}

/// Escapes LIKE's own wildcards (escape character `!`).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

/// DICOM wildcards to a LIKE pattern: `*` → `%`, `?` → `_`, everything else literal.
fn wildcard_to_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '!' => {
                out.push('!');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
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
    fn wildcards_become_escaped_like_patterns() {
        assert_eq!(wildcard_to_like("DO?_*%"), "DO_!_%!%");
        assert_eq!(like_escape("50%_!"), "50!%!_!!");
    }

    #[test]
    fn person_names_match_case_insensitively() {
        let name = attr(0x0010_0010);
        let mut params = Vec::new();
        let sql = Matcher::parse(name, "doe*", false)
            .unwrap()
            .to_sql(name, false, &mut params);
        assert_eq!(sql, "st.patient_name_norm LIKE ?1 ESCAPE '!'");
        assert_eq!(params, vec!["DOE%".to_string()]);
    }
}
