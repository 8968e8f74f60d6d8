//! The indexed attributes, declared once.
//!
//! `declare_indexed!` below is the single list of the attributes the index stores in columns.
//! Everything else follows from it: the [`InstanceRecord`] fields, the columns of the
//! `patients`, `studies`, `series` and `instances` tables (their DDL, see
//! [`super::schema`]), the INSERT statements and their positional parameters on both backends,
//! the parser that fills a record from a DICOM object ([`InstanceRecord::read_attributes`]),
//! and the QIDO-RS/C-FIND attribute table (`crate::query::attributes`).
//!
//! Adding an attribute: one line in the list, with `since` set to a new migration version, and
//! that migration (an entry in [`super::schema::MIGRATIONS`], whose `ALTER TABLE` statements are
//! generated from the declaration).

use super::SqlValue;

/// Query/retrieve levels (PS3.4 C.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Instance,
}

impl Level {
    /// The table alias the index's SQL uses for this level's rows. Patient attributes are
    /// copied into every study row, and the patients table is aliased the same way at the
    /// patient level, so one alias serves both.
    pub const fn alias(self) -> &'static str {
        match self {
            Level::Patient | Level::Study => "st",
            Level::Series => "se",
            Level::Instance => "i",
        }
    }
}

/// How an attribute is stored and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, matched as stored (UIDs, codes, dates, descriptions).
    Text,
    /// A Person Name, matched case-insensitively: against `<column>_norm` (upper-cased at
    /// ingest) when `normalized`, else against `UPPER(<column>)`.
    PersonName { normalized: bool },
    /// An integer (IS, US), NULL when absent.
    Integer,
}

/// One indexed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    pub tag: u32,
    pub vr: &'static str,
    pub level: Level,
    /// Column in the level's table (patient attributes: in `patients` and in `studies`).
    pub column: &'static str,
    /// The level's unique key (a UNIQUE column).
    pub unique: bool,
    pub kind: Kind,
    /// Whether QIDO-RS and C-FIND can match and return it (false: stored for the index's own
    /// use, such as the patient key's issuer or the stored transfer syntax).
    pub queryable: bool,
    /// The schema migration that created its column.
    pub since: i64,
}

impl Declared {
    /// The DICOM keyword (PS3.6), from the standard dictionary.
    pub fn keyword(&self) -> &'static str {
        use dicom_core::dictionary::DataDictionary;
        let t = dicom_core::Tag((self.tag >> 16) as u16, (self.tag & 0xFFFF) as u16);
        dicom_dictionary_std::StandardDataDictionary
            .by_tag(t)
            .map(|e| e.alias)
            .unwrap_or("")
    }

    /// The column that matching compares with (PN: its upper-cased form).
    pub fn match_column(&self) -> String {
        let alias = self.level.alias();
        match self.kind {
            Kind::PersonName { normalized: true } => format!("{alias}.{}_norm", self.column),
            Kind::PersonName { normalized: false } => format!("UPPER({alias}.{})", self.column),
            _ => format!("{alias}.{}", self.column),
        }
    }

    /// The column as selected, qualified by the level's alias.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.level.alias(), self.column)
    }

    /// Its column definitions (PN with normalisation: the value and its upper-cased form).
    pub fn column_definitions(&self) -> Vec<String> {
        match self.kind {
            Kind::Text | Kind::PersonName { normalized: false } => {
                let unique = if self.unique { " UNIQUE" } else { "" };
                vec![format!("{} TEXT NOT NULL{unique}", self.column)]
            }
            Kind::PersonName { normalized: true } => vec![
                format!("{} TEXT NOT NULL", self.column),
                format!("{}_norm TEXT NOT NULL", self.column),
            ],
            Kind::Integer => vec![format!("{} INTEGER", self.column)],
        }
    }

    /// Column names written by an INSERT, in [`Declared::column_definitions`] order.
    pub fn column_names(&self) -> Vec<String> {
        match self.kind {
            Kind::PersonName { normalized: true } => {
                vec![self.column.to_string(), format!("{}_norm", self.column)]
            }
            _ => vec![self.column.to_string()],
        }
    }
}

