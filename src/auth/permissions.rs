//! The one permission model of the node: what each role grants, and what every HTTP route and
//! every DIMSE operation needs. Users, API keys, OpenID Connect users and registered AEs all get
//! roles; the same tables answer for each.
//!
//! Extension point (not built): study-level access by label or project would add a
//! [`Need::Permission`] refinement here (a permission on a scope) and a filter on the
//! identity in the archive's read methods, which already receive it.

use pacs_dicomweb::{Need, Permission, Permissions};
use pacs_dimse::Operation;

use Need::Public;
use Permission::*;

/// The built-in roles and their permissions. `ai-worker` is the only role with
/// [`Permission::AiWorker`]: what its holders store is AI output, so `admin` does not have it.
pub const ROLES: &[(&str, &[Permission])] = &[
    ("viewer", &[Read]),
    ("technologist", &[Read, Write]),
    ("radiologist", &[Read, Write, Export, Deidentify]),
    ("admin", &[Read, Write, Export, Admin, Audit, Deidentify]),
    ("ai-worker", &[Read, Write, AiWorker]),
    // a privacy officer: the audit trail, no images
    ("auditor", &[Audit]),
    // may run de-identified exports, never read identified data
    ("researcher", &[Deidentify]),
];

const fn need(p: Permission) -> Need {
    Need::Permission(p)
}

/// Every HTTP route (method, route as the router names it, `{dicomweb}` standing for the
/// DICOMweb root) and what it needs. A route missing here is refused.
pub const HTTP_ROUTES: &[(&str, &str, Need)] = &[
    // health, readiness and metrics: direct callers on this machine, else admin or the
    // metrics token (Need::Operator)
    ("GET", "/healthz", Need::Operator),
    ("GET", "/readyz", Need::Operator),
    ("GET", "/metrics", Need::Operator),
    ("POST", "/api/login", Public),
    // ends the calling local user's login tokens; refuses other callers itself
    ("POST", "/api/logout", Public),
    ("GET", "/api/whoami", Public),
    // the web console (docs/console.md): its files are code, no patient data; each page's
    // shell answers the status the caller earns for it (401, 403) itself; the session turns a
    // credential into the cookie, and ends it
    ("GET", "/ui", Public),
    ("GET", "/ui/", Public),
    ("GET", "/ui/{*path}", Public),
    ("GET", "/ui/assets/{*path}", Public),
    ("GET", "/ui/config.json", Public),
    ("POST", "/ui/session", Public),
    ("DELETE", "/ui/session", Public),
    ("GET", "/api/statistics", need(Read)),
    // a patient's measurements over time, from the SRs' measurements index
    ("GET", "/api/patients/{patient_id}/measurements", need(Read)),
    // DICOMweb (PS3.18): QIDO-RS and WADO-RS read, STOW-RS writes
    ("GET", "{dicomweb}/studies", need(Read)),
    ("POST", "{dicomweb}/studies", need(Write)),
    ("GET", "{dicomweb}/series", need(Read)),
    ("GET", "{dicomweb}/instances", need(Read)),
    ("GET", "{dicomweb}/studies/{study}", need(Read)),
    ("POST", "{dicomweb}/studies/{study}", need(Write)),
    ("GET", "{dicomweb}/studies/{study}/*", need(Read)),
    // the AE registry, sends, AI job administration, users and keys
    ("GET", "/api/aes", need(Admin)),
    // associations refused recently, from the audit trail
    ("GET", "/api/aes/refused", need(Admin)),
    ("POST", "/api/aes", need(Admin)),
    ("GET", "/api/aes/{title}", need(Admin)),
    ("PUT", "/api/aes/{title}", need(Admin)),
    ("DELETE", "/api/aes/{title}", need(Admin)),
    ("POST", "/api/aes/{title}/echo", need(Admin)),
    ("POST", "/api/aes/{title}/send", need(Export)),
    ("GET", "/api/ai/jobs", need(Admin)),
    ("GET", "/api/ai/jobs/{id}", need(Admin)),
    ("POST", "/api/ai/jobs/{id}/retry", need(Admin)),
    ("POST", "/api/ai/jobs/{id}/cancel", need(Admin)),
    ("GET", "/api/ai/routes", need(Admin)),
    ("PUT", "/api/ai/routes", need(Admin)),
    ("GET", "/api/ai/models", need(Admin)),
    // the nodes sharing the index
    ("GET", "/api/nodes", need(Admin)),
    ("GET", "/api/users", need(Admin)),
    ("POST", "/api/users", need(Admin)),
    ("GET", "/api/users/{name}", need(Admin)),
    ("PUT", "/api/users/{name}", need(Admin)),
    ("DELETE", "/api/users/{name}", need(Admin)),
    ("GET", "/api/keys", need(Admin)),
    ("POST", "/api/keys", need(Admin)),
    ("DELETE", "/api/keys/{name}", need(Admin)),
    // the audit trail (PS3.15 A.5)
    ("GET", "/api/audit", need(Audit)),
    ("POST", "/api/audit/verify", need(Audit)),
    // de-identified export (PS3.15 Annex E) and the re-identification table
    ("GET", "/api/exports", need(Deidentify)),
    ("POST", "/api/exports", need(Deidentify)),
    ("GET", "/api/exports/{id}", need(Deidentify)),
    ("DELETE", "/api/exports/{id}", need(Deidentify)),
    ("GET", "/api/exports/{id}/archive", need(Deidentify)),
    ("GET", "/api/reidentification", need(Admin)),
    // the AI workers
    ("POST", "/api/worker/lease", need(AiWorker)),
    ("POST", "/api/worker/jobs/{id}/*", need(AiWorker)),
];

