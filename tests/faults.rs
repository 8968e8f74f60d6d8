//! Faults survived (issue 14, docs/faults.md): PostgreSQL restarted in the middle of an ingest
//! and hung by SIGSTOP, the object store unreachable (S3 killed) or full (a tmpfs), the node
//! killed with SIGKILL mid-ingest; and `pacs fsck`, which finds and repairs what such faults
//! leave, on local storage and on S3.
//!
//! "Nothing acknowledged is lost": every instance storescu reported Success for is indexed
//! and its object readable through WADO-RS afterwards.

use crate::support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::faults::{self, Moto, PgCluster, SmallDisk};
use support::{both_backends, Backend, Node, NodeOptions};

/// A hang guard for one storescu run (not a timing assertion).
const BOUND: Duration = Duration::from_secs(120);

/// Synthetic CT series (one study each), with their instances' paths and UIDs.
struct Series {
    _dirs: Vec<tempfile::TempDir>,
    instances: Vec<pacs_synth::SynthInstance>,
    by_series: Vec<Vec<PathBuf>>,
}

fn series(count: usize, slices: usize, seed: u64) -> Series {
    let mut dirs = Vec::new();
    let mut instances = Vec::new();
    let mut by_series = Vec::new();
    for n in 0..count {
        let (dir, summary) = support::synth_ct(slices, seed + n as u64);
        by_series.push(support::synth_paths(&summary));
        instances.extend(summary.instances);
        dirs.push(dir);
    }
    Series {
        _dirs: dirs,
        instances,
        by_series,
    }
}

impl Series {
    fn all(&self) -> Vec<PathBuf> {
        self.by_series.concat()
    }

    fn instance(&self, path: &Path) -> &pacs_synth::SynthInstance {
        self.instances
            .iter()
            .find(|i| i.path == path)
            .unwrap_or_else(|| panic!("{} is no synthetic instance", path.display()))
    }
}

/// One storescu association per series at once; returns what each storescu log says.
fn store_in_parallel(node: &Node, series: &Series, during: impl FnOnce()) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<_> = series
        .by_series
        .iter()
        .enumerate()
        .map(|(n, files)| {
            let log = dir.path().join(format!("storescu-{n}.log"));
            (
                faults::spawn_storescu(node.dimse_port(), "FAULTS", files, &log),
                log,
            )
        })
        .collect();
    during();
    children
        .iter_mut()
        .map(|(child, log)| {
            faults::wait_bounded(child, BOUND, "storescu");
            std::fs::read_to_string(log).unwrap()
        })
        .collect()
}

/// Instances the index holds, by the node's statistics.
fn instance_count(node: &Node) -> i64 {
    support::try_http_request(node.http_port(), "GET", "/api/statistics", &[], &[])
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .and_then(|v| v["instances"].as_i64())
        .unwrap_or(-1)
}

/// Waits until the node has indexed `n` instances (or the storescu runs are over).
fn wait_for_instances(node: &Node, n: i64) {
    let deadline = Instant::now() + BOUND;
    while instance_count(node) < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} instances indexed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The WADO-RS instance resource of `i` answers 200 with its object.
fn assert_readable(node: &Node, i: &pacs_synth::SynthInstance) {
    let path = format!(
        "/dicom-web/studies/{}/series/{}/instances/{}",
        i.study_instance_uid, i.series_instance_uid, i.sop_instance_uid
    );
    let r = support::http_request(node.http_port(), "GET", &path, &[], &[]);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    let parts = support::multipart::parse(r.header("content-type").unwrap(), &r.body);
    assert_eq!(parts.len(), 1, "GET {path}");
    assert_eq!(&parts[0].body[128..132], b"DICM", "GET {path}");
}

/// `--data-dir` (and `--database-url`) of a node, for `pacs fsck`.
fn fsck_args(node: &Node) -> Vec<String> {
    let mut args = vec![
        "--data-dir".to_string(),
        node.data_dir().display().to_string(),
    ];
    if let Some(url) = node.database_url() {
        args.extend(["--database-url".to_string(), url]);
    }
    args
}

fn fsck(node: &Node, extra: &[&str]) -> (i32, String) {
    let mut args = fsck_args(node);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    faults::fsck(&refs, &[])
}