/// Where [`InstanceRecord::read_attributes`] reads values from (the parsed data set).
pub trait AttributeSource {
    /// The attribute's value as text, without trailing padding; empty when absent.
    fn text(&self, tag: u32) -> String;
    /// The attribute's value as an integer; None when absent, empty or not a number.
    fn int(&self, tag: u32) -> Option<i32>;
}

/// A record field type that an attribute of some [`Kind`] is read into and bound from.
pub trait AttributeValue: Sized {
    fn read(source: &dyn AttributeSource, tag: u32) -> Self;
    fn to_sql(&self) -> SqlValue;
}

impl AttributeValue for String {
    fn read(source: &dyn AttributeSource, tag: u32) -> Self {
        source.text(tag)
    }
    fn to_sql(&self) -> SqlValue {
        SqlValue::Text(self.clone())
    }
}

impl AttributeValue for Option<i32> {
    fn read(source: &dyn AttributeSource, tag: u32) -> Self {
        source.int(tag)
    }
    fn to_sql(&self) -> SqlValue {
        match self {
            Some(v) => SqlValue::Int(*v as i64),
            None => SqlValue::Null,
        }
    }
}

const fn tag(t: dicom_core::Tag) -> u32 {
    ((t.0 as u32) << 16) | t.1 as u32
}

macro_rules! field_type {
    (Text) => { String };
    (PersonName { $($x:tt)* }) => { String };
    (Integer) => { Option<i32> };
}

macro_rules! is_unique {
    () => {
        false
    };
    (unique) => {
        true
    };
}

macro_rules! declare_indexed {
    ($(
        $level:ident $field:ident : $tag:ident $vr:literal $kind:ident $({ $($kind_args:tt)* })?
            column $column:literal $($unique:ident)?, queryable $queryable:literal, since $since:literal;
    )*) => {
        /// Everything ingest knows about an instance, written in one transaction: the declared
        /// attributes, then where and how the object is stored.
        #[derive(Debug, Clone, Default)]
        pub struct InstanceRecord {
            $( pub $field: field_type!($kind $({ $($kind_args)* })?), )*
            // storage
            pub object_key: String,
            pub size_bytes: i64,
            pub sha256: String,
            /// The calling AE title of a DIMSE sender (empty for HTTP).
            pub source_ae: String,
            /// Stored by an authenticated AI worker (see `crate::ingest::Origin`).
            pub ai_output: bool,
            /// DICOM JSON (PS3.18 Annex F) of everything but bulk data, which is referenced by
            /// `BulkDataURI`s relative to the instance's URL.
            pub metadata_json: Vec<u8>,
            /// JSON array, one entry per frame, each a list of `[offset, length]` byte ranges in
            /// the stored object (several for a frame split into fragments). Empty when not
            /// known.
            pub frames_json: String,
            /// The TID 1500 measurements of an SR, indexed with it (`super::measurements`).
            pub measurements: Vec<super::measurements::MeasurementRow>,
        }

        /// The indexed attributes, in schema order (the order of their columns).
        pub const DECLARED: &[Declared] = &[$(
            Declared {
                tag: tag(dicom_dictionary_std::tags::$tag),
                vr: $vr,
                level: Level::$level,
                column: $column,
                unique: is_unique!($($unique)?),
                kind: Kind::$kind $({ $($kind_args)* })?,
                queryable: $queryable,
                since: $since,
            },
        )*];

        impl InstanceRecord {
            /// The declared attributes' values, in [`DECLARED`] order.
            pub fn attribute_values(&self) -> Vec<SqlValue> {
                vec![$( AttributeValue::to_sql(&self.$field), )*]
            }

            /// Fills the declared attributes from a data set.
            pub fn read_attributes(&mut self, source: &dyn AttributeSource) {
                $( self.$field = AttributeValue::read(source, tag(dicom_dictionary_std::tags::$tag)); )*
            }
        }
    };
}

