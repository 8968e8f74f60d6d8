//! Which models run on which series.
//!
//! A route names a model and criteria on the series; every criterion given must match (a list
//! matches when any of its values does), and several routes for one model match when any does.
//! Objects the AI wrote (stored by an authenticated AI worker, or Segmentation and SR objects)
//! never match: AI output must not trigger AI work.

use dicom_dictionary_std::uids;
use regex::Regex;
use serde::{Deserialize, Serialize};

/// The SR storage SOP classes share this root (PS3.4 B.5); the dictionary has one constant per
/// class, not one for the family.
const SR_FAMILY_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.88.";

/// SOP classes that are analysis results, never analysed themselves: Segmentation, and the SR
/// family (PS3.4 B.5: 1.2.840.10008.5.1.4.1.1.88.*).
fn is_result_class(sop_class_uid: &str) -> bool {
    sop_class_uid == uids::SEGMENTATION_STORAGE
        || sop_class_uid == uids::LABEL_MAP_SEGMENTATION_STORAGE
        || sop_class_uid.starts_with(SR_FAMILY_PREFIX)
}

/// One routing rule (`[[ai_route]]` in the configuration file, or the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// A disabled route matches nothing (kept to be enabled again) [default: true].
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The model's name (its folder's manifest `name`).
    pub model: String,
    /// Modality (0008,0060) values, e.g. ["CT"].
    #[serde(default)]
    pub modality: Vec<String>,
    /// Body Part Examined (0018,0015) values, compared case-insensitively.
    #[serde(default)]
    pub body_part: Vec<String>,
    /// A regular expression the Series Description must match (use `(?i)` for any case).
    #[serde(default)]
    pub series_description: Option<String>,
    /// SOP Class UIDs; at least one instance of the series must have one.
    #[serde(default)]
    pub sop_class: Vec<String>,
    /// Calling AE titles the series must have come from.
    #[serde(default)]
    pub calling_ae: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for Route {
    fn default() -> Route {
        Route {
            enabled: true,
            model: String::new(),
            modality: Vec::new(),
            body_part: Vec::new(),
            series_description: None,
            sop_class: Vec::new(),
            calling_ae: Vec::new(),
        }
    }
}

/// What routing looks at in a complete series: the index's summary of it.
pub use crate::index::SeriesSummary as SeriesFacts;

/// Whether a series holds AI output, which must never be analysed: some instance was stored by
/// an authenticated AI worker (never told by an AE title, which any DIMSE peer can choose), or
/// it is a result class.
fn is_ai_output(facts: &SeriesFacts) -> bool {
    facts.ai_output || facts.sop_classes.iter().any(|c| is_result_class(c))
}

/// The shipped models' routes, used when none are configured: CT series to the classical CT
/// model; MR series of the brain or head, or described as a T1 brain scan, to deepbrain.
pub fn default_routes() -> Vec<Route> {
    let route = |model: &str| Route {
        model: model.into(),
        ..Default::default()
    };
    vec![
        Route {
            modality: vec!["CT".into()],
            ..route("ct-classical")
        },
        Route {
            modality: vec!["MR".into()],
            body_part: vec!["BRAIN".into(), "HEAD".into()],
            ..route("deepbrain")
        },
        Route {
            modality: vec!["MR".into()],
            series_description: Some(
                r"(?i)(\bt1\b|t1w|mprage|spgr).*(brain|head)|(brain|head).*(\bt1\b|t1w|mprage|spgr)|^\s*(t1\b|t1w|mprage)"
                    .into(),
            ),
            ..route("deepbrain")
        },
    ]
}

