//! User Identity Negotiation (PS3.7 D.3.3.7) on the acceptor, against real requestors: pynetdicom
//! (tests/peers/user_identity.py) and DCMTK's storescu (`--user`, `--password`, `--pos-response`;
//! DCMTK's echoscu has no user identity options). A missing python3, pynetdicom or DCMTK is a
//! failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacs_dimse::service::RemoteAe;
use pacs_dimse::{
    AssociationGrant, AssociationPeer, AssociationRefusal, DimseConfig, DimseServer, DimseService,
    FindOutcome, FindRequest, IdentityOffer, InstanceSource, OfferedIdentity, Operation,
    OutgoingInstance, RetrieveOutcome, RetrieveRequest, StoreOutcome, StoreRequest,
};
use serde_json::Value;

/// What the requestors may offer:
/// - alice/secret: user "alice", echo and store;
/// - the username "carol" alone: user "carol", nothing (her C-ECHO is refused);
/// - the JWT "aaa.bbb.ccc": user "dave", echo, with a Server Response of "jwt-ok";
/// - the username "anonymous": no user (the identity is not taken up), echo and store;
/// - anything else is refused.
#[derive(Default)]
struct Users {
    offers: Mutex<Vec<Option<IdentityOffer>>>,
    stores: Mutex<Vec<Option<String>>>,
}

fn grant(user: Option<&str>, operations: &[Operation], response: &[u8]) -> AssociationGrant {
    AssociationGrant {
        user: user.map(String::from),
        operations: operations.to_vec(),
        server_response: response.to_vec(),
    }
}

#[async_trait::async_trait]
impl DimseService for Users {
    async fn authorize_association(
        &self,
        peer: &AssociationPeer,
        offer: Option<&IdentityOffer>,
    ) -> Result<AssociationGrant, AssociationRefusal> {
        assert_eq!(peer.called_ae_title, "PACS");
        self.offers.lock().unwrap().push(offer.cloned());
        // an await point, as a real identity check has
        tokio::task::yield_now().await;
        let Some(offer) = offer else {
            return Ok(grant(None, &[Operation::Echo, Operation::Store], b""));
        };
        match &offer.identity {
            OfferedIdentity::UsernamePasscode { username, passcode }
                if username == "alice" && passcode == "secret" =>
            {
                Ok(grant(
                    Some("alice"),
                    &[Operation::Echo, Operation::Store],
                    b"",
                ))
            }
            OfferedIdentity::Username(u) if u == "carol" => Ok(grant(Some("carol"), &[], b"")),
            OfferedIdentity::Username(u)
            | OfferedIdentity::UsernamePasscode { username: u, .. }
                if u == "anonymous" =>
            {
                Ok(grant(None, &[Operation::Echo, Operation::Store], b""))
            }
            OfferedIdentity::Jwt(token) if token == "aaa.bbb.ccc" => {
                Ok(grant(Some("dave"), &[Operation::Echo], b"jwt-ok"))
            }
            _ => Err(AssociationRefusal::AuthenticationFailed),
        }
    }

    async fn store(&self, request: StoreRequest) -> StoreOutcome {
        self.stores.lock().unwrap().push(request.user);
        StoreOutcome::success()
    }

    async fn find(&self, _request: FindRequest) -> FindOutcome {
        FindOutcome::Matches(Vec::new())
    }

    async fn retrieve(&self, _request: RetrieveRequest) -> RetrieveOutcome {
        RetrieveOutcome::Instances(Vec::new())
    }

    fn move_destination(&self, _ae_title: &str) -> Option<RemoteAe> {
        None
    }

    fn instance_source(&self) -> Arc<dyn InstanceSource> {
        Arc::new(NoInstances)
    }
}

struct NoInstances;

#[async_trait::async_trait]
impl InstanceSource for NoInstances {
    fn transfer_syntaxes(&self, _instance: &OutgoingInstance) -> Vec<String> {
        Vec::new()
    }

    async fn load(
        &self,
        _instance: &OutgoingInstance,
        _transfer_syntax_uid: &str,
    ) -> Result<bytes::Bytes, String> {
        Err("no instances here".into())
    }
}

/// A DIMSE front-end "PACS" on a free port, serving until the runtime ends.
async fn start(users: Arc<Users>, spill: &Path) -> u16 {
    let config = DimseConfig {
        ae_title: "PACS".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        max_pdu_length: 65536,
        max_associations: 8,
        idle_timeout: Duration::from_secs(30),
        artim_timeout: Duration::from_secs(10),
        spill_threshold: 1 << 20,
        spill_dir: spill.to_path_buf(),
        spill_min_free_bytes: 0,
        move_associations: 1,
        plain: true,
        tls: None,
        tls_client: None,
        max_associations_per_host: 8,
        max_instance_bytes: u64::MAX,
    };
    let server = DimseServer::bind(config, users).await.unwrap();
    let port = server.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        server.serve(rx, Duration::from_secs(1)).await;
        drop(tx);
    });
    port
}

