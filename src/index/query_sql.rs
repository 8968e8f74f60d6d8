//! The SQL of QIDO-RS and C-FIND queries: the one place a query's matching keys
//! (`crate::query::Query`, parsed per PS3.4 C.2.2.2) become a statement, for either backend.

use super::attributes::{Kind, Level};
use super::schema::{Dialect, INSTANCE_SCOPE};
use super::{Index, IndexResult, Sql, SqlValue};
use crate::query::{Attribute, Matcher, Query, Source};

impl dyn Index {
    /// The rows of a query: one value per `Query::columns` attribute, then the stored
    /// metadata when `Query::needs_metadata`; at most `limit + 1` rows, from `offset`.
    pub async fn query_rows(&self, query: &Query) -> IndexResult<Vec<Vec<SqlValue>>> {
        self.query_rows_selecting(query, &query.columns(), query.needs_metadata())
            .await
    }

    /// The rows of a query with only `columns` selected (and the metadata when asked): what
    /// C-FIND uses, so that computed attributes nobody asked for are never evaluated.
    pub async fn query_rows_selecting(
        &self,
        query: &Query,
        columns: &[&'static Attribute],
        with_metadata: bool,
    ) -> IndexResult<Vec<Vec<SqlValue>>> {
        let (sql, params) = statement(query, columns, with_metadata, self.dialect());
        self.fetch(Sql::new(&sql), params).await
    }
}

/// The statement of a query selecting `columns` (shared form) and its parameters.
pub(crate) fn statement(
    query: &Query,
    columns: &[&'static Attribute],
    with_metadata: bool,
    dialect: Dialect,
) -> (String, Vec<SqlValue>) {
    let mut select: Vec<String> = columns.iter().map(|a| select_expr(a, dialect)).collect();
    if with_metadata {
        select.push(metadata_expr(query.level));
    }
    let from = match query.level {
        // the patients table has the patient columns of the studies table, under the same
        // names: aliased `st`, the same attribute declaration serves both levels
        Level::Patient => "patients st",
        Level::Study => "studies st",
        Level::Series => "series se JOIN studies st ON st.pk = se.study_pk",
        Level::Instance => INSTANCE_SCOPE,
    };
    let mut params = Vec::new();
    let mut wheres = Vec::new();
    for (attribute, matcher) in &query.conditions {
        wheres.push(condition(matcher, attribute, query.fuzzy, &mut params));
    }
    let order = match query.level {
        Level::Patient => "st.patient_name_norm, st.pk",
        Level::Study => "st.study_date DESC, st.study_time DESC, st.pk DESC",
        Level::Series => "se.series_number, se.pk",
        Level::Instance => "i.instance_number, i.pk",
    };
    let key = match query.level {
        Level::Patient | Level::Study => "st.pk",
        Level::Series => "se.pk",
        Level::Instance => "i.pk",
    };
    // The page of matches is chosen first, on indexed columns only; the computed attributes
    // (counts, modalities) are then evaluated for the rows of that page alone.
    let mut page = format!("SELECT {key} AS page_key FROM {from}");
    if !wheres.is_empty() {
        page.push_str(" WHERE ");
        page.push_str(&wheres.join(" AND "));
    }
    // Limit and offset are bound parameters: the statement text is the same whatever the
    // page, so the per-connection prepared-statement cache (keyed on the text) holds one
    // statement per query shape, not one per page.
    let count = |n: usize| SqlValue::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let limit = param(&mut params, count(query.limit.saturating_add(1)));
    let offset = param(&mut params, count(query.offset));
    page.push_str(&format!(" ORDER BY {order} LIMIT {limit} OFFSET {offset}"));
    let sql = format!(
        "SELECT {} FROM {from} JOIN ({page}) page ON page.page_key = {key} ORDER BY {order}",
        select.join(", ")
    );
    (sql, params)
}

fn select_expr(a: &Attribute, dialect: Dialect) -> String {
    match a.source {
        Source::Stored(d) => d.qualified(),
        Source::ModalitiesInStudy => match dialect {
            Dialect::Sqlite => {
                "(SELECT group_concat(m, '\\') FROM (SELECT DISTINCT x.modality AS m \
                 FROM series x WHERE x.study_pk = st.pk AND x.modality <> '' ORDER BY 1))"
                    .into()
            }
            Dialect::Postgres => "(SELECT string_agg(DISTINCT x.modality, '\\') FROM series x \
                 WHERE x.study_pk = st.pk AND x.modality <> '')"
                .into(),
        },
        Source::NumberOfStudyRelatedSeries => {
            "(SELECT COUNT(*) FROM series x WHERE x.study_pk = st.pk)".into()
        }
        Source::NumberOfStudyRelatedInstances => {
            "(SELECT COUNT(*) FROM instances x WHERE x.study_pk = st.pk)".into()
        }
        Source::NumberOfSeriesRelatedInstances => {
            "(SELECT COUNT(*) FROM instances x WHERE x.series_pk = se.pk)".into()
        }
    }
}

/// The stored metadata of the row's instance, or of the first instance of its series/study.
fn metadata_expr(level: Level) -> String {
    match level {
        Level::Instance => {
            "(SELECT m.metadata_json FROM instance_metadata m WHERE m.instance_pk = i.pk)".into()
        }
        Level::Series => "(SELECT m.metadata_json FROM instances x JOIN instance_metadata m \
             ON m.instance_pk = x.pk WHERE x.series_pk = se.pk ORDER BY x.pk LIMIT 1)"
            .into(),
        Level::Patient | Level::Study => {
            "(SELECT m.metadata_json FROM instances x JOIN instance_metadata m \
             ON m.instance_pk = x.pk WHERE x.study_pk = st.pk ORDER BY x.pk LIMIT 1)"
                .into()
        }
    }
}

fn param(params: &mut Vec<SqlValue>, v: SqlValue) -> String {
    params.push(v);
    format!("?{}", params.len())
}

/// The SQL condition for `matcher` on `attribute`; pushes its parameters (`?N`).
pub(crate) fn condition(
    matcher: &Matcher,
    attribute: &Attribute,
    fuzzy: bool,
    params: &mut Vec<SqlValue>,
) -> String {
    match attribute.source {
        Source::ModalitiesInStudy => {
            // any of the study's series has a matching modality
            let inner = column_condition(matcher, "x.modality", false, false, params);
            format!("EXISTS (SELECT 1 FROM series x WHERE x.study_pk = st.pk AND {inner})")
        }
        Source::Stored(d) => match d.kind {
            // PN matching is case-insensitive here (PS3.4 C.2.2.2.1 leaves it to the SCP)
            Kind::PersonName { .. } => {
                column_condition(matcher, &d.match_column(), true, fuzzy, params)
            }
            Kind::Integer => {
                let column = d.qualified();
                match matcher {
                    Matcher::Single(n) => match n.parse::<i64>() {
                        Ok(n) => format!("{column} = {}", param(params, SqlValue::Int(n))),
                        Err(_) => "1 = 0".into(),
                    },
                    _ => "1 = 1".into(),
                }
            }
            Kind::Text => {
                let column = d.qualified();
                let padded_upper = matches!(attribute.vr, "TM" | "DT");
                match matcher {
                    Matcher::Range(lo, hi) => {
                        let mut parts = Vec::new();
                        if let Some(lo) = lo {
                            let p = param(params, SqlValue::Text(lo.clone()));
                            parts.push(format!("{column} >= {p}"));
                        }
                        if let Some(hi) = hi {
                            // "-1200" includes 12:00:xx: compare against the bound followed by a
                            // character above every digit
                            let hi = if padded_upper {
                                format!("{hi}~")
                            } else {
                                hi.clone()
                            };
                            let p = param(params, SqlValue::Text(hi));
                            parts.push(format!("{column} <= {p}"));
                        }
                        // an empty stored value never matches a range
                        parts.push(format!("{column} <> ''"));
                        format!("({})", parts.join(" AND "))
                    }
                    _ => column_condition(matcher, &column, false, false, params),
                }
            }
        },
        _ => "1 = 1".into(),
    }
}

fn column_condition(
    matcher: &Matcher,
    column: &str,
    upper: bool,
    fuzzy: bool,
    params: &mut Vec<SqlValue>,
) -> String {
    let norm = |s: &str| {
        SqlValue::Text(if upper {
            s.to_uppercase()
        } else {
            s.to_string()
        })
    };
    let text = |s: String| SqlValue::Text(s);
    match matcher {
        Matcher::Universal | Matcher::Range(..) => "1 = 1".into(),
        Matcher::Single(v) if fuzzy && upper => {
            // fuzzy PN: any name component starting with the value
            let v = like_escape(&v.to_uppercase());
            let a = param(params, text(format!("{v}%")));
            let b = param(params, text(format!("%^{v}%")));
            let c = param(params, text(format!("% {v}%")));
            format!("({column} LIKE {a} ESCAPE '!' OR {column} LIKE {b} ESCAPE '!' OR {column} LIKE {c} ESCAPE '!')")
        }
        Matcher::Single(v) => format!("{column} = {}", param(params, norm(v))),
        Matcher::Wildcard(p) => {
            let pattern = if upper {
                wildcard_to_like(&p.to_uppercase())
            } else {
                wildcard_to_like(p)
            };
            format!("{column} LIKE {} ESCAPE '!'", param(params, text(pattern)))
        }
        Matcher::List(items) => {
            let placeholders: Vec<String> = items.iter().map(|v| param(params, norm(v))).collect();
            format!("{column} IN ({})", placeholders.join(", "))
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

    #[test]
    fn wildcards_become_escaped_like_patterns() {
        assert_eq!(wildcard_to_like("DO?_*%"), "DO_!_%!%");
        assert_eq!(like_escape("50%_!"), "50!%!_!!");
    }

    #[test]
    fn person_names_match_case_insensitively() {
        let name = by_tag(0x0010_0010).unwrap();
        let mut params = Vec::new();
        let matcher = Matcher::parse(name, "doe*", false).unwrap();
        let sql = condition(&matcher, name, false, &mut params);
        assert_eq!(sql, "st.patient_name_norm LIKE ?1 ESCAPE '!'");
        assert_eq!(params, vec![SqlValue::Text("DOE%".into())]);
        let referring = by_tag(0x0008_0090).unwrap();
        let mut params = Vec::new();
        let matcher = Matcher::parse(referring, "smith", false).unwrap();
        let sql = condition(&matcher, referring, false, &mut params);
        assert_eq!(sql, "UPPER(st.referring_physician_name) = ?1");
    }

    #[test]
    fn pages_share_one_statement_text() {
        let page = |limit: usize, offset: usize| {
            let keys = [("PatientName".to_string(), "DOE*".to_string())];
            let query = Query::parse(
                crate::query::Level::Study,
                &keys,
                crate::query::Include::Defaults,
                false,
                limit,
                offset,
            )
            .unwrap();
            statement(&query, &query.columns(), false, Dialect::Postgres)
        };
        let (first, first_params) = page(10, 0);
        let (later, later_params) = page(25, 500);
        assert_eq!(first, later);
        assert!(first.contains("LIMIT ?2 OFFSET ?3"), "{first}");
        assert_eq!(first_params[1..], [SqlValue::Int(11), SqlValue::Int(0)]);
        assert_eq!(later_params[1..], [SqlValue::Int(26), SqlValue::Int(500)]);
        // an offset beyond any count is bound as the largest one
        let (_, params) = page(10, usize::MAX);
        assert_eq!(params[2], SqlValue::Int(i64::MAX));
    }

    #[test]
    fn integers_bind_as_integers() {
        let number = by_tag(0x0020_0011).unwrap();
        let mut params = Vec::new();
        let matcher = Matcher::parse(number, "7", false).unwrap();
        let sql = condition(&matcher, number, false, &mut params);
        assert_eq!(sql, "se.series_number = ?1");
        assert_eq!(params, vec![SqlValue::Int(7)]);
    }
}
