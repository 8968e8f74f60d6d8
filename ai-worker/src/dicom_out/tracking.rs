//! Tracking identifiers of the AI's findings (PS3.16 TID 1500: Tracking Identifier (DCM, 112039)
//! and Tracking Unique Identifier (DCM, 112040); the Segmentation's Tracking ID and Tracking UID,
//! PS3.3 C.8.20.4). They are the same for a (patient, model, segment) in every study, so that
//! the same organ or lesion can be followed across studies; a new UID per object would link
//! nothing.

use sha2::{Digest, Sha256};

/// The Tracking Unique Identifier of `segment_label` found by `model` in a patient: "2.25."
/// followed by the first 16 bytes, as a big-endian unsigned integer, of the SHA-256 of
/// `pacs-tracking \0 PatientID \0 IssuerOfPatientID \0 model \0 segment label` (UTF-8; the
/// issuer empty when absent). A UID under 2.25 is a UUID-derived integer (PS3.5 B.2); this one
/// fits in 44 characters.
///
/// The node's measurement index and its tests rely on exactly this derivation.
pub fn tracking_uid(
    patient_id: &str,
    issuer_of_patient_id: &str,
    model: &str,
    segment_label: &str,
) -> String {
    let mut hash = Sha256::new();
    for (i, part) in [
        "pacs-tracking",
        patient_id,
        issuer_of_patient_id,
        model,
        segment_label,
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            hash.update([0u8]);
        }
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    format!("2.25.{}", u128::from_be_bytes(first))
}

/// The Tracking Identifier: "<model name> <segment label>".
pub fn tracking_identifier(model: &str, segment_label: &str) -> String {
    format!("{model} {segment_label}")
}

/// What the Tracking Identifier of a finding's long-axis group (TID 1501) starts with: the
/// identifier of Cornerstone's Length tool, followed by `:` and the finding's own identifier.
///
/// OHIF 3.13 restores an SR's measurements into its measurement panel only when it recognises
/// the Cornerstone tool of a group, and for a two-point line it does so by this prefix alone
/// (`@cornerstonejs/adapters`: a Tracking Identifier that starts with the tool's, the way
/// Cornerstone writes its own sub-types); the group's geometry is not enough. The Tracking
/// Unique Identifier is the finding's, the same as its volumetric group's, and the node's
/// measurement index files the group under the part after the prefix (`src/ingest/sr.rs`).
pub const LENGTH_TRACKING_PREFIX: &str = "Cornerstone3DTools@^0.1.0:Length:";

/// The Tracking Identifier of a finding's long-axis group: [`LENGTH_TRACKING_PREFIX`] and the
/// finding's Tracking Identifier.
pub fn length_tracking_identifier(tracking_identifier: &str) -> String {
    format!("{LENGTH_TRACKING_PREFIX}{tracking_identifier}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_inputs_give_the_same_uid() {
        let a = tracking_uid("PAT-1", "", "deepbrain", "Brain");
        assert_eq!(a, tracking_uid("PAT-1", "", "deepbrain", "Brain"));
        assert!(a.starts_with("2.25.") && a.len() <= 64);
        assert!(a[5..].bytes().all(|b| b.is_ascii_digit()) && !a[5..].starts_with('0'));
    }

    #[test]
    fn patients_issuers_models_and_segments_get_their_own_uids() {
        let base = tracking_uid("PAT-1", "", "deepbrain", "Brain");
        for other in [
            tracking_uid("PAT-2", "", "deepbrain", "Brain"),
            tracking_uid("PAT-1", "HOSP-A", "deepbrain", "Brain"),
            tracking_uid("PAT-1", "", "ct-classical", "Brain"),
            tracking_uid("PAT-1", "", "deepbrain", "Lungs"),
            // the separators keep the fields apart
            tracking_uid("PAT-1\0", "", "deepbrain", "Brain"),
            tracking_uid("PAT-", "1", "deepbrain", "Brain"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn uid_is_the_specified_digest() {
        // SHA-256("pacs-tracking\0P\0\0m\0s"), first 16 bytes, computed independently:
        // python3 -c 'import hashlib; print(int.from_bytes(hashlib.sha256(
        //     b"pacs-tracking\0P\0\0m\0s").digest()[:16], "big"))'
        assert_eq!(
            tracking_uid("P", "", "m", "s"),
            "2.25.322419832436769195572966656031748911198"
        );
        assert_eq!(tracking_identifier("deepbrain", "Brain"), "deepbrain Brain");
    }
}
