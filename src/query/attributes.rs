//! The attributes the index can match and return, per query level, and where each lives.

use std::sync::LazyLock;

pub use crate::index::attributes::Level;
use crate::index::attributes::{Declared, DECLARED};

/// Where an attribute's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A column of the index ([`crate::index::attributes`] declares them); matching uses it.
    Stored(&'static Declared),
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

use Level::*;

/// Attributes computed by the query engine rather than stored.
const COMPUTED: &[Attribute] = &[
    Attribute {
        tag: 0x0008_0061,
        keyword: "ModalitiesInStudy",
        vr: "CS",
        level: Study,
        source: Source::ModalitiesInStudy,
    },
    Attribute {
        tag: 0x0020_1206,
        keyword: "NumberOfStudyRelatedSeries",
        vr: "IS",
        level: Study,
        source: Source::NumberOfStudyRelatedSeries,
    },
    Attribute {
        tag: 0x0020_1208,
        keyword: "NumberOfStudyRelatedInstances",
        vr: "IS",
        level: Study,
        source: Source::NumberOfStudyRelatedInstances,
    },
    Attribute {
        tag: 0x0020_1209,
        keyword: "NumberOfSeriesRelatedInstances",
        vr: "IS",
        level: Series,
        source: Source::NumberOfSeriesRelatedInstances,
    },
];

/// Every attribute QIDO-RS and C-FIND can match or return, in tag order: the queryable ones
/// the index declares, and the computed ones.
pub static INDEXED: LazyLock<Vec<Attribute>> = LazyLock::new(|| {
    let mut all: Vec<Attribute> = DECLARED
        .iter()
        .filter(|d| d.queryable)
        .map(|d| Attribute {
            tag: d.tag,
            keyword: d.keyword(),
            vr: d.vr,
            level: d.level,
            source: Source::Stored(d),
        })
        .chain(COMPUTED.iter().copied())
        .collect();
    all.sort_by_key(|a| a.tag);
    all
});

impl Attribute {
    /// Whether the attribute can be a matching key (computed ones cannot).
    pub fn is_matchable(&self) -> bool {
        matches!(self.source, Source::Stored(_) | Source::ModalitiesInStudy)
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
