//! Objects in an S3-compatible store: a real local S3 server (moto's, from PyPI) started by the
//! test on 127.0.0.1, the node configured with `--storage s3://bucket`.

use crate::support;

use support::s3::S3Server;
use support::{Backend, Node, NodeOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_stored_in_an_s3_bucket() {
    let s3 = S3Server::start();
    s3.create_bucket("pacs");
    let node = Node::start_with(s3.node_options(NodeOptions::new(Backend::Sqlite), "pacs"));
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
    let listing = s3.python(
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
