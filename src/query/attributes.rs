//! The attributes the index can match and return, per query level, and where each lives.

/// Query/retrieve levels (PS3.4 C.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Instance,
}

/// Where an attribute's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A column; matching uses the same column.
    Column(&'static str),
    /// A Person Name: returned from the first column, matched case-insensitively against the
    /// second (upper-cased at ingest, or `UPPER()` of the first when the same).
    PersonName(&'static str, &'static str),
    /// An integer column (IS).
    Integer(&'static str),
    /// Modalities in Study: the distinct modalities of the study's series.
    ModalitiesInStudy,
    NumberOfStudyRelatedSeries,
    NumberOfStudyRelatedInstances,
    NumberOfSeriesRelatedInstances,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub tag: u32,
    pub keyword: &'static str,
    pub vr: &'static str,
    pub level: Level,
    pub source: Source,
}

const fn attr(
    tag: u32,
    keyword: &'static str,
    vr: &'static str,
    level: Level,
    source: Source,
) -> Attribute {
    Attribute {
        tag,
        keyword,
        vr,
        level,
        source,
    }
}

use Level::*;
use Source::*;

/// Every attribute the index holds, in tag order.
pub const INDEXED: &[Attribute] = &[
    attr(
        0x0008_0016,
        "SOPClassUID",
        "UI",
        Instance,
        Column("i.sop_class_uid"),
    ),
    attr(
        0x0008_0018,
        "SOPInstanceUID",
        "UI",
        Instance,
        Column("i.sop_instance_uid"),
    ),
    attr(
        0x0008_0020,
        "StudyDate",
        "DA",
        Study,
        Column("st.study_date"),
    ),
    attr(
        0x0008_0021,
        "SeriesDate",
        "DA",
        Series,
        Column("se.series_date"),
    ),
    attr(
        0x0008_0030,
        "StudyTime",
        "TM",
        Study,
        Column("st.study_time"),
    ),
    attr(
        0x0008_0031,
        "SeriesTime",
        "TM",
        Series,
        Column("se.series_time"),
    ),
    attr(
        0x0008_0050,
        "AccessionNumber",
        "SH",
        Study,
        Column("st.accession_number"),
    ),
    attr(0x0008_0060, "Modality", "CS", Series, Column("se.modality")),
    attr(
        0x0008_0061,
        "ModalitiesInStudy",
        "CS",
        Study,
        ModalitiesInStudy,
    ),
    attr(
        0x0008_0090,
        "ReferringPhysicianName",
        "PN",
        Study,
        PersonName("st.referring_physician_name", "st.referring_physician_name"),
    ),
    attr(
        0x0008_1030,
        "StudyDescription",
        "LO",
        Study,
        Column("st.study_description"),
    ),
    attr(
        0x0008_103E,
        "SeriesDescription",
        "LO",
        Series,
        Column("se.series_description"),
    ),
    attr(
        0x0010_0010,
        "PatientName",
        "PN",
        Patient,
        PersonName("st.patient_name", "st.patient_name_norm"),
    ),
    attr(
        0x0010_0020,
        "PatientID",
        "LO",
        Patient,
        Column("st.patient_id"),
    ),
    attr(
        0x0010_0030,
        "PatientBirthDate",
        "DA",
        Patient,
        Column("st.patient_birth_date"),
    ),
    attr(
        0x0010_0040,
        "PatientSex",
        "CS",
        Patient,
        Column("st.patient_sex"),
    ),
    attr(
        0x0018_0015,
        "BodyPartExamined",
        "CS",
        Series,
        Column("se.body_part_examined"),
    ),
    attr(
        0x0020_000D,
        "StudyInstanceUID",
        "UI",
        Study,
        Column("st.study_instance_uid"),
    ),
    attr(
        0x0020_000E,
        "SeriesInstanceUID",
        "UI",
        Series,
        Column("se.series_instance_uid"),
    ),
    attr(0x0020_0010, "StudyID", "SH", Study, Column("st.study_id")),
    attr(
        0x0020_0011,
        "SeriesNumber",
        "IS",
        Series,
        Integer("se.series_number"),
    ),
    attr(
        0x0020_0013,
        "InstanceNumber",
        "IS",
        Instance,
        Integer("i.instance_number"),
    ),
    attr(
        0x0020_1206,
        "NumberOfStudyRelatedSeries",
        "IS",
        Study,
        NumberOfStudyRelatedSeries,
    ),
    attr(
        0x0020_1208,
        "NumberOfStudyRelatedInstances",
        "IS",
        Study,
        NumberOfStudyRelatedInstances,
    ),
    attr(
        0x0020_1209,
        "NumberOfSeriesRelatedInstances",
        "IS",
        Series,
        NumberOfSeriesRelatedInstances,
    ),
    attr(
        0x0028_0008,
        "NumberOfFrames",
        "IS",
        Instance,
        Integer("i.number_of_frames"),
    ),
    attr(0x0028_0010, "Rows", "US", Instance, Integer("i.rows_")),
    attr(
        0x0028_0011,
        "Columns",
        "US",
        Instance,
        Integer("i.columns_"),
    ),
    attr(
        0x0028_0100,
        "BitsAllocated",
        "US",
        Instance,
        Integer("i.bits_allocated"),
    ),
];

impl Attribute {
    /// Whether the attribute can be a matching key (computed ones cannot).
    pub fn is_matchable(&self) -> bool {
        matches!(
            self.source,
            Source::Column(_)
                | Source::PersonName(..)
                | Source::Integer(_)
                | Source::ModalitiesInStudy
        )
    }
}

pub fn by_tag(tag: u32) -> Option<&'static Attribute> {
    INDEXED.iter().find(|a| a.tag == tag)
}

/// Attributes returned by default at a level (PS3.18 Tables 6.7.1-2, -2a, -2b), beside the
/// ones computed by the query engine (RetrieveURL, InstanceAvailability, SpecificCharacterSet).
/// Patient attributes come with studies.
pub fn returned_by_default(level: Level) -> impl Iterator<Item = &'static Attribute> {
    INDEXED.iter().filter(move |a| match level {
        Patient => a.level == Patient,
        Study => matches!(a.level, Patient | Study),
        Series => a.level == Series,
        Instance => a.level == Instance,
    })
}
