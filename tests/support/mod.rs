//! Shared integration-test harness: external peers (DCMTK, Python/pydicom),
//! throwaway PostgreSQL databases, and a running `pacs` node.
//!
//! Mounted once, as `mod support;` in tests/tests.rs (the one integration test crate);
//! test modules import it with `use crate::support;`.
//!
//! Environment knobs:
//! - `DCMTK_BIN`: directory holding the DCMTK tools (default `/usr/bin`).
//! - `PACS_TEST_DATABASE_URL`: an existing PostgreSQL server on which the
//!   user may `CREATE DATABASE`; without it a private cluster is started
//!   on first use, once per run (all tests share the one test process),
//!   and removed when the process ends. Every test gets its own database.
//! - `PACS_TEST_PG_BIN`: directory holding `initdb` and `postgres`.
//!
//! A missing peer (DCMTK, PostgreSQL, pydicom) is a test failure, never a
//! skip.

/// Index/object-store consistency checks (tests/support/archive.rs).
pub mod archive;
pub mod certs;
/// A PostgreSQL cluster, an S3 server and a disk of a test's own to break (tests/faults.rs).
pub mod faults;
pub mod issuer;
/// multipart/related bodies for STOW-RS and WADO-RS (tests/support/multipart.rs).
pub mod multipart;
/// Scrapes of /metrics parsed by prometheus_client, a freezable PostgreSQL (tests/support/ops.rs).
pub mod ops;
/// A hand-driven DIMSE client for malformed traffic (tests/support/raw_client.rs).
pub mod raw_client;
/// A moto S3 server on 127.0.0.1 (tests/support/s3.rs).
pub mod s3;
/// Syslog collectors (rsyslogd, a strict RFC 5425 listener) and an in-memory audit spool.
pub mod syslog;
/// A real `pacs-ai-worker` process (tests/support/worker.rs).
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a node, or the PostgreSQL cluster, may take to become ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Node::terminate` waits after SIGTERM.
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default limit for one run of a DCMTK tool through the wrappers below.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Small process helpers
// ---------------------------------------------------------------------------

/// Looks `name` up on `PATH`, like `command -v`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub(crate) fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Runs `cmd` with stdin closed and stdout/stderr captured; kills it and
/// panics (with what it printed so far) when it outlives `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    try_run_with_timeout(cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// `run_with_timeout`, returning failures to start or finish as `Err`.
pub fn try_run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() <= deadline => std::thread::sleep(Duration::from_millis(10)),
            waited => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out.join().unwrap_or_default();
                let stderr = err.join().unwrap_or_default();
                return Err(format!(
                    "{cmd:?} did not finish within {timeout:?} ({waited:?}); stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 that was free a moment ago. Never returns the
/// same port twice within one test process.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(Default::default);
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed.lock().unwrap().insert(port) {
            return port;
        }
    }
    panic!("free_port: no fresh port after 1000 tries");
}

// ---------------------------------------------------------------------------
// DCMTK
// ---------------------------------------------------------------------------

/// Path of a DCMTK tool (`echoscu`, `storescu`, `findscu`, `movescu`,
/// `getscu`, `storescp`, `dcmdump`, ...), from `$DCMTK_BIN` or `/usr/bin`.
///
/// `PATH` is deliberately not searched: pynetdicom installs look-alike
/// `storescu`/`echoscu`/`findscu` scripts that are not DCMTK. The tool is
/// checked to really be DCMTK (`--version` names dcmtk/OFFIS).
pub fn dcmtk(tool: &str) -> PathBuf {
    static FOUND: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    if let Some(p) = found.lock().unwrap().get(tool) {
        return p.clone();
    }
    let dir = std::env::var_os("DCMTK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"));
    let path = dir.join(tool);
    let install = "install DCMTK with `apt-get install -y dcmtk` (or point DCMTK_BIN at \
                   the directory holding the DCMTK tools)";
    if !is_executable(&path) {
        panic!(
            "DCMTK tool `{tool}` not found at {}: {install}",
            path.display()
        );
    }
    let out = run_with_timeout(
        Command::new(&path).arg("--version"),
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .to_lowercase();
    if !(text.contains("dcmtk") || text.contains("offis")) {
        panic!(
            "{} is not the DCMTK tool (its --version does not mention DCMTK/OFFIS): {install}",
            path.display()
        );
    }
    found.lock().unwrap().insert(tool.to_string(), path.clone());
    path
}

/// A `Command` for a DCMTK tool, with `TCP_NODELAY=1` (Debian's DCMTK
/// otherwise leaves Nagle's algorithm on, which adds ~40 ms per PDU).
pub fn dcmtk_command(tool: &str) -> Command {
    let mut cmd = Command::new(dcmtk(tool));
    cmd.env("TCP_NODELAY", "1");
    cmd
}

/// `echoscu -aet <calling> -aec <node aet> 127.0.0.1 <dimse port>`.
pub fn echoscu(node: &Node, calling_aet: &str) -> Output {
    let mut cmd = dcmtk_command("echoscu");
    cmd.args(["-aet", calling_aet, "-aec", node.aet(), "127.0.0.1"])
        .arg(node.dimse_port().to_string());
    run_with_timeout(&mut cmd, TOOL_TIMEOUT)
}

/// `storescu -aet <calling> -aec <node aet> [args] 127.0.0.1 <port> files...`.
pub fn storescu(node: &Node, calling_aet: &str, args: &[&str], files: &[&Path]) -> Output {
    let mut cmd = dcmtk_command("storescu");
    cmd.args(["-aet", calling_aet, "-aec", node.aet()])
        .args(args)
        .arg("127.0.0.1")
        .arg(node.dimse_port().to_string())
        .args(files);
    run_with_timeout(&mut cmd, TOOL_TIMEOUT)
}

/// A DCMTK `storescp` receiving into a temporary directory; killed on drop.
pub struct StoreScp {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl StoreScp {
    /// `storescp -aet <aet> -od <dir> [args] <free port>`, ready when it accepts TCP.
    pub fn start(aet: &str, args: &[&str]) -> StoreScp {
        let dir = tempfile::Builder::new()
            .prefix("storescp-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let child = dcmtk_command("storescp")
            .args(["-aet", aet, "-od"])
            .arg(dir.path())
            .args(args)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start storescp");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "storescp did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        StoreScp { child, port, dir }
    }

    /// The files received so far, sorted by name.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Python / pydicom
// ---------------------------------------------------------------------------

/// The `python3` on `PATH` (the one `python3 -m pip install -r
/// tests/requirements.txt` installed into).
pub fn python() -> PathBuf {
    which("python3").unwrap_or_else(|| panic!("python3 not found on PATH"))
}

/// `<pydicom package>/data/test_files`, holding pydicom's sample files.
pub fn pydicom_test_files() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = "import os, pydicom; \
                      print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))";
        let out = run_with_timeout(
            Command::new(python()).args(["-c", script]),
            Duration::from_secs(60),
        );
        if !out.status.success() {
            panic!(
                "pydicom is not installed for {}: run `python3 -m pip install -r \
                 tests/requirements.txt`\n{}",
                python().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        assert!(
            dir.is_dir(),
            "pydicom's test files are missing ({}): reinstall with `python3 -m pip install \
             -r tests/requirements.txt`",
            dir.display()
        );
        dir
    })
    .clone()
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// Where test databases are created.
struct PgServer {
    /// URL used for `CREATE DATABASE`.
    admin_url: String,
    /// Present for the private cluster (its temp directory and log).
    dir: Option<PathBuf>,
}

static PG_SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();

/// Runs an async closure on a private single-threaded runtime in its own OS
/// thread, so that it can be called from sync code and from inside a Tokio
/// runtime alike. Panics propagate.
fn block_on_thread<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    });
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Connects with tokio-postgres, driving the connection on a spawned task
/// of the current Tokio runtime.
pub async fn pg_try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Replaces the database name in a `postgres://` URL.
fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after = &rest[authority_end..];
    let query = after.find('?').map(|i| &after[i..]).unwrap_or("");
    format!("{}/{db}{query}", &url[..scheme_end + authority_end])
}

/// A URL to a new, empty PostgreSQL database (unique name, owned by the
/// connecting user). Thread-safe; usable from sync or async code.
///
/// The server is `$PACS_TEST_DATABASE_URL` when set, else a private
/// cluster started once per test process and stopped (and deleted) by a
/// watchdog when the process exits.
pub fn postgres_url() -> String {
    let server = PG_SERVER
        .get_or_init(|| match std::env::var("PACS_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(PgServer {
                admin_url: url,
                dir: None,
            }),
            _ => start_cluster(),
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("no PostgreSQL server for tests: {e}"));

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    let name = format!(
        "pacs_test_{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let admin_url = server.admin_url.clone();
    let create = format!("CREATE DATABASE \"{name}\"");
    let result: Result<(), String> = block_on_thread(move || async move {
        // CREATE DATABASE fails with 55006 while another session uses the
        // template: retry for a while.
        let mut last = String::new();
        for _ in 0..50 {
            let client = match pg_try_connect(&admin_url).await {
                Ok(c) => c,
                Err(e) => {
                    last = format!("connect: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match client.batch_execute(&create).await {
                Ok(()) => return Ok(()),
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(format!("{create}: {e}")),
            }
        }
        Err(last)
    });
    if let Err(e) = result {
        let log = server
            .dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("postgres.log")).ok())
            .unwrap_or_default();
        panic!("cannot create a test database: {e}\npostgres log:\n{log}");
    }
    with_database(&server.admin_url, &name)
}

/// Directory holding `initdb` and `postgres`.
pub(crate) fn pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PACS_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(initdb) = which("initdb") {
        if let Some(dir) = initdb.parent() {
            if is_executable(&dir.join("postgres")) {
                return Ok(dir.to_path_buf());
            }
        }
    }
    // Debian keeps the server binaries off PATH.
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (is_executable(&bin.join("initdb")) && is_executable(&bin.join("postgres")))
                .then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "PostgreSQL server binaries (initdb, postgres) not found on PATH nor under \
         /usr/lib/postgresql/*/bin: install them with `apt-get install -y postgresql`, \
         or set PACS_TEST_DATABASE_URL to a server where the user may create databases"
            .to_string()
    })
}

