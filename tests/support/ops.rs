//! What the operators' tests share (tests/metrics.rs, tests/deployment.rs): a scrape of
//! `/metrics` parsed by the Python `prometheus_client` parser, and a private PostgreSQL
//! cluster that a test may freeze (SIGSTOP) without touching the one every other test uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::{http_request, python_stdout, Node};

/// One parsed exposition.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// family name → (type, help)
    pub families: BTreeMap<String, (String, String)>,
    /// every sample: its name (with `_total`, `_bucket`, `_count`...), labels, value
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include every pair of `labels`
    /// (0 when there is none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .sum()
    }

    /// Whether a sample named `name` with these labels exists.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The type the exposition declares for a family (the parser names counters without
    /// `_total`).
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.families.get(family).map(|(t, _)| t.as_str())
    }
}

/// Parses an exposition with `prometheus_client.parser` (tests/peers/prometheus_parse.py).
pub fn parse_exposition(text: &str) -> Scrape {
    let file = tempfile::NamedTempFile::new().expect("temporary file");
    std::fs::write(file.path(), text).expect("write the exposition");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/prometheus_parse.py"
    );
    let out = python_stdout([std::ffi::OsStr::new(script), file.path().as_os_str()]);
    let parsed: Value = serde_json::from_slice(&out).expect("JSON from prometheus_parse.py");
    let mut families = BTreeMap::new();
    let mut samples = Vec::new();
    for f in parsed["families"].as_array().expect("families") {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        families.insert(
            name,
            (
                f["type"].as_str().unwrap_or_default().to_string(),
                f["help"].as_str().unwrap_or_default().to_string(),
            ),
        );
        for s in f["samples"].as_array().expect("samples") {
            let labels = s["labels"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            samples.push((
                s["name"].as_str().unwrap_or_default().to_string(),
                labels,
                s["value"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    Scrape {
        families,
        samples,
        text: text.to_string(),
    }
}

/// `GET /metrics` from loopback (no credential needed), parsed.
pub fn scrape(node: &Node) -> Scrape {
    let rsp = http_request(node.http_port(), "GET", "/metrics", &[], &[]);
    assert_eq!(rsp.status, 200, "GET /metrics: {}", rsp.text());
    assert_eq!(
        rsp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&rsp.text())
}

/// A PostgreSQL cluster of its own (not the one shared by the run), deleted when the test
/// process exits; [`PrivatePostgres::freeze`] stops every process of it, as a hung database
/// server would be.
pub struct PrivatePostgres {
    pub url: String,
    dir: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = super::pg_bin_dir().unwrap_or_else(|e| panic!("no PostgreSQL server: {e}"));
        let mut last = String::new();
        for _ in 0..3 {
            match super::try_start_cluster(&bin, None) {
                Ok(server) => {
                    return PrivatePostgres {
                        url: server.admin_url,
                        dir: server.dir.expect("a private cluster has a directory"),
                    }
                }
                Err((e, retry)) => {
                    last = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        panic!("cannot start a private PostgreSQL cluster: {last}");
    }

    /// The postmaster and its children (the backends serving the node's connections).
    fn processes(&self) -> Vec<u32> {
        let pid_file = self.dir.join("data/postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let postmaster: u32 = text.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal(&self, signal: &str) {
        for pid in self.processes() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGSTOP to every process of the cluster: connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT: the cluster goes on where it stopped.
    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // never leave a frozen cluster behind (its watchdog could not stop it)
        self.thaw();
    }
}
