//! The DICOM audit message (PS3.15 A.5.1) of an [`AuditEvent`]: elements in the schema's
//! order, every coded value with its originalText, values that may hold anything (queries,
//! details) in base64.

use base64::Engine;

use super::{AuditEvent, Code};

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // not allowed in XML 1.0 at all
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A value of the schema's `token` type: no leading, trailing or repeated white space.
fn token(s: &str) -> String {
    escape(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn coded(name: &str, c: &Code) -> String {
    format!(
        "<{name} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        token(&c.code),
        token(&c.system),
        token(&c.meaning)
    )
}

/// EventDateTime: UTC, milliseconds (xsd:dateTime).
pub fn date_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// The message, `<?xml ...?>` first.
pub fn message(e: &AuditEvent, source_id: &str) -> String {
    let mut x = String::with_capacity(1024);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AuditMessage>");
    x.push_str(&format!(
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        e.action.letter(),
        date_time(e.time_ms),
        e.outcome.indicator()
    ));
    x.push_str(&coded("EventID", &e.kind.code()));
    if let Some(t) = &e.type_code {
        x.push_str(&coded("EventTypeCode", t));
    }
    if let Some(d) = &e.outcome_description {
        x.push_str(&format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            escape(d)
        ));
    }
    x.push_str("</EventIdentification>");
    for p in &e.participants {
        x.push_str(&format!(
            "<ActiveParticipant UserID=\"{}\"",
            escape(&p.user_id)
        ));
        if let Some(alt) = &p.alternative_user_id {
            x.push_str(&format!(" AlternativeUserID=\"{}\"", escape(alt)));
        }
        if let Some(name) = &p.user_name {
            x.push_str(&format!(" UserName=\"{}\"", escape(name)));
        }
        x.push_str(&format!(" UserIsRequestor=\"{}\"", p.requestor));
        if let Some(a) = p.address.as_deref().filter(|a| !a.is_empty()) {
            x.push_str(&format!(
                " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"{}\"",
                token(a),
                if is_ip(a) { 2 } else { 1 }
            ));
        }
        x.push('>');
        for r in &p.roles {
            x.push_str(&coded("RoleIDCode", r));
        }
        if let Some(m) = &p.media {
            x.push_str("<MediaIdentifier>");
            x.push_str(&coded("MediaType", m));
            x.push_str("</MediaIdentifier>");
        }
        x.push_str("</ActiveParticipant>");
    }
    // 4: application server process
    x.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\"><AuditSourceTypeCode csd-code=\"4\"/></AuditSourceIdentification>",
        token(source_id)
    ));
    if let Some((id, name)) = &e.patient {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">",
            token(if id.is_empty() { "unknown" } else { id })
        ));
        x.push_str(&coded(
            "ParticipantObjectIDTypeCode",
            &Code::rfc3881("2", "Patient Number"),
        ));
        x.push_str(&format!(
            "<ParticipantObjectName>{}</ParticipantObjectName>",
            token(name)
        ));
        x.push_str("</ParticipantObjectIdentification>");
    }
    for s in &e.studies {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">",
            token(&s.uid)
        ));
        x.push_str(&coded(
            "ParticipantObjectIDTypeCode",
            &Code::dcm("110180", "Study Instance UID"),
        ));
        // the schema requires a name or a query: the study's UID names it
        x.push_str(&format!(
            "<ParticipantObjectName>{}</ParticipantObjectName>",
            token(&s.uid)
        ));
        if !s.sop_classes.is_empty() || s.accession.is_some() {
            x.push_str("<ParticipantObjectDescription>");
            if let Some(a) = &s.accession {
                x.push_str(&format!("<Accession Number=\"{}\"/>", token(a)));
            }
            for (class, n) in &s.sop_classes {
                x.push_str(&format!(
                    "<SOPClass UID=\"{}\" NumberOfInstances=\"{n}\"/>",
                    token(class)
                ));
            }
            x.push_str("</ParticipantObjectDescription>");
        }
        x.push_str("</ParticipantObjectIdentification>");
    }
    for o in &e.objects {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"{}\"",
            token(&o.id),
            o.type_code
        ));
        if let Some(role) = o.role {
            x.push_str(&format!(" ParticipantObjectTypeCodeRole=\"{role}\""));
        }
        x.push('>');
        x.push_str(&coded("ParticipantObjectIDTypeCode", &o.id_type));
        match (&o.query, &o.name) {
            (Some(q), _) => x.push_str(&format!(
                "<ParticipantObjectQuery>{}</ParticipantObjectQuery>",
                b64(q)
            )),
            (None, Some(n)) => x.push_str(&format!(
                "<ParticipantObjectName>{}</ParticipantObjectName>",
                token(n)
            )),
            (None, None) => x.push_str(&format!(
                "<ParticipantObjectName>{}</ParticipantObjectName>",
                token(&o.id)
            )),
        }
        for (kind, value) in &o.details {
            x.push_str(&format!(
                "<ParticipantObjectDetail type=\"{}\" value=\"{}\"/>",
                token(kind),
                b64(value)
            ));
        }
        x.push_str("</ParticipantObjectIdentification>");
    }
    x.push_str("</AuditMessage>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::*;

    #[test]
    fn messages_escape_and_encode() {
        let e = AuditEvent::new(EventKind::Query)
            .participant(Participant::user("a\"<b>", Some("192.0.2.1")).requestor())
            .object(ObjectRef::query("1.2.3", b"PatientID=<x>&".to_vec()));
        let x = message(&e, "PACS");
        assert!(x.contains("UserID=\"a&quot;&lt;b&gt;\""), "{x}");
        assert!(x.contains("NetworkAccessPointTypeCode=\"2\""), "{x}");
        assert!(x.contains(&b64(b"PatientID=<x>&")), "{x}");
        assert!(x.contains("csd-code=\"110112\""), "{x}");
    }

    #[test]
    fn date_times_are_utc_with_milliseconds() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(date_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