/// A command that runs as the `postgres` user when we are root (initdb and
/// postgres refuse to run as root).
pub(crate) fn pg_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if is_root() {
        cmd = Command::new(runuser());
        cmd.args(["-u", "postgres", "--"]).arg(program);
    }
    cmd
}

/// `runuser` (util-linux), which may live in an sbin directory off `PATH`.
pub(crate) fn runuser() -> PathBuf {
    which("runuser")
        .or_else(|| {
            ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .map(PathBuf::from)
                .into_iter()
                .find(|p| is_executable(p))
        })
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

fn start_cluster() -> Result<PgServer, String> {
    let started = Instant::now();
    let bin = pg_bin_dir()?;
    let mut last_err = String::new();
    // A port can be taken between free_port() and postgres binding it:
    // retry a few times on that.
    for _ in 0..3 {
        match try_start_cluster(&bin, None) {
            Ok(server) => {
                eprintln!(
                    "support: PostgreSQL test cluster ready in {:.1?} ({})",
                    started.elapsed(),
                    server.admin_url
                );
                return Ok(server);
            }
            Err((e, retry)) => {
                last_err = e;
                if !retry {
                    break;
                }
            }
        }
    }
    Err(last_err)
}

/// A private PostgreSQL cluster with `ssl=on` and this certificate and key (PEM), for the
/// TLS tests: its admin URL (`postgres://postgres@127.0.0.1:PORT/postgres`). Stopped and
/// deleted when the test process exits.
pub fn start_tls_postgres(cert_pem: &str, key_pem: &str) -> String {
    let bin = pg_bin_dir().unwrap_or_else(|e| panic!("no PostgreSQL server for tests: {e}"));
    let mut last = String::new();
    for _ in 0..3 {
        match try_start_cluster(&bin, Some((cert_pem, key_pem))) {
            Ok(server) => return server.admin_url,
            Err((e, retry)) => {
                last = e;
                if !retry {
                    break;
                }
            }
        }
    }
    panic!("cannot start a PostgreSQL cluster with ssl=on: {last}");
}

/// Returns the error and whether retrying may help.
fn try_start_cluster(bin: &Path, tls: Option<(&str, &str)>) -> Result<PgServer, (String, bool)> {
    let fail = |msg: String| (msg, false);
    let dir = tempfile::Builder::new()
        .prefix("pacs-test-pg-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a temp dir: {e}")))?
        .keep();
    if is_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .output()
            .map_err(|e| fail(format!("chown: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(fail(format!(
                "running as root, but cannot hand {} to the `postgres` user (does it \
                 exist? `apt-get install -y postgresql` creates it): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    let data = dir.join("data");
    let log_path = dir.join("postgres.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let out = try_run_with_timeout(
        pg_command(&bin.join("initdb"))
            .current_dir(&dir)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            // Skipping initdb's final sync of the fresh cluster saves
            // 1-2 s and risks nothing for a throwaway cluster; the server
            // itself runs with fsync=on.
            .args(["--no-sync", "--no-instructions"]),
        Duration::from_secs(120),
    )
    .map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        fail(e)
    })?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(fail(format!(
            "initdb failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }

    let mut ssl_args: Vec<String> = Vec::new();
    if let Some((cert, key)) = tls {
        // the key must be the server user's and private (PostgreSQL refuses it otherwise)
        let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert_path, cert).map_err(|e| fail(format!("write cert: {e}")))?;
        std::fs::write(&key_path, key).map_err(|e| fail(format!("write key: {e}")))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("chmod key: {e}")))?;
        if is_root() {
            let _ = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cert_path)
                .arg(&key_path)
                .output();
        }
        ssl_args = vec![
            "-c".into(),
            "ssl=on".into(),
            "-c".into(),
            format!("ssl_cert_file={}", cert_path.display()),
            "-c".into(),
            format!("ssl_key_file={}", key_path.display()),
        ];
    }

    let port = free_port();
    // The watchdog (plain sh) runs postgres in the background, then waits
    // for this test process to disappear; it then stops the postmaster
    // (found through its pid file, as runuser sits in between) with an
    // immediate shutdown (SIGQUIT: a clean shutdown's checkpoint of every
    // test database can take many seconds), and deletes the directory.
    // `exit.status` records an early exit of postgres.
    let script = r#"
