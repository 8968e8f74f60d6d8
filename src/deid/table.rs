//! PS3.15 Table E.1-1 as data: `table_e1_1.tsv` (generated from the innolitics extraction of
//! the standard, see its header), parsed once, and the one rule that turns a row and the
//! options in force into the action applied.

use std::collections::HashMap;
use std::sync::LazyLock;

use dicom_core::Tag;

use super::Options;

/// The action codes of PS3.15 Table E.1-2, as applied (combined codes resolved, see
/// [`resolve_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Replace with a non-zero length dummy value consistent with the VR.
    D,
    /// Replace with a zero length value.
    Z,
    /// Remove.
    X,
    /// Keep (sequences: keep and de-identify their items).
    K,
    /// Clean: replace with a value of similar meaning without identifying information.
    C,
    /// Replace the UID with a consistent non-identifying one (sequences: keep, and de-identify
    /// the UIDs in their items).
    U,
}

/// One column of options in Table E.1-1, in the order of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionColumn {
    SafePrivate = 0,
    Uids = 1,
    DeviceIdentity = 2,
    InstitutionIdentity = 3,
    PatientCharacteristics = 4,
    FullDates = 5,
    ModifiedDates = 6,
    CleanDescriptors = 7,
    CleanStructuredContent = 8,
    CleanGraphics = 9,
}

const OPTION_COLUMNS: usize = 10;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The tag, and which of its bits must match (`x` digits are zero in the mask).
    pub tag: u32,
    pub mask: u32,
    /// The Basic Profile code as written (`X/Z/D`...).
    pub basic: String,
    /// The code of each option column, if any (K or C).
    pub options: [Option<Action>; OPTION_COLUMNS],
    pub name: String,
}

/// The whole table: exact tags, the rows with `x` digits, and the private-attribute row.
pub struct Table {
    exact: HashMap<u32, Row>,
    masked: Vec<Row>,
    private: Row,
}

const SOURCE: &str = include_str!("table_e1_1.tsv");

/// The table, parsed on first use.
pub static TABLE: LazyLock<Table> =
    LazyLock::new(|| Table::parse(SOURCE).expect("src/deid/table_e1_1.tsv is valid"));

/// How a combined code is applied. The node does not know per IOD whether an attribute is
/// Type 1, 2 or 3, so it applies the code that keeps any IOD valid (PS3.15 E.3: the strictest
/// interpretation that does not break a Type 1 or Type 2 requirement): where D is allowed it is
/// chosen (a Type 1 attribute stays present with a dummy value), else Z (a Type 2 attribute
/// stays present, empty); U* on a sequence keeps it and replaces the UIDs in it.
pub fn resolve_code(code: &str) -> Option<Action> {
    Some(match code {
        "D" | "X/D" | "Z/D" | "X/Z/D" => Action::D,
        "Z" | "X/Z" => Action::Z,
        "X" => Action::X,
        "K" => Action::K,
        "C" => Action::C,
        "U" | "X/Z/U*" => Action::U,
        _ => return None,
    })
}

fn parse_tag(text: &str) -> Result<(u32, u32), String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("bad tag {text}"))?;
    let hex: String = inner.chars().filter(|c| *c != ',').collect();
    if hex.len() != 8 {
        return Err(format!("bad tag {text}"));
    }
    let (mut tag, mut mask) = (0u32, 0u32);
    for c in hex.chars() {
        tag <<= 4;
        mask <<= 4;
        if c == 'x' || c == 'X' {
            continue;
        }
        tag |= c.to_digit(16).ok_or_else(|| format!("bad tag {text}"))?;
        mask |= 0xF;
    }
    Ok((tag, mask))
}

impl Table {
    pub fn parse(source: &str) -> Result<Table, String> {
        let mut exact = HashMap::new();
        let mut masked = Vec::new();
        let mut private = None;
        for (n, line) in source.lines().enumerate() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() != 3 + OPTION_COLUMNS {
                return Err(format!("line {}: {} fields", n + 1, fields.len()));
            }
            let basic = fields[1].to_string();
            if resolve_code(&basic).is_none() {
                return Err(format!("line {}: unknown code {basic}", n + 1));
            }
            let mut options = [None; OPTION_COLUMNS];
            for (i, option) in options.iter_mut().enumerate() {
                let code = fields[2 + i];
                *option = match code {
                    "-" => None,
                    "K" => Some(Action::K),
                    "C" => Some(Action::C),
                    other => return Err(format!("line {}: option code {other}", n + 1)),
                };
            }
            let name = fields[2 + OPTION_COLUMNS].to_string();
            if fields[0] == "(gggg,eeee)odd" {
                private = Some(Row {
                    tag: 0,
                    mask: 0,
                    basic,
                    options,
                    name,
                });
                continue;
            }
            let (tag, mask) = parse_tag(fields[0]).map_err(|e| format!("line {}: {e}", n + 1))?;
            let row = Row {
                tag,
                mask,
                basic,
                options,
                name,
            };
            if mask == u32::MAX {
                exact.insert(tag, row);
            } else {
                masked.push(row);
            }
        }
        Ok(Table {
            exact,
            masked,
            private: private.ok_or("no private attributes row")?,
        })
    }

    /// The row for a tag: its own, a repeating-group row, or the private row for odd groups.
    pub fn row(&self, tag: Tag) -> Option<&Row> {
        let t = ((tag.0 as u32) << 16) | tag.1 as u32;
        if let Some(row) = self.exact.get(&t) {
            return Some(row);
        }
        if let Some(row) = self.masked.iter().find(|r| t & r.mask == r.tag) {
            return Some(row);
        }
        (tag.0 % 2 == 1).then_some(&self.private)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.masked.len() + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The action for a tag with `options` in force; None when the table has no row (the
    /// attribute is kept). An option's K wins over its C, either over the Basic Profile code.
    pub fn action(&self, tag: Tag, options: &Options) -> Option<Action> {
        let row = self.row(tag)?;
        let mut chosen: Option<Action> = None;
        for (column, enabled) in options.columns() {
            if !enabled {
                continue;
            }
            match (row.options[column as usize], chosen) {
                (Some(Action::K), _) => chosen = Some(Action::K),
                (Some(Action::C), None) => chosen = Some(Action::C),
                _ => {}
            }
        }
        chosen.or_else(|| resolve_code(&row.basic))
    }
}