/// Routes with their regular expressions compiled.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<(Route, Option<Regex>)>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Result<Router, String> {
        let routes = routes
            .into_iter()
            .map(|r| {
                if r.model.trim().is_empty() {
                    return Err("a route needs a model".to_string());
                }
                let re = match &r.series_description {
                    Some(p) => Some(Regex::new(p).map_err(|e| {
                        format!(
                            "route for {}: invalid series_description regex: {e}",
                            r.model
                        )
                    })?),
                    None => None,
                };
                Ok((r, re))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Router { routes })
    }

    pub fn routes(&self) -> Vec<Route> {
        self.routes.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The models that should run on a series, each once.
    pub fn models_for(&self, facts: &SeriesFacts) -> Vec<String> {
        if is_ai_output(facts) {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for (route, re) in &self.routes {
            if matches(route, re.as_ref(), facts) && !out.contains(&route.model) {
                out.push(route.model.clone());
            }
        }
        out
    }
}

fn matches(route: &Route, re: Option<&Regex>, f: &SeriesFacts) -> bool {
    if !route.enabled {
        return false;
    }
    let any_eq = |list: &[String], value: &str| {
        list.is_empty()
            || list
                .iter()
                .any(|v| v.trim().eq_ignore_ascii_case(value.trim()))
    };
    any_eq(&route.modality, &f.modality)
        && any_eq(&route.body_part, &f.body_part)
        && re.is_none_or(|re| re.is_match(&f.series_description))
        && (route.sop_class.is_empty() || f.sop_classes.iter().any(|c| route.sop_class.contains(c)))
        && (route.calling_ae.is_empty()
            || f.calling_aes.iter().any(|a| route.calling_ae.contains(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(modality: &str, body: &str, desc: &str) -> SeriesFacts {
        SeriesFacts {
            modality: modality.into(),
            body_part: body.into(),
            series_description: desc.into(),
            sop_classes: vec![uids::CT_IMAGE_STORAGE.into()],
            calling_aes: vec!["CT1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn default_routes_send_ct_and_brain_mr() {
        let r = Router::new(default_routes()).unwrap();
        assert_eq!(
            r.models_for(&facts("CT", "CHEST", "Thorax")),
            ["ct-classical"]
        );
        assert_eq!(r.models_for(&facts("MR", "BRAIN", "")), ["deepbrain"]);
        assert_eq!(r.models_for(&facts("MR", "head", "")), ["deepbrain"]);
        assert_eq!(r.models_for(&facts("MR", "", "T1 MPRAGE")), ["deepbrain"]);
        assert_eq!(
            r.models_for(&facts("MR", "", "t1w brain sag")),
            ["deepbrain"]
        );
        assert!(r.models_for(&facts("MR", "KNEE", "PD fat sat")).is_empty());
        assert!(r.models_for(&facts("US", "", "")).is_empty());
    }

    #[test]
    fn ai_output_never_routes() {
        let r = Router::new(default_routes()).unwrap();
        let mut f = facts("CT", "", "");
        f.ai_output = true;
        assert!(r.models_for(&f).is_empty());
        // an AE title proves nothing: a peer calling itself what the AI once was is analysed
        let mut f = facts("CT", "", "");
        f.calling_aes = vec!["PACS-AI".into()];
        assert_eq!(r.models_for(&f), ["ct-classical"]);
        let mut f = facts("CT", "", "");
        f.sop_classes = vec![uids::SEGMENTATION_STORAGE.into()];
        assert!(r.models_for(&f).is_empty());
        f.sop_classes = vec![uids::COMPREHENSIVE3_DSR_STORAGE.into()];
        assert!(r.models_for(&f).is_empty());
    }

    #[test]
    fn every_given_criterion_must_match() {
        let route = Route {
            enabled: true,
            model: "m".into(),
            modality: vec!["CT".into()],
            body_part: vec![],
            series_description: Some("(?i)lung".into()),
            sop_class: vec![],
            calling_ae: vec!["CT1".into()],
        };
        let r = Router::new(vec![route.clone()]).unwrap();
        assert_eq!(r.models_for(&facts("CT", "", "LUNG 1mm")), ["m"]);
        let disabled = Router::new(vec![Route {
            enabled: false,
            ..route
        }])
        .unwrap();
        assert!(disabled.models_for(&facts("CT", "", "LUNG 1mm")).is_empty());
        // absent in a saved or configured route: enabled
        let parsed: Route = serde_json::from_str(r#"{"model": "m"}"#).unwrap();
        assert!(parsed.enabled);
        assert!(r.models_for(&facts("CT", "", "abdomen")).is_empty());
        let mut f = facts("CT", "", "lung");
        f.calling_aes = vec!["OTHER".into()];
        assert!(r.models_for(&f).is_empty());
        assert!(Router::new(vec![Route {
            series_description: Some("(".into()),
            ..Route {
                model: "x".into(),
                ..Default::default()
            }
        }])
        .is_err());
    }
}
