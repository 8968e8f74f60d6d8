//! The node's integration tests: one test crate (cargo builds and links the harness once), one
//! module per area, one PostgreSQL cluster per run shared by every test (a database per test).
//!
//! Run all of it with `cargo test --test tests`, one area with `cargo test --test tests
//! dimse_find::`. Test names carry their module path (`dimse_find::patient_root_postgres`).
//!
//! The root Cargo.toml sets `autotests = false`, so a new file under `tests/` runs only once it is
//! declared here; `every_test_file_is_a_module` below fails otherwise.

mod support;

mod ai_jobs;
mod ai_worker;
mod audit;
mod audit_syslog;
mod auth;
mod cluster;
mod console;
mod deid_export;
mod deployment;
mod dicomweb;
mod dicomweb_limits;
mod dimse_bad_input;
mod dimse_find;
mod dimse_retrieve;
mod dimse_store;
mod dimse_tls;
mod faults;
mod index_backends;
mod measurements;
mod metrics;
mod s3_storage;
mod tls;

/// Every `tests/*.rs` file is a module of this crate (with `autotests = false`, cargo would
/// otherwise silently build none of its tests).
#[test]
fn every_test_file_is_a_module() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let declared = include_str!("tests.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("read tests/") {
        let path = entry.expect("tests/ entry").path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let is_rs = path.extension().is_some_and(|e| e == "rs");
        if !is_rs || stem == "tests" {
            continue;
        }
        if !declared.lines().any(|l| l == format!("mod {stem};")) {
            missing.push(format!("tests/{stem}.rs"));
        }
    }
    assert!(
        missing.is_empty(),
        "not declared in tests/tests.rs (add a `mod <name>;` line): {}",
        missing.join(", ")
    );
}