fn stow(node: &Node, file: &Path) -> (u16, serde_json::Value) {
    let bytes = std::fs::read(file).unwrap();
    let (ctype, body) = support::multipart::build(&[("application/dicom", &bytes)]);
    let r = support::http_request(
        node.http_port(),
        "POST",
        "/dicom-web/studies",
        &[
            ("Content-Type", ctype.as_str()),
            ("Accept", "application/dicom+json"),
        ],
        &body,
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

/// A700 (Refused: Out of Resources, PS3.4 B.2.3) in storescu's words.
fn is_out_of_resources(line: &str) -> bool {
    let line = line.to_lowercase().replace(' ', "");
    line.contains("outofresources") || line.contains("0xa7")
}

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// PostgreSQL restarted (`pg_ctl stop -m fast`, start) while four associations store: those
/// in flight get A700 or are aborted, everything acknowledged is indexed and readable, and
/// the node takes the whole set again without being restarted itself.
#[test]
fn postgres_restarted_mid_ingest_loses_nothing_acknowledged() {
    let cluster = PgCluster::start();
    let node = Node::start_with(
        NodeOptions::new(Backend::Postgres)
            .database_url(cluster.url())
            .arg("--database-timeout-ms")
            .arg("3000"),
    );
    let series = series(4, 30, 140);
    let logs = store_in_parallel(&node, &series, || {
        wait_for_instances(&node, 20);
        cluster.restart();
    });
    let acknowledged: BTreeSet<PathBuf> =
        logs.iter().flat_map(|l| faults::acknowledged(l)).collect();
    let failures: Vec<String> = logs.iter().flat_map(|l| faults::failures(l)).collect();
    let all = series.all();
    assert!(
        acknowledged.len() < all.len(),
        "every store succeeded through the restart: the restart came too late"
    );
    assert!(
        failures.iter().all(|f| is_out_of_resources(f)),
        "failures other than A700: {failures:?}"
    );
    assert!(!acknowledged.is_empty());
    // nothing acknowledged is lost, before anything is sent again
    for path in &acknowledged {
        assert_readable(&node, series.instance(path));
    }
    // the node accepts again, without a restart (its pool drops the broken connections)
    let out = support::storescu(
        &node,
        "FAULTS",
        &["-v"],
        &all.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        faults::acknowledged(&log).len(),
        all.len(),
        "after the restart: {:?}",
        faults::failures(&log)
    );
    assert!(node.is_alive());
    // an object kept after an unknown commit outcome was indexed by the store sent again
    let (code, out) = fsck(&node, &["--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");
}

/// PostgreSQL stopped dead (SIGSTOP on the postmaster and every backend): a C-STORE gets
/// A700 and QIDO-RS 503 (the timeouts end the wait), and once it is woken (SIGCONT) the same
/// node stores and answers again.
#[test]
fn postgres_hung_by_sigstop_fails_then_recovers() {
    let cluster = PgCluster::start();
    // (authenticated by a token, which needs no index: an anonymous caller is refused while
    // the index cannot say whether anyone is configured, as the authorisation fails closed)
    let node = Node::start_with(
        NodeOptions::new(Backend::Postgres)
            .database_url(cluster.url())
            .arg("--database-timeout-ms")
            .arg("1500")
            .arg("--admin-token")
            .arg("faults-token"),
    );
    let bearer = [("Authorization", "Bearer faults-token")];
    let s = series(1, 3, 150);
    let files = s.all();
    let before = support::storescu(&node, "FAULTS", &[], &[&files[0]]);
    assert!(before.status.success());

    cluster.freeze();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("storescu.log");
    let mut child = faults::spawn_storescu(node.dimse_port(), "FAULTS", &files[1..2], &log);
    faults::wait_bounded(&mut child, BOUND, "storescu while PostgreSQL is hung");
    let text = std::fs::read_to_string(&log).unwrap();
    let failures = faults::failures(&text);
    assert!(
        faults::acknowledged(&text).is_empty() && failures.iter().any(|f| is_out_of_resources(f)),
        "{text}"
    );
    let qido = support::http_request(node.http_port(), "GET", "/dicom-web/studies", &bearer, &[]);
    assert_eq!(qido.status, 503, "{}", qido.text());
    cluster.thaw();

    // recovered: the store that failed succeeds, QIDO finds both instances
    let deadline = Instant::now() + BOUND;
    loop {
        let out = support::storescu(&node, "FAULTS", &["-v"], &[&files[1]]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if faults::acknowledged(&log).len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after SIGCONT: {log}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let i = &s.instances[0];
    let qido = support::http_request(
        node.http_port(),
        "GET",
        &format!(
            "/dicom-web/studies/{}/series/{}/instances",
            i.study_instance_uid, i.series_instance_uid
        ),
        &bearer,
        &[],
    );
    assert_eq!(qido.status, 200, "{}", qido.text());
    let found: serde_json::Value = serde_json::from_slice(&qido.body).unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(2), "{found}");
    assert!(node.is_alive());
}

// ---------------------------------------------------------------------------
// The object store
// ---------------------------------------------------------------------------

/// S3 (moto) killed: C-STORE answers A700 and STOW-RS 507 with reason A700, within the
/// storage timeout; started again on the same port, the node stores again without a restart.
/// moto lost what it held when killed: `pacs fsck` on the bucket reports the row whose object
/// is gone and, with --repair, removes it.
#[test]
fn s3_unreachable_then_back() {
    let mut moto = Moto::start();
    let node = Node::start_with(NodeOptions {
        backend: Backend::Sqlite,
        args: [
            moto.node_args(),
            vec!["--storage-timeout-ms".into(), "2000".into()],
        ]
        .concat(),
        env: Moto::env(),
        ..Default::default()
    });
    let s = series(1, 3, 160);
    let files = s.all();
    assert!(support::storescu(&node, "FAULTS", &[], &[&files[0]])
        .status
        .success());

    moto.kill();
    let out = support::storescu(&node, "FAULTS", &["-v"], &[&files[1]]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        faults::acknowledged(&log).is_empty()
            && faults::failures(&log)
                .iter()
                .any(|f| is_out_of_resources(f)),
        "{log}"
    );
    let (status, response) = stow(&node, &files[2]);
    assert_eq!(status, 507, "{response}");
    assert_eq!(
        response["00081198"]["Value"][0]["00081197"]["Value"][0], 0xA700,
        "{response}"
    );

    moto.start_again();
    let out = support::storescu(&node, "FAULTS", &["-v"], &[&files[1]]);
    assert_eq!(
        faults::acknowledged(&String::from_utf8_lossy(&out.stderr)).len(),
        1
    );
    let (status, response) = stow(&node, &files[2]);
    assert_eq!(status, 200, "{response}");
    for i in &s.instances[1..] {
        assert_readable(&node, i);
    }

    // fsck over S3: the first instance's object went with the old moto
    let mut args = fsck_args(&node);
    args.extend(moto.node_args());
    args.extend(["--grace-secs".into(), "0".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = faults::fsck(&refs, &Moto::env());
    assert_eq!(code, 1, "{out}");
    let first = &s.instances[0].sop_instance_uid;
    assert!(
        out.lines()
            .any(|l| l.starts_with("missing-object ") && l.contains(first.as_str())),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| !l.starts_with("summary")).count(),
        1,
        "{out}"
    );
    let (code, out) = faults::fsck(&[&refs[..], &["--repair"]].concat(), &Moto::env());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row removed"), "{out}");
    let (code, out) = faults::fsck(&refs, &Moto::env());
    assert_eq!(code, 0, "{out}");
    assert_eq!(moto.keys().len(), 2);
}

/// Local storage full (the objects folder on a tmpfs of 3 MiB): stores past it get A700
/// (C-STORE) and 507 (STOW-RS), nothing acknowledged is lost, no staging file is left, and
/// once there is room again the same node stores the rest.
#[test]
fn local_storage_full_then_room_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let disk = SmallDisk::mount(&data.join("objects"), 3);
    let node = Node::start_with(NodeOptions::new(Backend::Sqlite).data_dir(&data));
    let s = series(1, 10, 170);
    let files = s.all();
    let out = support::storescu(
        &node,
        "FAULTS",
        &["-v"],
        &files[..9].iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let acknowledged = faults::acknowledged(&log);
    let failures = faults::failures(&log);
    assert!(!acknowledged.is_empty() && !failures.is_empty(), "{log}");
    assert!(failures.iter().all(|f| is_out_of_resources(f)), "{log}");
    let (status, response) = stow(&node, &files[9]);
    assert_eq!(status, 507, "{response}");
    for path in &acknowledged {
        assert_readable(&node, s.instance(path));
    }
    assert!(faults::staging_files(&data.join("objects")).is_empty());

    disk.grow(64);
    let rest: Vec<&Path> = files[..9]
        .iter()
        .filter(|f| !acknowledged.contains(*f))
        .map(PathBuf::as_path)
        .collect();
    let out = support::storescu(&node, "FAULTS", &["-v"], &rest);
    assert_eq!(
        faults::acknowledged(&String::from_utf8_lossy(&out.stderr)).len(),
        rest.len()
    );
    let (status, response) = stow(&node, &files[9]);
    assert_eq!(status, 200, "{response}");
    for i in &s.instances {
        assert_readable(&node, i);
    }
    let (code, out) = fsck(&node, &["--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");
    drop(node);
}

// ---------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------

both_backends!(killed_mid_ingest_then_fsck);

/// The node killed with SIGKILL while four associations store, started again on the same
/// data directory and index, then `pacs fsck --repair` and `pacs fsck`: the second finds
/// nothing; no staging file, no unindexed object, no duplicate row; every instance storescu
/// heard Success for is indexed and readable.
async fn killed_mid_ingest_then_fsck(backend: Backend) {
    let node = Node::start(backend);
    let series = series(4, 40, 180);
    let logs = store_in_parallel(&node, &series, || {
        wait_for_instances(&node, 30);
        node.kill();
    });
    let acknowledged: BTreeSet<PathBuf> =
        logs.iter().flat_map(|l| faults::acknowledged(l)).collect();
    assert!(!acknowledged.is_empty(), "{logs:?}");
    assert!(acknowledged.len() < series.all().len(), "killed too late");

    let again = Node::start_with(node.restart_options());
    let (code, out) = fsck(&again, &["--repair", "--grace-secs", "0"]);
    assert!(code == 0 || code == 1, "{out}");
    let (code, out) = fsck(&again, &["--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");

    let data = again.data_dir();
    assert!(faults::staging_files(&data.join("objects")).is_empty());
    assert!(support::archive::temp_files(data).is_empty());
    let rows = support::archive::verify_consistent(data, again.database_url().as_deref()).await;
    let uids = support::archive::uids(&rows);
    assert_eq!(uids.len(), rows.len(), "duplicate rows");
    for path in &acknowledged {
        let i = series.instance(path);
        assert!(
            uids.contains(&i.sop_instance_uid),
            "{} lost",
            path.display()
        );
        assert_readable(&again, i);
    }
}

// ---------------------------------------------------------------------------
// pacs fsck
// ---------------------------------------------------------------------------

/// The key `pacs` stores a Part 10 file under (as STOW-RS stores it: as received).
fn key_of(i: &pacs_synth::SynthInstance, bytes: &[u8]) -> String {
    let uid = |s: &str| pacs::uid::Uid::parse(s).unwrap();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    pacs::storage::Storage::instance_key(
        &uid(&i.study_instance_uid),
        &uid(&i.series_instance_uid),
        &uid(&i.sop_instance_uid),
        &sha,
    )
}

fn put(objects: &Path, key: &str, bytes: &[u8]) -> PathBuf {
    let path = objects.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn make_old(path: &Path) {
    let ok = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "touch {}", path.display());
}

/// Every kind of finding, planted in a running node's archive: a staging file, a spill file,
/// an unindexed valid instance, an unindexed copy of an indexed one, an unindexed file that
/// is no DICOM, a row whose object is gone and one whose object was altered. The grace
/// period hides the young files; --repair mends all but the altered object; restored, the
/// archive is clean (exit 0). A database that cannot be reached is exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsck_reports_and_repairs_every_kind_of_finding() {
    let node = Node::start(Backend::Sqlite);
    let s = series(1, 4, 190);
    let files = s.all();
    let out = support::storescu(
        &node,
        "FAULTS",
        &[],
        &files[..3].iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    assert!(out.status.success());
    let objects = node.data_dir().join("objects");
    let rows = support::archive::verify_consistent(node.data_dir(), None).await;
    let row = |n: usize| {
        rows.iter()
            .find(|r| r.sop_instance_uid == s.instances[n].sop_instance_uid)
            .unwrap()
            .clone()
    };
    let (first, second, third) = (row(0), row(1), row(2));
    let first_bytes = std::fs::read(objects.join(&first.object_key)).unwrap();

    // the plants
    put(&objects, &format!("{}#1", first.object_key), &first_bytes);
    std::fs::create_dir_all(node.data_dir().join("tmp")).unwrap();
    std::fs::write(node.data_dir().join("tmp/.tmpLEFT"), b"half a data set").unwrap();
    let fourth = &s.instances[3];
    let fourth_bytes = std::fs::read(&fourth.path).unwrap();
    let fourth_key = key_of(fourth, &fourth_bytes);
    put(&objects, &fourth_key, &fourth_bytes);
    // the same content under another hash suffix
    let copy_key = first.object_key.replace(
        &format!(".{}.dcm", &first.sha256[..16]),
        ".00000000000000aa.dcm",
    );
    assert_ne!(copy_key, first.object_key);
    put(&objects, &copy_key, &first_bytes);
    let garbage_key = "1.2.3/1.2.3.4/1.2.3.4.5.0123456789abcdef.dcm";
    put(&objects, garbage_key, b"not DICOM at all");
    std::fs::remove_file(objects.join(&second.object_key)).unwrap();
    let third_path = objects.join(&third.object_key);
    let mut altered = std::fs::read(&third_path).unwrap();
    let last = altered.len() - 1;
    altered[last] ^= 0xFF;
    std::fs::write(&third_path, &altered).unwrap();

    // within the grace period only the rows' findings show
    let (code, out) = fsck(&node, &[]);
    assert_eq!(code, 1, "{out}");
    let kinds = |out: &str| -> Vec<String> {
        let mut k: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("summary"))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
            .collect();
        k.sort();
        k
    };
    assert_eq!(kinds(&out), ["hash-mismatch", "missing-object"], "{out}");

    let (code, out) = fsck(&node, &["--grace-secs", "0"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        kinds(&out),
        [
            "hash-mismatch",
            "missing-object",
            "orphan",
            "orphan",
            "orphan",
            "spill-file",
            "staging-file"
        ],
        "{out}"
    );
    // reporting changed nothing
    assert!(objects.join(garbage_key).exists());

    let (code, out) = fsck(&node, &["--grace-secs", "0", "--repair"]);
    assert_eq!(code, 1, "{out}");
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start}: {out}"))
            .to_string()
    };
    assert!(
        line(&format!("orphan {fourth_key}")).ends_with("re-indexed"),
        "{out}"
    );
    assert!(
        line(&format!("orphan {copy_key}")).ends_with("removed"),
        "{out}"
    );
    assert!(
        line(&format!("orphan {garbage_key}")).contains("not a valid DICOM"),
        "{out}"
    );
    assert!(line("missing-object").ends_with("row removed"), "{out}");
    assert!(line("hash-mismatch").contains("not repaired"), "{out}");
    assert!(line("staging-file").ends_with("removed"), "{out}");
    assert!(line("spill-file").ends_with("removed"), "{out}");

    // the altered object restored: clean
    let mut restored = altered;
    restored[last] ^= 0xFF;
    std::fs::write(&third_path, &restored).unwrap();
    let (code, out) = fsck(&node, &["--grace-secs", "0"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().last().unwrap().starts_with("summary:"), "{out}");
    // the re-indexed instance is whole: WADO-RS metadata from the index, the object readable
    assert_readable(&node, fourth);
    let r = support::http_request(
        node.http_port(),
        "GET",
        &format!(
            "/dicom-web/studies/{}/series/{}/instances/{}/metadata",
            fourth.study_instance_uid, fourth.series_instance_uid, fourth.sop_instance_uid
        ),
        &[],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rows = support::archive::verify_consistent(node.data_dir(), None).await;
    assert_eq!(rows.len(), 3, "the first, the third and the fourth");

    // an index that cannot be reached: an operational error
    let (code, out) = faults::fsck(
        &[
            "--data-dir",
            &node.data_dir().display().to_string(),
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "--database-timeout-ms",
            "500",
        ],
        &[],
    );
    assert_eq!(code, 2, "{out}");
}

/// What a crash left, older than the grace period, is mended by the start-up pass of the
/// next `pacs serve`: the staging file removed, the unindexed instance indexed, the file that
/// is no DICOM removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_up_pass_mends_what_a_crash_left() {
    let node = Node::start(Backend::Sqlite);
    let s = series(1, 2, 200);
    let files = s.all();
    assert!(support::storescu(&node, "FAULTS", &[], &[&files[0]])
        .status
        .success());
    node.terminate();
    let objects = node.data_dir().join("objects");
    let rows = support::archive::verify_consistent(node.data_dir(), None).await;
    let bytes = std::fs::read(objects.join(&rows[0].object_key)).unwrap();
    let staging = put(&objects, &format!("{}#3", rows[0].object_key), &bytes);
    let second = &s.instances[1];
    let second_bytes = std::fs::read(&second.path).unwrap();
    let orphan = put(&objects, &key_of(second, &second_bytes), &second_bytes);
    let garbage = put(&objects, "9.9/9.9.9/9.9.9.9.0123456789abcdef.dcm", b"junk");
    for path in [&staging, &orphan, &garbage] {
        make_old(path);
    }

    let again = Node::start_with(node.restart_options());
    let deadline = Instant::now() + BOUND;
    while !again.log().contains("start-up reconciliation pass done") {
        assert!(Instant::now() < deadline, "{}", again.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!staging.exists());
    assert!(!garbage.exists());
    assert!(orphan.exists());
    assert_readable(&again, second);
    let rows = support::archive::verify_consistent(again.data_dir(), None).await;
    assert_eq!(rows.len(), 2);
}