// level field: tag VR kind, column, queryable, since (the migration that created the column)
declare_indexed! {
    Patient patient_id: PATIENT_ID "LO" Text column "patient_id", queryable true, since 1;
    Patient issuer_of_patient_id: ISSUER_OF_PATIENT_ID "LO" Text
        column "issuer_of_patient_id", queryable false, since 1;
    Patient patient_name: PATIENT_NAME "PN" PersonName { normalized: true }
        column "patient_name", queryable true, since 1;
    Patient patient_birth_date: PATIENT_BIRTH_DATE "DA" Text
        column "patient_birth_date", queryable true, since 1;
    Patient patient_sex: PATIENT_SEX "CS" Text column "patient_sex", queryable true, since 1;

    Study study_instance_uid: STUDY_INSTANCE_UID "UI" Text
        column "study_instance_uid" unique, queryable true, since 1;
    Study study_date: STUDY_DATE "DA" Text column "study_date", queryable true, since 1;
    Study study_time: STUDY_TIME "TM" Text column "study_time", queryable true, since 1;
    Study accession_number: ACCESSION_NUMBER "SH" Text
        column "accession_number", queryable true, since 1;
    Study referring_physician_name: REFERRING_PHYSICIAN_NAME "PN" PersonName { normalized: false }
        column "referring_physician_name", queryable true, since 1;
    Study study_description: STUDY_DESCRIPTION "LO" Text
        column "study_description", queryable true, since 1;
    Study study_id: STUDY_ID "SH" Text column "study_id", queryable true, since 1;

    Series series_instance_uid: SERIES_INSTANCE_UID "UI" Text
        column "series_instance_uid" unique, queryable true, since 1;
    Series modality: MODALITY "CS" Text column "modality", queryable true, since 1;
    Series series_number: SERIES_NUMBER "IS" Integer
        column "series_number", queryable true, since 1;
    Series series_description: SERIES_DESCRIPTION "LO" Text
        column "series_description", queryable true, since 1;
    Series series_date: SERIES_DATE "DA" Text column "series_date", queryable true, since 1;
    Series series_time: SERIES_TIME "TM" Text column "series_time", queryable true, since 1;
    Series body_part_examined: BODY_PART_EXAMINED "CS" Text
        column "body_part_examined", queryable true, since 1;

    Instance sop_instance_uid: SOP_INSTANCE_UID "UI" Text
        column "sop_instance_uid" unique, queryable true, since 1;
    Instance sop_class_uid: SOP_CLASS_UID "UI" Text
        column "sop_class_uid", queryable true, since 1;
    Instance instance_number: INSTANCE_NUMBER "IS" Integer
        column "instance_number", queryable true, since 1;
    // from the file meta group, which ingest sets after reading the data set
    Instance transfer_syntax_uid: TRANSFER_SYNTAX_UID "UI" Text
        column "transfer_syntax_uid", queryable false, since 1;
    Instance rows: ROWS "US" Integer column "rows_", queryable true, since 1;
    Instance columns: COLUMNS "US" Integer column "columns_", queryable true, since 1;
    Instance number_of_frames: NUMBER_OF_FRAMES "IS" Integer
        column "number_of_frames", queryable true, since 1;
    Instance bits_allocated: BITS_ALLOCATED "US" Integer
        column "bits_allocated", queryable true, since 1;
}

/// The declared attributes of one level, in schema order.
pub fn of_level(level: Level) -> impl Iterator<Item = (usize, &'static Declared)> {
    DECLARED
        .iter()
        .enumerate()
        .filter(move |(_, d)| d.level == level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_are_the_standard_ones() {
        let k: Vec<&str> = DECLARED.iter().map(Declared::keyword).collect();
        assert!(k.contains(&"PatientName"));
        assert!(k.contains(&"Rows"));
        assert!(k.contains(&"NumberOfFrames"));
        assert_eq!(k.len(), InstanceRecord::default().attribute_values().len());
    }
}
