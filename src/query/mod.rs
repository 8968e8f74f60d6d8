//! The query engine shared by QIDO-RS and C-FIND: matching keys parsed per PS3.4 C.2.2.2, run
//! by the index as one statement (`crate::index::query_sql` writes its SQL), and its rows
//! rendered as DICOM JSON datasets.

pub mod attributes;
mod matching;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::index::{Index, IndexError, SqlValue};
pub use attributes::{Attribute, Level, Source};
pub use matching::Matcher;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("unknown attribute {0:?}")]
    UnknownAttribute(String),
    #[error("attribute {0} cannot be used as a matching key at this level")]
    NotMatchable(String),
    // the reason first: a C-FIND Error Comment (LO) keeps only the first 64 characters
    #[error("{attribute}: {reason}; value {value:?}")]
    InvalidValue {
        attribute: String,
        value: String,
        reason: String,
    },
    /// More of something than [`limits`] allows.
    #[error("{what}: at most {limit}")]
    TooMany { what: String, limit: usize },
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

/// Caps on what one query (a QIDO-RS search or a C-FIND identifier) may ask, so that no
/// request builds a statement or a parse without bound. Value lengths are checked per VR by
/// [`Matcher::parse`].
pub mod limits {
    /// Matching keys in one query (QIDO-RS parameters that are not `limit`, `offset`,
    /// `includefield`...; C-FIND keys with a value).
    pub const MAX_MATCHING_KEYS: usize = 64;
    /// Attributes one query may ask to be returned (`includefield` values; the elements of a
    /// C-FIND identifier, return keys included).
    pub const MAX_RETURN_KEYS: usize = 256;
    /// Values of one list (a UID list, PS3.4 C.2.2.2.2, or any backslash-separated list).
    pub const MAX_LIST_VALUES: usize = 1000;
    /// Characters of one value whose VR has no smaller maximum (PS3.5 Table 6.2-1).
    pub const MAX_VALUE_CHARS: usize = 1024;
}

/// What to return beside the attributes returned by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Include {
    #[default]
    Defaults,
    /// `includefield=all`: every attribute the index has at this level and above, and for
    /// instances everything in their stored metadata.
    All,
    /// These tags, read from stored metadata when the index does not hold them.
    Tags(Vec<u32>),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub struct Query {
    pub level: Level,
    pub conditions: Vec<(&'static Attribute, Matcher)>,
    pub include: Include,
    pub fuzzy: bool,
    /// At most this many results; one more is fetched to tell whether the result was cut.
    pub limit: usize,
    pub offset: usize,
}

/// The results of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// One DICOM JSON dataset per match.
    pub datasets: Vec<Value>,
    /// Whether more matches exist beyond `limit`.
    pub truncated: bool,
}

/// Resolves an attribute given by keyword (`PatientName`) or tag (`00100010`).
pub fn resolve_tag(name: &str) -> Result<u32, QueryError> {
    let name = name.trim();
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(u32::from_str_radix(name, 16).expect("hex"));
    }
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_name(name)
        .map(|e| {
            let t = e.tag_range().inner();
            ((t.group() as u32) << 16) | t.element() as u32
        })
        .ok_or_else(|| QueryError::UnknownAttribute(name.to_string()))
}

impl Query {
    /// Builds a query from matching keys given as (attribute, value) strings.
    pub fn parse(
        level: Level,
        keys: &[(String, String)],
        include: Include,
        fuzzy: bool,
        limit: usize,
        offset: usize,
    ) -> Result<Query, QueryError> {
        if keys.len() > limits::MAX_MATCHING_KEYS {
            return Err(QueryError::TooMany {
                what: "matching keys".into(),
                limit: limits::MAX_MATCHING_KEYS,
            });
        }
        if let Include::Tags(tags) = &include {
            if tags.len() > limits::MAX_RETURN_KEYS {
                return Err(QueryError::TooMany {
                    what: "includefield attributes".into(),
                    limit: limits::MAX_RETURN_KEYS,
                });
            }
        }
        let mut conditions = Vec::new();
        for (name, value) in keys {
            let tag = resolve_tag(name)?;
            let attribute = attributes::by_tag(tag)
                .filter(|a| a.level <= level && a.is_matchable())
                .ok_or_else(|| QueryError::NotMatchable(name.clone()))?;
            let matcher = Matcher::parse(attribute, value, fuzzy)?;
            if matcher != Matcher::Universal {
                conditions.push((attribute, matcher));
            }
        }
        Ok(Query {
            level,
            conditions,
            include,
            fuzzy,
            limit,
            offset,
        })
    }