parent=$1; dir=$2; shift 2
( "$@" >"$dir/postgres.log" 2>&1; echo "$?" >"$dir/exit.status" ) &
while [ -d "/proc/$parent" ]; do sleep 1; done
pm=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
if [ -n "$pm" ] && kill -QUIT "$pm" 2>/dev/null; then
    i=0
    while kill -0 "$pm" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$pm" 2>/dev/null
fi
wait
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, "pacs-test-pg-watchdog"])
        .arg(std::process::id().to_string())
        .arg(&dir);
    if is_root() {
        cmd.arg(runuser()).args(["-u", "postgres", "--"]);
    }
    cmd.arg(bin.join("postgres"))
        .arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(&dir)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
        .args(["-c", "shared_buffers=32MB", "-c", "max_connections=300"])
        .args(&ssl_args)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Keep terminal signals (Ctrl-C) away: the watchdog cleans up.
        .process_group(0);
    let mut watchdog = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start the postgres watchdog: {e}")))?;
    // Reap the watchdog if it ever ends while we live; never kill it.
    std::thread::spawn(move || {
        let _ = watchdog.wait();
    });

    let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let probe_url = format!("{admin_url}?connect_timeout=2");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let url = probe_url.clone();
        let ready = block_on_thread(move || async move {
            match pg_try_connect(&url).await {
                Ok(client) => client.simple_query("SELECT 1").await.map(|_| ()),
                Err(e) => Err(e),
            }
        });
        if ready.is_ok() {
            return Ok(PgServer {
                admin_url,
                dir: Some(dir),
            });
        }
        if let Ok(code) = std::fs::read_to_string(dir.join("exit.status")) {
            let log = read_log();
            let retry = log.contains("could not bind") || log.contains("could not create any");
            return Err((
                format!(
                    "postgres exited early (status {}); log:\n{log}",
                    code.trim()
                ),
                retry,
            ));
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "postgres did not accept connections on port {port} within \
                 {STARTUP_TIMEOUT:?} (last error: {ready:?}); log:\n{}",
                read_log()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// The node's index database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// SQLite inside the data directory (the default).
    #[default]
    Sqlite,
    /// A fresh database from `postgres_url()`.
    Postgres,
}