/// Every DIMSE operation and what it needs (C-MOVE and C-GET read: PS3.4 C.4.2, C.4.3).
pub const DIMSE_OPERATIONS: &[(Operation, Need)] = &[
    (Operation::Echo, Public),
    (Operation::Store, need(Write)),
    (Operation::Find, need(Read)),
    (Operation::Move, need(Read)),
    (Operation::Get, need(Read)),
];

/// The role names, in the table's order.
pub fn role_names() -> impl Iterator<Item = &'static str> {
    ROLES.iter().map(|(name, _)| *name)
}

/// The permissions `roles` grant; names that are not roles grant nothing.
pub fn permissions_of<S: AsRef<str>>(roles: &[S]) -> Permissions {
    roles
        .iter()
        .filter_map(|r| ROLES.iter().find(|(name, _)| *name == r.as_ref()))
        .flat_map(|(_, permissions)| permissions.iter().copied())
        .collect()
}

/// Role names from a comma-separated list, checked: every one must be a role.
pub fn parse_roles(list: &str) -> Result<Vec<String>, String> {
    let mut roles: Vec<String> = Vec::new();
    for role in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !role_names().any(|r| r == role) {
            return Err(format!(
                "unknown role {role:?} (roles: {})",
                role_names().collect::<Vec<_>>().join(", ")
            ));
        }
        if !roles.iter().any(|r| r == role) {
            roles.push(role.to_string());
        }
    }
    Ok(roles)
}

/// Whether a table route matches a matched route: segments equal, `{...}` matching any
/// parameter name, a final `*` any rest of one or more segments.
fn route_matches(pattern: &str, route: &str) -> bool {
    let (mut p, mut r) = (pattern.split('/'), route.split('/'));
    loop {
        match (p.next(), r.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) => return true,
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) if a.starts_with('{') && b.starts_with('{') => {}
            _ => return false,
        }
    }
}

/// What `method` on the matched `route` needs, the DICOMweb root being `dicomweb_root`
/// (`/dicom-web`). None: not in the table.
pub fn http_need(dicomweb_root: &str, method: &str, route: &str) -> Option<Need> {
    HTTP_ROUTES.iter().find_map(|(m, pattern, need)| {
        let pattern = pattern.replace("{dicomweb}", dicomweb_root.trim_end_matches('/'));
        (*m == method && route_matches(&pattern, route)).then_some(*need)
    })
}

/// The DIMSE operations `permissions` allow.
pub fn dimse_operations(permissions: Permissions) -> Vec<Operation> {
    DIMSE_OPERATIONS
        .iter()
        .filter(|(_, need)| match need {
            Public => true,
            Need::Permission(p) => permissions.contains(*p),
            Need::Operator => false,
        })
        .map(|(op, _)| *op)
        .collect()
}

/// The operation named as in a registered AE's `allow` list.
pub fn operation_named(name: &str) -> Option<Operation> {
    Some(match name {
        "echo" => Operation::Echo,
        "store" => Operation::Store,
        "find" => Operation::Find,
        "move" => Operation::Move,
        "get" => Operation::Get,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_permissions() {
        assert_eq!(permissions_of(&["viewer"]).names(), "read");
        assert_eq!(permissions_of(&["technologist"]).names(), "read,write");
        assert_eq!(
            permissions_of(&["admin"]).names(),
            "read,write,export,admin,audit,deidentify"
        );
        assert!(!permissions_of(&["admin"]).contains(AiWorker));
        assert_eq!(
            permissions_of(&["viewer", "ai-worker", "nonsense"]).names(),
            "read,write,ai-worker"
        );
        assert!(permissions_of::<&str>(&[]).is_empty());
        assert_eq!(
            parse_roles(" viewer,admin ,viewer").unwrap(),
            ["viewer", "admin"]
        );
        assert!(parse_roles("viewer,root").unwrap_err().contains("root"));
    }

    #[test]
    fn routes_are_found_with_any_root_and_parameter_names() {
        let need = |m, r| http_need("/dicom-web", m, r);
        assert_eq!(need("GET", "/healthz"), Some(Need::Operator));
        assert_eq!(need("GET", "/readyz"), Some(Need::Operator));
        assert_eq!(need("GET", "/metrics"), Some(Need::Operator));
        assert_eq!(need("GET", "/dicom-web/studies"), Some(need_of(Read)));
        assert_eq!(need("POST", "/dicom-web/studies"), Some(need_of(Write)));
        assert_eq!(
            need(
                "GET",
                "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"
            ),
            Some(need_of(Read))
        );
        assert_eq!(need("POST", "/dicom-web/studies/{s}/series"), None);
        assert_eq!(need("DELETE", "/dicom-web/studies/{study}"), None);
        assert_eq!(
            need("POST", "/api/worker/jobs/{id}/complete"),
            Some(need_of(AiWorker))
        );
        assert_eq!(need("POST", "/api/aes/{title}/send"), Some(need_of(Export)));
        assert_eq!(
            http_need("/wado", "GET", "/wado/studies/{study}/metadata"),
            Some(need_of(Read))
        );
        assert_eq!(http_need("/wado", "GET", "/dicom-web/studies"), None);
    }

    fn need_of(p: Permission) -> Need {
        Need::Permission(p)
    }

    #[test]
    fn dimse_operations_follow_permissions() {
        use Operation::*;
        assert_eq!(dimse_operations(Permissions::NONE), [Echo]);
        assert_eq!(
            dimse_operations(permissions_of(&["viewer"])),
            [Echo, Find, Move, Get]
        );
        assert_eq!(
            dimse_operations(permissions_of(&["technologist"])),
            [Echo, Store, Find, Move, Get]
        );
    }
}
