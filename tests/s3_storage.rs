//! Objects in an S3-compatible store: a real local S3 server (moto's, from PyPI) started by the
//! test on 127.0.0.1, the node configured with `--storage s3://bucket`.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Backend, Node, NodeOptions};

struct S3Server {
    child: Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3() -> S3Server {
    let port = support::free_port();
    let child = Command::new(support::python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto S3 server (pip install -r tests/requirements.txt)");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto S3 server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    S3Server { child, endpoint }
}

fn s3_python(endpoint: &str, code: &str) -> String {
    let script = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test')\n{code}"
    );
    let out = Command::new(support::python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_stored_in_an_s3_bucket() {
    let s3 = start_s3();
    s3_python(&s3.endpoint, "s3.create_bucket(Bucket='pacs')");
    let node = Node::start_with(NodeOptions {
        backend: Backend::Sqlite,
        args: vec![
            "--storage".into(),
            "s3://pacs".into(),
            "--s3-endpoint".into(),
            s3.endpoint.clone(),
            "--s3-allow-http".into(),
            "true".into(),
        ],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ],
        ..Default::default()
    });
    let dir = support::pydicom_test_files();
    let files = [dir.join("CT_small.dcm"), dir.join("MR_small.dcm")];
    let refs: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    let out = support::storescu(&node, "S3TEST", &[], &refs);
    assert!(out.status.success());

    let index = pacs::index::open(node.data_dir().join("index.sqlite").to_str().unwrap())
        .await
        .unwrap();
    let stored = index.all_instances().await.unwrap();
    assert_eq!(stored.len(), 2);
    // the bucket holds exactly the indexed objects, with the indexed SHA-256
    let listing = s3_python(
        &s3.endpoint,
        "import hashlib\nfor o in s3.list_objects_v2(Bucket='pacs').get('Contents', []):\n    \
         b = s3.get_object(Bucket='pacs', Key=o['Key'])['Body'].read()\n    \
         print(o['Key'], hashlib.sha256(b).hexdigest())",
    );
    let mut in_bucket: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let (k, h) = l.split_once(' ').unwrap();
            (k.to_string(), h.to_string())
        })
        .collect();
    in_bucket.sort();
    let mut indexed: Vec<(String, String)> = stored
        .iter()
        .map(|s| (s.object_key.clone(), s.sha256.clone()))
        .collect();
    indexed.sort();
    assert_eq!(in_bucket, indexed);
    // nothing was written to the local disk
    assert!(!node.data_dir().join("objects").exists());
}