/// Runs a requestor to the end (off the runtime's threads) and returns its output.
async fn run(mut command: Command) -> std::process::Output {
    let shown = format!("{command:?}");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// tests/peers/user_identity.py: offers an identity, echoes when accepted; its JSON.
async fn pynetdicom(port: u16, kind: u8, primary: &str, secondary: &str, positive: bool) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/user_identity.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(port.to_string()).args([
        kind.to_string().as_str(),
        primary,
        secondary,
        if positive { "1" } else { "0" },
    ]);
    let out = run(command).await;
    assert!(
        out.status.success(),
        "python3 with pynetdicom is needed (python3 -m pip install pynetdicom): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn last_offer(users: &Users) -> Option<IdentityOffer> {
    users.offers.lock().unwrap().last().cloned().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_identities_get_the_standard_answers() {
    let spill = tempfile::tempdir().unwrap();
    let users = Arc::new(Users::default());
    let port = start(users.clone(), spill.path()).await;

    // username and passcode, positive response requested: an A-ASSOCIATE-AC with a User
    // Identity sub-item whose Server Response is empty
    let v = pynetdicom(port, 2, "alice", "secret", true).await;
    assert_eq!(v["established"], true, "{v}");
    assert_eq!(v["server_response"], "", "{v}");
    assert_eq!(v["echo"], 0, "{v}");
    assert_eq!(
        last_offer(&users),
        Some(IdentityOffer {
            identity: OfferedIdentity::UsernamePasscode {
                username: "alice".into(),
                passcode: "secret".into()
            },
            positive_response_requested: true,
        })
    );

    // a refused identity: rejected-permanent (1), source ACSE service-provider (2), reason 1
    let v = pynetdicom(port, 2, "alice", "wrong", true).await;
    assert_eq!(v["rejected"], true, "{v}");
    assert_eq!(
        (&v["result"], &v["source"], &v["reason"]),
        (&Value::from(1), &Value::from(2), &Value::from(1)),
        "{v}"
    );

    // a username alone, no positive response asked for: no User Identity sub-item in the AC;
    // and the grant decides what the association may do (carol may not even echo: 0124)
    let v = pynetdicom(port, 1, "carol", "", false).await;
    assert_eq!(v["established"], true, "{v}");
    assert_eq!(v["server_response"], Value::Null, "{v}");
    assert_eq!(v["echo"], 0x0124, "{v}");
    assert_eq!(
        last_offer(&users).map(|o| (o.identity, o.positive_response_requested)),
        Some((OfferedIdentity::Username("carol".into()), false))
    );

    // a JWT (type 5) with a positive response: the grant's Server Response goes back
    let v = pynetdicom(port, 5, "aaa.bbb.ccc", "", true).await;
    assert_eq!(v["established"], true, "{v}");
    assert_eq!(v["server_response"], hex(b"jwt-ok"), "{v}");
    assert_eq!(v["echo"], 0, "{v}");
    assert_eq!(
        last_offer(&users).map(|o| o.identity),
        Some(OfferedIdentity::Jwt("aaa.bbb.ccc".into()))
    );

    // an accepted association whose identity was not taken up (no user): no positive response
    let v = pynetdicom(port, 1, "anonymous", "", true).await;
    assert_eq!(v["established"], true, "{v}");
    assert_eq!(v["server_response"], Value::Null, "{v}");

    // Kerberos (3) and SAML (4) reach the service as unsupported types; here they are refused
    for kind in [3u8, 4] {
        let v = pynetdicom(port, kind, "opaque-ticket", "", false).await;
        assert_eq!(v["rejected"], true, "{v}");
        assert_eq!((&v["source"], &v["reason"]), (&2.into(), &1.into()), "{v}");
        assert_eq!(
            last_offer(&users).map(|o| o.identity),
            Some(OfferedIdentity::Unsupported(kind))
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// DCMTK's storescu, from /usr/bin (pynetdicom installs a look-alike storescu on PATH).
fn storescu(port: u16, args: &[&str], file: &Path) -> Command {
    let tool =
        PathBuf::from(std::env::var_os("DCMTK_BIN").unwrap_or("/usr/bin".into())).join("storescu");
    assert!(
        tool.exists(),
        "DCMTK's storescu not found at {}: apt-get install -y dcmtk",
        tool.display()
    );
    let mut command = Command::new(tool);
    command
        .env("TCP_NODELAY", "1")
        .args(["-aet", "DCMTKSCU", "-aec", "PACS"])
        .args(args)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(file);
    command
}

/// A small CT Image Storage object in Explicit VR Little Endian.
fn ct_file(dir: &Path) -> PathBuf {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    let sop = "1.2.826.0.1.3680043.8.498.77";
    let obj = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::CT_IMAGE_STORAGE),
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop)),
        DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("USER^IDENTITY"),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")),
    ]);
    let file = obj
        .with_meta(
            dicom_object::meta::FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop)
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .unwrap();
    let path = dir.join("ct.dcm");
    file.write_to_file(&path).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_storescu_needs_the_positive_response_it_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let users = Arc::new(Users::default());
    let port = start(users.clone(), dir.path()).await;
    let file = ct_file(dir.path());
    let identity = |user: &'static str, password: &'static str| {
        ["--user", user, "--password", password, "--pos-response"]
    };

    // accepted, with the User Identity sub-item: the store goes through, as alice
    let out = run(storescu(port, &identity("alice", "secret"), &file)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        users.stores.lock().unwrap().as_slice(),
        [Some("alice".to_string())]
    );

    // accepted, but the identity was not taken up: no User Identity sub-item, and storescu,
    // which asked for a positive response, gives up without storing
    let out = run(storescu(port, &identity("anonymous", "x"), &file)).await;
    assert!(
        !out.status.success(),
        "storescu stored without a positive response"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Positive response requested but none received"),
        "{text}"
    );
    assert_eq!(
        last_offer(&users).map(|o| o.positive_response_requested),
        Some(true)
    );
    // refused
    let out = run(storescu(port, &identity("alice", "wrong"), &file)).await;
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_lowercase()
        + &String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("reject"), "{text}");
    assert_eq!(users.stores.lock().unwrap().len(), 1);

    // the same refusals do not concern a requestor that offers no identity
    let out = run(storescu(port, &[], &file)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(users.stores.lock().unwrap().last(), Some(&None));
}
