//! The Docker deployment (docker/), checked statically: Docker cannot run on these machines.
//! tests/peers/compose_check.py parses docker/compose.yaml with PyYAML and checks it against
//! the real programs: the options and PACS_* variables of `pacs serve --help` and
//! `pacs-ai-worker --help` of the binaries built here, the files the repository holds, the
//! ports the settings give. The checker is shown to fail on each kind of mistake, on mutated
//! copies of the file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

/// `PROGRAM ARGS --help`, run with no PACS_* variable set (their values would show in the help).
fn help_of(program: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(program);
    cmd.args(args).arg("--help");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PACS_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(out.status.success(), "{} --help failed", program.display());
    String::from_utf8(out.stdout).unwrap()
}

struct Helps {
    _dir: tempfile::TempDir,
    node: PathBuf,
    worker: PathBuf,
}

fn helps() -> Helps {
    let dir = tempfile::tempdir().unwrap();
    let pacs = Path::new(env!("CARGO_BIN_EXE_pacs"));
    let worker_bin = pacs.with_file_name("pacs-ai-worker");
    assert!(
        worker_bin.is_file(),
        "{} is missing: run `cargo build -p pacs-ai-worker` (cargo test --workspace builds it)",
        worker_bin.display()
    );
    let node = dir.path().join("pacs-serve.help");
    let worker = dir.path().join("pacs-ai-worker.help");
    std::fs::write(&node, help_of(pacs, &["serve"])).unwrap();
    std::fs::write(&worker, help_of(&worker_bin, &[])).unwrap();
    Helps {
        _dir: dir,
        node,
        worker,
    }
}

/// Runs the checker on `compose`: (success, what it printed).
fn check(compose: &Path, helps: &Helps) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/compose_check.py");
    let out = Command::new(crate::support::python())
        .arg(script)
        .arg(compose)
        .arg("--base")
        .arg(docker_dir())
        .arg("--help-of")
        .arg(format!("pacs={}", helps.node.display()))
        .arg("--help-of")
        .arg(format!("pacs-ai-worker={}", helps.worker.display()))
        .output()
        .expect("run python3");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("Traceback"),
        "the checker crashed:\n{printed}"
    );
    (out.status.success(), printed)
}

#[test]
fn compose_file_names_only_what_exists() {
    let helps = helps();
    let (ok, printed) = check(&docker_dir().join("compose.yaml"), &helps);
    assert!(ok, "docker/compose.yaml:\n{printed}");
    // every service ran through the checks, the four pacs ones against their programs
    assert!(
        printed.contains("ok: 9 services, 4 running pacs programs"),
        "{printed}"
    );
}

#[test]
fn compose_check_fails_on_each_kind_of_mistake() {
    let helps = helps();
    let original = std::fs::read_to_string(docker_dir().join("compose.yaml")).unwrap();
    // (what is changed, into what, what the checker must say)
    let mutations = [
        (
            "PACS_LOG_FORMAT: json",
            "PACS_LOG_FORMATS: json",
            "PACS_LOG_FORMATS is not a variable of pacs",
        ),
        (
            r#""--worker-id", "worker-1""#,
            r#""--worker-name", "worker-1""#,
            "pacs-ai-worker has no option --worker-name",
        ),
        (
            r#"["serve", "--aet", "PACS_B"]"#,
            r#"["serve", "--ae-title", "PACS_B"]"#,
            "pacs has no option --ae-title",
        ),
        (
            "PACS_AI_NODE: http://node-b:8080",
            "PACS_AI_NODES: http://node-b:8080",
            "PACS_AI_NODES is not a variable of pacs-ai-worker",
        ),
        (
            "- node-b-data:/var/lib/pacs",
            "- node-c-data:/var/lib/pacs",
            "volume node-c-data is not declared",
        ),
        (
            "./nginx.conf:/etc/nginx",
            "./nginx-missing.conf:/etc/nginx",
            "mounts ./nginx-missing.conf, which does not exist",
        ),
        (
            "x-worker-build: &worker-build\n  context: ..\n  dockerfile: docker/Dockerfile.worker",
            "x-worker-build: &worker-build\n  context: ..\n  dockerfile: docker/Dockerfile.wrker",
            "Dockerfile docker/Dockerfile.wrker does not exist",
        ),
        (
            r#""11113:11112""#,
            r#""11113:11114""#,
            "publishes container port 11114",
        ),
        (
            r#"PACS_HTTP_PORT: "8080""#,
            r#"PACS_HTTP_PORT: "8081""#,
            "nginx proxies to node-a:8080, but node-a listens on",
        ),
        (
            "PACS_TRUSTED_PROXIES: 172.30.0.10",
            "PACS_TRUSTED_PROXIES: 172.30.0.99",
            "no service has the address 172.30.0.99",
        ),
        (
            "      retries: 20\n    networks: [pacs]\n\n  minio:",
            "      retries: 20\n    networks: [pacs, storage]\n\n  minio:",
            "network storage is not declared",
        ),
        (
            "      node-b:\n        condition: service_healthy\n      ohif:",
            "      node-c:\n        condition: service_healthy\n      ohif:",
            "depends on node-c, which is not a service",
        ),
        (
            "PACS_SERIES_QUIET_SECS: \"30\"",
            "PACS_SERIES_QUIET_SECS: ${QUIET_SECS:-30}",
            "${QUIET_SECS} is not in env.example",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (from, to, expected) in mutations {
        assert_eq!(
            original.matches(from).count(),
            1,
            "the mutation's anchor {from:?} is not once in docker/compose.yaml"
        );
        let mutated = dir.path().join("compose.yaml");
        std::fs::write(&mutated, original.replacen(from, to, 1)).unwrap();
        let (ok, printed) = check(&mutated, &helps);
        assert!(!ok, "{to:?} passed:\n{printed}");
        assert!(
            printed.contains(expected),
            "{to:?}: expected {expected:?} in:\n{printed}"
        );
    }
    // not YAML at all
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "services: [unclosed").unwrap();
    let (ok, _) = Command::new(crate::support::python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/compose_check.py"
        ))
        .arg(&broken)
        .args(["--base", "."])
        .output()
        .map(|o| (o.status.success(), ()))
        .unwrap();
    assert!(!ok);
}