/// Turns `async fn name(backend: Backend)` into two tests, `name_sqlite`
/// and `name_postgres`, each on a two-worker multi-thread Tokio runtime.
/// Several names may be given, each optionally preceded by attributes for
/// both tests: `both_backends!(a, #[ignore = "slow"] b);`. Needs this module
/// mounted as `mod support;` at the test crate's root, and the `paste` and
/// `tokio` dev-dependencies. Import it like the rest:
/// `use crate::support::{both_backends, Backend};`.
macro_rules! both_backends {
    ($($(#[$meta:meta])* $name:ident),+ $(,)?) => {
        $(
            ::paste::paste! {
                $(#[$meta])*
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn [<$name _sqlite>]() {
                    $name($crate::support::Backend::Sqlite).await;
                }

                $(#[$meta])*
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn [<$name _postgres>]() {
                    $name($crate::support::Backend::Postgres).await;
                }
            }
        )+
    };
}
pub(crate) use both_backends;

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names are lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

/// One HTTP/1.1 request to `127.0.0.1:<port>` over a fresh connection
/// (`Connection: close`). Handles `Content-Length` and chunked bodies.
pub fn try_http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw.split_off(split + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        resp.body = dechunk(&rest)?;
    } else {
        if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
            if method != "HEAD" && rest.len() < len {
                return Err(invalid(format!(
                    "body truncated: {} of {len} bytes",
                    rest.len()
                )));
            }
            rest.truncate(len);
        }
        resp.body = rest;
    }
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size line"))?;
        let line = String::from_utf8_lossy(&data[..eol]);
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_hex:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Reads one response from a kept-alive connection: the status line, the headers, then a body
/// framed by `Content-Length` or chunked (none for 204 and 304, or after `HEAD`).
pub fn read_response<R: std::io::BufRead>(
    reader: &mut R,
    method: &str,
) -> std::io::Result<HttpResponse> {
    let mut line = String::new();
    let mut read_line = |reader: &mut R| -> std::io::Result<String> {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(invalid("connection closed before a response"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let status_line = read_line(reader)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let l = read_line(reader)?;
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if method == "HEAD" || status == 204 || status == 304 {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let size_line = read_line(reader)?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_hex:?}")))?;
            if size == 0 {
                // trailers, then the empty line
                while !read_line(reader)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            chunk.truncate(size);
            resp.body.extend_from_slice(&chunk);
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        resp.body = body;
    } else {
        reader.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// One HTTP/1.1 connection to `127.0.0.1:<port>` kept alive across requests, for tests that
/// check a connection stays usable after an answer (`request` fails once the node closed it).
pub struct HttpConnection {
    reader: std::io::BufReader<TcpStream>,
    port: u16,
}

impl HttpConnection {
    pub fn open(port: u16) -> std::io::Result<HttpConnection> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        Ok(HttpConnection {
            reader: std::io::BufReader::new(stream),
            port,
        })
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<HttpResponse> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n",
            self.port
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        read_response(&mut self.reader, method)
    }
}

/// What [`streamed_request`] saw: the answer, if one could be read (the node may reset the
/// connection after answering early), and how many body bytes were written.
#[derive(Debug)]
pub struct Streamed {
    pub response: std::io::Result<HttpResponse>,
    pub written: u64,
}

/// A request whose body is `chunks`, sent chunked (or as they come under a `Content-Length`
/// given in `headers`) over a fresh connection while another thread reads the answer: the body
/// can be far larger than memory, and a node that answers before the end (413) is heard.
/// Writing stops at the first write error or once the answer has begun to arrive.
pub fn streamed_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    chunks: impl Iterator<Item = Vec<u8>>,
) -> Streamed {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => {
            return Streamed {
                response: Err(e),
                written: 0,
            }
        }
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let chunked = !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    }
    head.push_str("\r\n");
    let answered = Arc::new(AtomicBool::new(false));
    let reader = stream.try_clone().map(|r| {
        let answered = answered.clone();
        let method = method.to_string();
        std::thread::spawn(move || {
            let _ = r.set_read_timeout(Some(Duration::from_secs(120)));
            let mut reader = std::io::BufReader::new(r);
            let peeked = std::io::BufRead::fill_buf(&mut reader).map(|b| !b.is_empty());
            answered.store(true, Ordering::SeqCst);
            match peeked {
                Ok(true) => read_response(&mut reader, &method),
                Ok(false) => Err(invalid("connection closed without an answer")),
                Err(e) => Err(e),
            }
        })
    });
    let mut written = 0u64;
    let send = |stream: &mut TcpStream| -> std::io::Result<()> {
        stream.write_all(head.as_bytes())?;
        for chunk in chunks {
            if answered.load(Ordering::SeqCst) {
                return Ok(());
            }
            if chunked {
                stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            }
            stream.write_all(&chunk)?;
            if chunked {
                stream.write_all(b"\r\n")?;
            }
            written += chunk.len() as u64;
        }
        if chunked {
            stream.write_all(b"0\r\n\r\n")?;
        }
        stream.flush()
    };
    let _ = send(&mut stream);
    let response = match reader {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err(invalid("the reading thread panicked"))),
        Err(e) => Err(e),
    };
    Streamed { response, written }
}

/// `try_http_request`, panicking on I/O errors.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://127.0.0.1:{port}{path} failed: {e}"))
}

// ---------------------------------------------------------------------------
// The node under test
// ---------------------------------------------------------------------------

/// How to start a node.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    pub backend: Backend,
    /// Extra CLI arguments, appended after the standard `serve` ones.
    pub args: Vec<String>,
    /// Extra environment variables (applied after `RUST_LOG=info` and
    /// `NO_COLOR=1`, so they may override them).
    pub env: Vec<(String, String)>,
    /// Use this data directory instead of a fresh one (restart tests).
    pub data_dir: Option<PathBuf>,
    /// Postgres backend: use this database instead of a fresh one
    /// (restart tests).
    pub database_url: Option<String>,
    /// Defaults to `STARTUP_TIMEOUT` when `None`.
    pub startup_timeout: Option<Duration>,
    /// Address to bind instead of 127.0.0.1.
    pub bind: Option<String>,
    /// A configuration file (TOML) to start with, e.g. `[[ae]]` tables from [`ae_entry`]:
    /// written into the node's temp directory and passed with `--config`.
    pub config: Option<String>,
    /// The DIMSE, DIMSE TLS and HTTP ports to listen on instead of free ones (a restart with
    /// the very same options).
    pub ports: Option<[u16; 3]>,
}

impl NodeOptions {
    pub fn new(backend: Backend) -> Self {
        NodeOptions {
            backend,
            ..Default::default()
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Starts the node with this configuration file (TOML), added to any given before.
    pub fn config(mut self, toml: &str) -> Self {
        let mut all = self.config.take().unwrap_or_default();
        all.push_str(toml);
        all.push('\n');
        self.config = Some(all);
        self
    }
}

/// An `[[ae]]` table registering `title`, allowed `allow` (echo, store, find, move, get), for
/// [`NodeOptions::config`]. An AE that is not registered may only echo and store.
pub fn ae_entry(title: &str, allow: &[&str]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[ae]]\ntitle = \"{title}\"\nallow = [{}]\n",
        allow.join(", ")
    )
}

/// A running `pacs serve` process. Killed on drop; when dropped during a
/// panic, its log is printed and its temp directory kept.
pub struct Node {
    child: Mutex<Child>,
    pid: u32,
    aet: String,
    dimse_port: u16,
    /// `--dimse-tls-port`, always passed: the DIMSE TLS listener runs there once the node has
    /// a certificate (`--tls-cert`, `--tls-key`).
    dimse_tls_port: u16,
    http_port: u16,
    data_dir: PathBuf,
    database_url: Option<String>,
    log_path: PathBuf,
    options: NodeOptions,
    tmp: Option<tempfile::TempDir>,
    watcher: Option<Child>,
}

impl Node {
    /// Starts a node with default options on `backend`.
    pub fn start(backend: Backend) -> Node {
        Node::start_with(NodeOptions::new(backend))
    }

    /// Spawns `pacs serve --bind 127.0.0.1 --aet PACS --dimse-port <free>
    /// --http-port <free> --data-dir <dir> [--database-url <url>] [args]`
    /// and waits until `/healthz` answers 200 and the DIMSE port accepts
    /// TCP (that probe connection shows up once in the node's log as an
    /// association closed by the peer). Inherited `PACS_*` variables are
    /// removed from its environment; it runs in its own temp directory.
    pub fn start_with(opts: NodeOptions) -> Node {
        let tmp = tempfile::Builder::new()
            .prefix("pacs-test-node-")
            .tempdir()
            .expect("temp dir for the node");
        let data_dir = match &opts.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = tmp.path().join("data");
                std::fs::create_dir(&dir).expect("create data dir");
                dir
            }
        };
        let database_url = match opts.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(opts.database_url.clone().unwrap_or_else(postgres_url)),
        };
        let aet = "PACS".to_string();
        let [dimse_port, dimse_tls_port, http_port] = opts
            .ports
            .unwrap_or_else(|| [free_port(), free_port(), free_port()]);
        let log_path = tmp.path().join("pacs.log");
        let log = File::create(&log_path).expect("create node log");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pacs"));
        let bind = opts.bind.clone().unwrap_or_else(|| "127.0.0.1".into());
        cmd.args(["serve", "--bind", &bind, "--aet", &aet])
            .arg("--dimse-port")
            .arg(dimse_port.to_string())
            .arg("--dimse-tls-port")
            .arg(dimse_tls_port.to_string())
            .arg("--http-port")
            .arg(http_port.to_string())
            .arg("--data-dir")
            .arg(&data_dir);
        if let Some(url) = &database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(toml) = &opts.config {
            let path = tmp.path().join("pacs.toml");
            std::fs::write(&path, toml).expect("write the node's config file");
            cmd.arg("--config").arg(path);
        }
        cmd.args(&opts.args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PACS_") {
                cmd.env_remove(key);
            }
        }
        // NO_COLOR: plain log lines that tests can search.
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_pacs")));
        // Should this test process die without dropping the Node (SIGKILL,
        // abort), a watcher kills the orphaned node within a second.
        let watcher = Command::new("sh")
            .args([
                "-c",
                r#"while [ -d "/proc/$1" ] && [ -d "/proc/$2" ]; do sleep 1; done
[ -d "/proc/$2" ] && kill -KILL "$2""#,
                "pacs-test-node-watchdog",
            ])
            .arg(std::process::id().to_string())
            .arg(child.id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let node = Node {
            pid: child.id(),
            watcher,
            child: Mutex::new(child),
            aet,
            dimse_port,
            dimse_tls_port,
            http_port,
            data_dir,
            database_url,
            log_path,
            options: opts,
            tmp: Some(tmp),
        };
        if let Err(msg) = node.wait_ready() {
            // Drop (kill, delete the temp dir) before panicking: the message
            // already carries the whole log.
            drop(node);
            panic!("{msg}");
        }
        node
    }

    fn child(&self) -> std::sync::MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_ready(&self) -> Result<(), String> {
        let timeout = self.options.startup_timeout.unwrap_or(STARTUP_TIMEOUT);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit_status() {
                return Err(format!(
                    "pacs exited during startup ({status}); log:\n{}",
                    self.log()
                ));
            }
            // (an HTTPS-only node answers a plain request with 400 "HTTPS only": it is up)
            let healthy =
                try_http_request(self.http_port, "GET", "/healthz", &[], &[]).is_ok_and(|r| {
                    r.status == 200 || (r.status == 400 && r.text().contains("HTTPS only"))
                });
            // with the plain listener off (`--plain-dimse false`), the TLS one must be there
            let plain_off = self
                .options
                .args
                .windows(2)
                .any(|w| w[0] == "--plain-dimse" && w[1] == "false")
                || self.options.args.iter().any(|a| a == "--plain-dimse=false");
            let dimse_port = match plain_off {
                true => self.dimse_tls_port,
                false => self.dimse_port,
            };
            if healthy && TcpStream::connect(("127.0.0.1", dimse_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "pacs did not become ready within {timeout:?} (GET /healthz on port {} \
                     must answer 200 and DIMSE port {} accept TCP); log:\n{}",
                    self.http_port,
                    self.dimse_port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's AE title (`PACS`).
    pub fn aet(&self) -> &str {
        &self.aet
    }

    pub fn dimse_port(&self) -> u16 {
        self.dimse_port
    }

    /// The DIMSE TLS listener's port (listening once the node has `--tls-cert`, `--tls-key`).
    pub fn dimse_tls_port(&self) -> u16 {
        self.dimse_tls_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The database URL passed with `--database-url` (None for SQLite).
    pub fn database_url(&self) -> Option<String> {
        self.database_url.clone()
    }

    /// Options that start a node on the same data directory and database
    /// (keep this `Node` alive while restarting: it owns the temp dir).
    pub fn restart_options(&self) -> NodeOptions {
        NodeOptions {
            data_dir: Some(self.data_dir.clone()),
            database_url: self.database_url.clone(),
            ..self.options.clone()
        }
    }

    /// Everything the node printed so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    pub fn is_alive(&self) -> bool {
        self.exit_status().is_none()
    }

    /// SIGTERM, then wait up to `TERMINATE_TIMEOUT` for the exit status;
    /// a node that does not stop in time is killed and the test fails.
    pub fn terminate(&self) -> ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + TERMINATE_TIMEOUT;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "pacs did not exit within {TERMINATE_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no-op if it already exited); returns the exit status.
    pub fn kill(&self) -> ExitStatus {
        let mut child = self.child();
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        let _ = child.kill();
        child.wait().expect("wait for pacs")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Never panic here (we may already be unwinding).
        {
            let mut child = self.child();
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(mut watcher) = self.watcher.take() {
            let _ = watcher.kill();
            let _ = watcher.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            let kept = self.tmp.take().map(|t| t.keep());
            eprintln!(
                "---- pacs log (last {} lines; node dir kept at {:?}) ----\n{}\n---- end of pacs log ----",
                tail.len(),
                kept,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Synthetic data
// ---------------------------------------------------------------------------

/// Writes a synthetic CT series (`pacs_synth`) into a temporary directory, which lives as long
/// as the returned value.
pub fn synth_ct(slices: usize, seed: u64) -> (tempfile::TempDir, pacs_synth::SynthSummary) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut opts = pacs_synth::SynthOptions::new(pacs_synth::SynthModality::Ct);
    opts.slices = slices;
    opts.seed = seed;
    opts.out = dir.path().to_path_buf();
    let summary = pacs_synth::synthesise(&opts).expect("synthesise CT series");
    (dir, summary)
}

/// The files of a synthetic series, in instance order.
pub fn synth_paths(summary: &pacs_synth::SynthSummary) -> Vec<PathBuf> {
    summary.instances.iter().map(|i| i.path.clone()).collect()
}

/// Runs `python3` with `args` and returns its standard output; a failure panics with its
/// standard error.
pub fn python_stdout<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(python())
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
