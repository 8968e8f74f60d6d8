//! A real S3-compatible server for tests: moto's (from PyPI), started on a free 127.0.0.1 port
//! and killed on drop, with a bucket made through boto3.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The credentials moto accepts (any), passed to nodes as `AWS_*`.
pub const ACCESS_KEY_ID: &str = "test";
pub const SECRET_ACCESS_KEY: &str = "test";

/// A running moto S3 server; killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server and waits until it accepts connections; fails the test if it
    /// cannot start (never skips).
    pub fn start() -> S3Server {
        let port = super::free_port();
        let child = Command::new(super::python())
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

    /// Runs Python `code` with `s3`, a boto3 client of this server; its standard output.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='us-east-1', \
             aws_access_key_id='{ACCESS_KEY_ID}', aws_secret_access_key='{SECRET_ACCESS_KEY}')\n{code}",
            self.endpoint
        );
        let out = Command::new(super::python())
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

    pub fn create_bucket(&self, bucket: &str) {
        self.python(&format!("s3.create_bucket(Bucket='{bucket}')"));
    }

    /// Node options storing objects in `bucket` of this server.
    pub fn node_options(&self, mut opts: super::NodeOptions, bucket: &str) -> super::NodeOptions {
        opts.args.extend([
            "--storage".into(),
            format!("s3://{bucket}"),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-allow-http".into(),
            "true".into(),
        ]);
        opts.env.extend([
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_ACCESS_KEY.into()),
        ]);
        opts
    }
}
