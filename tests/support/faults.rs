//! Harness of the fault tests (tests/faults.rs): a PostgreSQL cluster of the test's own that it
//! may restart, stop dead (SIGSTOP) and wake, an S3 server (moto) it may kill and start again
//! on the same port, a small tmpfs to fill, and storescu runs whose acknowledged instances are
//! read from its log.
//!
//! The shared cluster of [`super::postgres_url`] is never touched: other tests use it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, is_root, pg_bin_dir, pg_command, run_with_timeout, STARTUP_TIMEOUT};

// ---------------------------------------------------------------------------
// A private PostgreSQL cluster
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster (initdb + pg_ctl) for one test. Stopped (immediate) and deleted on
/// drop, or by a watchdog should the test process die.
pub struct PgCluster {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    watchdog: Option<Child>,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = pg_bin_dir().unwrap_or_else(|e| panic!("no PostgreSQL for the fault tests: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("pacs-test-pgfault-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if is_root() {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the postgres user", dir.display());
        }
        let data = dir.join("data");
        let out = run_with_timeout(
            pg_command(&bin.join("initdb"))
                .current_dir(&dir)
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions"]),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // the watchdog: when this process is gone, stop the cluster and delete it
        let script = r#"
parent=$1; ctl=$2; data=$3; dir=$4; shift 4
while [ -d "/proc/$parent" ]; do sleep 1; done
pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
[ -n "$pm" ] && kill -CONT "$pm" 2>/dev/null
[ -n "$pm" ] && pkill -CONT -P "$pm" 2>/dev/null
"$@" "$ctl" -D "$data" stop -m immediate -w >/dev/null 2>&1
rm -rf "$dir"
"#;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script, "pacs-test-pgfault-watchdog"])
            .arg(std::process::id().to_string())
            .arg(bin.join("pg_ctl"))
            .arg(&data)
            .arg(&dir);
        if is_root() {
            cmd.arg(super::runuser()).args(["-u", "postgres", "--"]);
        }
        let watchdog = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        let cluster = PgCluster {
            dir,
            data,
            bin,
            port: free_port(),
            watchdog,
        };
        cluster.pg_ctl_start();
        cluster
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        let mut cmd = pg_command(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(args)
            .current_dir(&self.dir);
        run_with_timeout(&mut cmd, Duration::from_secs(120))
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c shared_buffers=32MB \
             -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let log = log.to_string_lossy();
        let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log, "-o", &options]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// `pg_ctl stop -m fast` (clients' sessions are ended: "terminating connection due to
    /// administrator command"), then start again on the same port.
    pub fn restart(&self) {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
        self.pg_ctl_start();
    }

    fn pids(&self) -> Vec<u32> {
        let pm: u32 = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            .expect("postmaster pid");
        let mut pids = vec![pm];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: the name may hold spaces, so after the last ')'
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pm) {
                pids.push(pid);
            }
        }
        pids
    }

    fn signal(&self, signal: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Stops the postmaster and every backend dead (SIGSTOP): connections stay open and
    /// nothing answers, as with a hung host.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT to what [`PgCluster::freeze`] stopped.
    pub fn thaw(&self) {
        self.signal("CONT");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            self.thaw();
            let mut cmd = pg_command(&self.bin.join("pg_ctl"));
            cmd.arg("-D")
                .arg(&self.data)
                .args(["stop", "-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// An S3 server that can be killed and started again
// ---------------------------------------------------------------------------

/// moto's S3 server (PyPI) on a fixed port. Killing it loses its data (it keeps it in memory).
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let mut moto = Moto {
            child: None,
            port: free_port(),
        };
        moto.start_again();
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port, with an empty bucket `pacs`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "moto is running");
        let child = Command::new(super::python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto S3 server (pip install -r tests/requirements.txt)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "moto S3 server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.python("s3.create_bucket(Bucket='pacs')");
    }

    /// SIGKILL: the port refuses connections until [`Moto::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs Python with `s3`, a boto3 client of this server; returns its standard output.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='test', aws_secret_access_key='test')\n{code}",
            self.endpoint()
        );
        let out = Command::new(super::python())
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The keys in the bucket.
    pub fn keys(&self) -> BTreeSet<String> {
        self.python(
            "for o in s3.list_objects_v2(Bucket='pacs').get('Contents', []):\n    print(o['Key'])",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// `pacs serve` options for this bucket.
    pub fn node_args(&self) -> Vec<String> {
        [
            "--storage",
            "s3://pacs",
            "--s3-endpoint",
            &self.endpoint(),
            "--s3-allow-http",
            "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn env() -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// A small file system to fill
// ---------------------------------------------------------------------------

/// A tmpfs of a few MiB mounted on a folder (the tests run as root): writes past its size fail
/// with ENOSPC, as on a full disk. Unmounted on drop.
pub struct SmallDisk {
    pub dir: PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: &Path, size_mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mib}m"))
                .arg("tmpfs")
                .arg(dir),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "cannot mount a tmpfs on {} (the fault tests run as root, with CAP_SYS_ADMIN): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system `size_mib` (`mount -o remount,size=`): room again.
    pub fn grow(&self, size_mib: u64) {
        let out = run_with_timeout(
            Command::new("mount")
                .arg("-o")
                .arg(format!("remount,size={size_mib}m"))
                .arg(&self.dir),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "remount: {out:?}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

// ---------------------------------------------------------------------------
// storescu and what it was told
// ---------------------------------------------------------------------------

/// The files DCMTK's storescu reported Success for (`-v` log: "Sending file: PATH" then
/// "Received Store Response (Success)").
pub fn acknowledged(log: &str) -> BTreeSet<PathBuf> {
    let mut done = BTreeSet::new();
    let mut current: Option<PathBuf> = None;
    for line in log.lines() {
        if let Some(path) = line.split_once("Sending file: ").map(|(_, p)| p.trim()) {
            current = Some(PathBuf::from(path));
        } else if line.contains("Received Store Response (Success)") {
            if let Some(path) = current.take() {
                done.insert(path);
            }
        }
    }
    done
}

/// The statuses storescu reported other than Success (the `Status: ...` text of each).
pub fn failures(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("Received Store Response") && !l.contains("(Success)"))
        .map(str::to_string)
        .collect()
}

/// Starts `storescu -v` for `files` to the node on `port` (a process the test waits for).
pub fn spawn_storescu(port: u16, calling: &str, files: &[PathBuf], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("storescu log");
    super::dcmtk_command("storescu")
        .args(["-v", "-aet", calling, "-aec", "PACS", "127.0.0.1"])
        .arg(port.to_string())
        .args(files)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("storescu")
}

/// Waits for a child; kills it and panics past `timeout` (a hang is a failure).
pub fn wait_bounded(child: &mut Child, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `pacs fsck` with `args` and `env`; returns its exit code and standard output.
pub fn fsck(args: &[&str], env: &[(String, String)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pacs"));
    cmd.arg("fsck").args(args).env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PACS_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let out = run_with_timeout(&mut cmd, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "pacs fsck {args:?} -> {:?}\n{stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// Files under `dir` whose name ends in `#<digits>` (object_store's staging files).
pub fn staging_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if pacs::fsck::is_staging_file(&entry.file_name().to_string_lossy()) {
                found.push(path);
            }
        }
    }
    found
}