    /// Restricts the query to one study and/or series (the resource path of QIDO-RS, the
    /// unique keys of a hierarchical C-FIND).
    pub fn within(
        mut self,
        study: Option<&str>,
        series: Option<&str>,
    ) -> Result<Query, QueryError> {
        if let Some(uid) = study {
            let a = attributes::by_tag(0x0020_000D).expect("StudyInstanceUID");
            self.conditions.push((a, Matcher::parse(a, uid, false)?));
        }
        if let Some(uid) = series {
            let a = attributes::by_tag(0x0020_000E).expect("SeriesInstanceUID");
            self.conditions.push((a, Matcher::parse(a, uid, false)?));
        }
        Ok(self)
    }

    /// Attributes present in the result rows of this query: everything indexed at this level
    /// and above (patient and study attributes come with series and instances).
    pub(crate) fn columns(&self) -> Vec<&'static Attribute> {
        attributes::INDEXED
            .iter()
            // computed attributes of the levels above are not repeated in every row
            .filter(|a| {
                a.level == self.level
                    || (self.level == Level::Study && a.level == Level::Patient)
                    || (a.level < self.level && matches!(a.source, Source::Stored(_)))
            })
            .collect()
    }

    pub(crate) fn needs_metadata(&self) -> bool {
        if self.level == Level::Patient {
            return false;
        }
        match &self.include {
            Include::Defaults => false,
            Include::All => self.level == Level::Instance,
            Include::Tags(tags) => {
                let columns = self.columns();
                tags.iter()
                    .any(|t| attributes::by_tag(*t).is_none_or(|a| !columns.contains(&a)))
            }
        }
    }

    /// Runs the query and renders DICOM JSON. `retrieve_base` is the WADO-RS root used for
    /// Retrieve URL (0008,1190), when there is one.
    pub async fn run(
        &self,
        index: &dyn Index,
        retrieve_base: Option<&str>,
    ) -> Result<QueryResult, QueryError> {
        let mut rows = index.query_rows(self).await?;
        let truncated = rows.len() > self.limit;
        rows.truncate(self.limit);
        let columns = self.columns();
        let with_metadata = self.needs_metadata();
        let datasets = rows
            .into_iter()
            .map(|row| self.render_row(&columns, row, with_metadata, retrieve_base))
            .collect();
        Ok(QueryResult {
            datasets,
            truncated,
        })
    }

    fn render_row(
        &self,
        columns: &[&'static Attribute],
        row: Vec<SqlValue>,
        with_metadata: bool,
        retrieve_base: Option<&str>,
    ) -> Value {
        let mut out: BTreeMap<u32, Value> = BTreeMap::new();
        let retrieve_base = retrieve_base.filter(|_| self.level != Level::Patient);
        let mut values = row.into_iter();
        let uid = |out: &BTreeMap<u32, Value>, tag: u32| -> Option<String> {
            out.get(&tag)?
                .get("Value")?
                .get(0)?
                .as_str()
                .map(str::to_string)
        };
        for attribute in columns {
            let value = values.next().unwrap_or(SqlValue::Null);
            out.insert(attribute.tag, json_attribute(attribute.vr, value));
        }
        let metadata: Option<Value> = if with_metadata {
            values
                .next()
                .and_then(|v| v.into_bytes())
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        if let Some(Value::Object(md)) = &metadata {
            match &self.include {
                Include::All => {
                    for (key, value) in md {
                        if let Ok(tag) = u32::from_str_radix(key, 16) {
                            out.entry(tag).or_insert_with(|| value.clone());
                        }
                    }
                }
                Include::Tags(tags) => {
                    for tag in tags {
                        if let Some(value) = md.get(&format!("{tag:08X}")) {
                            out.entry(*tag).or_insert_with(|| value.clone());
                        }
                    }
                }
                Include::Defaults => {}
            }
        }
        // Specific Character Set: DICOM JSON is UTF-8 (PS3.18 F.2).
        out.insert(0x0008_0005, json!({"vr": "CS", "Value": ["ISO_IR 192"]}));
        out.insert(0x0008_0056, json!({"vr": "CS", "Value": ["ONLINE"]}));
        if let Some(base) = retrieve_base {
            let study = uid(&out, 0x0020_000D).unwrap_or_default();
            let url = match self.level {
                Level::Patient | Level::Study => format!("{base}/studies/{study}"),
                Level::Series => format!(
                    "{base}/studies/{study}/series/{}",
                    uid(&out, 0x0020_000E).unwrap_or_default()
                ),
                Level::Instance => format!(
                    "{base}/studies/{study}/series/{}/instances/{}",
                    uid(&out, 0x0020_000E).unwrap_or_default(),
                    uid(&out, 0x0008_0018).unwrap_or_default()
                ),
            };
            out.insert(0x0008_1190, json!({"vr": "UR", "Value": [url]}));
        }
        let mut map = Map::new();
        for (tag, value) in out {
            map.insert(format!("{tag:08X}"), value);
        }
        Value::Object(map)
    }
}

/// One attribute in DICOM JSON (PS3.18 F.2): empty values have no "Value"; PN values are
/// objects; IS/US values are numbers; multi-valued strings are split at backslashes.
fn json_attribute(vr: &str, value: SqlValue) -> Value {
    let values: Vec<Value> = match (vr, value) {
        (_, SqlValue::Null) => vec![],
        ("IS" | "US", SqlValue::Int(i)) => vec![json!(i)],
        ("IS" | "US", SqlValue::Text(t)) => t
            .trim()
            .parse::<i64>()
            .map(|i| vec![json!(i)])
            .unwrap_or_default(),
        ("PN", SqlValue::Text(t)) if !t.is_empty() => t
            .split('\\')
            .map(|name| json!({ "Alphabetic": name }))
            .collect(),
        (_, SqlValue::Text(t)) if !t.is_empty() => t.split('\\').map(|s| json!(s)).collect(),
        (_, SqlValue::Int(i)) => vec![json!(i.to_string())],
        _ => vec![],
    };
    if values.is_empty() {
        json!({ "vr": vr })
    } else {
        json!({ "vr": vr, "Value": values })
    }
}

/// The matches of a query as typed values, for C-FIND, which answers with DICOM objects rather
/// than DICOM JSON.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The attributes of each row, in order: those asked for that the index holds at this level.
    pub columns: Vec<&'static Attribute>,
    pub rows: Vec<Vec<SqlValue>>,
    /// Whether more matches exist beyond `limit`.
    pub truncated: bool,
}

impl Query {
    /// Runs the query returning only the indexed attributes among `tags`: nothing else is
    /// selected, so computed attributes (counts, modalities) are evaluated only when asked for.
    /// `tags` must name at least one attribute of this level or above (C-FIND always asks for
    /// its unique keys).
    pub async fn rows(&self, index: &dyn Index, tags: &[u32]) -> Result<Rows, QueryError> {
        let columns: Vec<&'static Attribute> = self
            .columns()
            .into_iter()
            .filter(|a| tags.contains(&a.tag))
            .collect();
        let mut rows = index.query_rows_selecting(self, &columns, false).await?;
        let truncated = rows.len() > self.limit;
        rows.truncate(self.limit);
        Ok(Rows {
            columns,
            rows,
            truncated,
        })
    }
}
