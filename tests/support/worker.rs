//! A real `pacs-ai-worker` process against a node under test (the binary is built by
//! `cargo test --workspace`; run alone, the tests need `cargo build -p pacs-ai-worker` first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Node;

/// The `pacs-ai-worker` binary beside `pacs` (built by `cargo test --workspace`).
pub fn worker_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_pacs")).with_file_name("pacs-ai-worker");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p pacs-ai-worker` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

/// A `pacs-ai-worker` process; killed on drop.
pub struct Worker {
    child: Child,
    pub id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts a worker for `node`, authenticating with `token`, with `extra` arguments.
    pub fn start(
        node: &Node,
        token: &str,
        id: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut cmd = Command::new(worker_binary());
        cmd.args(["--node", &node.base_url(), "--token", token])
            .args(["--worker-id", id, "--poll-ms", "200", "--threads", "1"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pacs-ai-worker");
        Worker {
            child,
            id: id.into(),
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker {} still running after {within:?}:\n{}",
                self.id,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
