//! A hostile registry for host tests: it serves what a real registry would
//! refuse to (digests that are paths, blobs that do not match their digest
//! or their size, bodies that never end, requests never answered, redirects
//! to another host, a token realm over plain http, an index that points at
//! an index) and records every request it gets, with its `Authorization`,
//! so a test can say where credentials went.
//!
//! It listens on loopback on a kernel-assigned port that it keeps bound
//! until dropped. The same server answers as `127.0.0.1:<port>` (the
//! registry) and as `localhost:<port>`, which Berth sees as another host:
//! the target of a redirect or a token realm "elsewhere".
//!
//! One request per connection (`connection: close`), one thread each: a
//! connection held open forever costs a sleeping thread, and stops with
//! the server.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::digest::{digest, SHA256};

/// The OCI media types the builders use.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// How a path is answered.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this content type and body, and its true Content-Length.
    Body {
        /// Content-Type header.
        content_type: String,
        /// The body.
        body: Arc<Vec<u8>>,
    },
    /// 200 whose Content-Length says `declared`; sends `body`, then closes.
    LyingLength {
        /// The Content-Length header's value.
        declared: u64,
        /// What is really sent.
        body: Arc<Vec<u8>>,
    },
    /// 200 without a length, then zeros as fast as the client reads, forever.
    Endless,
    /// 200 without a length, then one space every 100 ms, forever: always
    /// some progress, so no idle timeout fires.
    Dribble,
    /// Reads the request and never answers (the connection stays open).
    Silent,
    /// 307 to this URL.
    Redirect(String),
    /// 401 with this `WWW-Authenticate` challenge.
    Challenge(String),
}

/// One request the server got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The `Host` header (`127.0.0.1:<port>` or `localhost:<port>`).
    pub host: String,
    /// The request target (path and query).
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// When set, a `/v2/` request without `Authorization` gets 401 with
    /// this challenge (the registry wants credentials).
    challenge: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// A running hostile registry; stops (and releases its port) on drop.
pub struct HostileRegistry {
    /// `127.0.0.1:<port>`: the registry's host (speaking https when
    /// started by [`HostileRegistry::start_tls`]).
    pub addr: String,
    /// `localhost:<port>`: the same server as another host.
    pub other_host: String,
    state: Arc<State>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// A blob: its digest, size and bytes.
#[derive(Clone)]
pub struct Blob {
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// The bytes.
    pub bytes: Arc<Vec<u8>>,
}

impl Blob {
    /// A blob of these bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Blob {
            digest: sha256(&bytes),
            bytes: Arc::new(bytes),
        }
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    let d = digest(&SHA256, data);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A descriptor (`mediaType`, `digest`, `size`).
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// An OCI image manifest of these config and layer descriptors.
pub fn manifest(config: serde_json::Value, layers: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers})
}

/// An OCI index with one linux/amd64 entry.
pub fn index_of(entry_media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    let mut entry = descriptor(entry_media_type, digest, size);
    entry["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
}

/// The seeded test registry's `busybox:latest`: its config and its one
/// layer, as real blobs (a valid image to build hostile ones from).
pub fn busybox() -> (Blob, Blob) {
    let storage = super::registry::seeded_storage();
    let read = |d: &str| {
        let hex = d.trim_start_matches("sha256:");
        let p = storage.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let m: serde_json::Value =
        serde_json::from_slice(&read(&super::registry::tag_digest("busybox", "latest")))
            .expect("busybox manifest");
    let config = m["config"]["digest"].as_str().expect("config digest");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "busybox has one layer");
    let layer = layers[0]["digest"].as_str().expect("layer digest");
    (Blob::new(read(config)), Blob::new(read(layer)))
}

impl HostileRegistry {
    /// Starts serving plain http on a free loopback port, with no routes (404s).
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Serves https with this certificate (PEM) and PKCS#8 DER key; Berth
    /// must be told to skip verification (`skip_verify`) for its host.
    pub fn start_tls(cert_pem: &str, key_pkcs8_der: &[u8]) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("TLS certificate and key");
        Self::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hostile registry");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let served = state.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if served.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (state, tls) = (served.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(&state, conn),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(&state, rustls::StreamOwned::new(session, conn));
                    }
                });
            }
        });
        HostileRegistry {
            addr: format!("127.0.0.1:{port}"),
            other_host: format!("localhost:{port}"),
            state,
            accept: Some(accept),
        }
    }

    /// Answers GETs of `path` with `reply`.
    pub fn route(&self, path: &str, reply: Reply) {
        self.state.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    /// Serves `doc` as `repo`'s manifest `reference` (tag or digest), with
    /// its `mediaType` as Content-Type; returns the document's digest.
    pub fn manifest(&self, repo: &str, reference: &str, doc: &serde_json::Value) -> String {
        let body = serde_json::to_vec(doc).unwrap();
        let digest = sha256(&body);
        let content_type = doc["mediaType"]
            .as_str()
            .unwrap_or("application/json")
            .to_string();
        self.route(
            &format!("/v2/{repo}/manifests/{reference}"),
            Reply::Body {
                content_type,
                body: Arc::new(body),
            },
        );
        digest
    }

    /// Serves `doc` under its tag and under its own digest; returns the digest.
    pub fn manifest_tagged(&self, repo: &str, tag: &str, doc: &serde_json::Value) -> String {
        let digest = self.manifest(repo, tag, doc);
        self.manifest(repo, &digest, doc);
        digest
    }

    /// Answers `repo`'s blob `digest` with `reply`.
    pub fn blob(&self, repo: &str, digest: &str, reply: Reply) {
        self.route(&format!("/v2/{repo}/blobs/{digest}"), reply);
    }

    /// Serves `blob` truthfully as one of `repo`'s blobs.
    pub fn blob_ok(&self, repo: &str, blob: &Blob) {
        self.blob(
            repo,
            &blob.digest,
            Reply::Body {
                content_type: "application/octet-stream".into(),
                body: blob.bytes.clone(),
            },
        );
    }

    /// Serves busybox, intact, as `repo:latest`; returns `addr/repo:latest`.
    pub fn serve_busybox(&self, repo: &str) -> String {
        let (config, layer) = busybox();
        self.blob_ok(repo, &config);
        self.blob_ok(repo, &layer);
        let m = manifest(
            descriptor(OCI_CONFIG, &config.digest, config.size()),
            vec![descriptor(OCI_LAYER_GZIP, &layer.digest, layer.size())],
        );
        self.manifest_tagged(repo, "latest", &m);
        format!("{}/{repo}:latest", self.addr)
    }

    /// From now on `/v2/` requests without `Authorization` get 401 with
    /// `challenge`; `None` serves them anonymously again.
    pub fn require_auth(&self, challenge: Option<&str>) {
        *self.state.challenge.lock().unwrap() = challenge.map(str::to_string);
    }

    /// The requests so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        self.state.seen.lock().unwrap().clear();
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The request head, at most 64 KiB; `None` if the peer went away first.
fn read_head(conn: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn serve(state: &State, mut conn: impl Read + Write) {
    let Some(head) = read_head(&mut conn) else { return };
    let path = head
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default()
        .to_string();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let seen = Seen {
        host: header("host").unwrap_or_default(),
        path: path.clone(),
        authorization: header("authorization"),
    };
    let authorized = seen.authorization.is_some();
    state.seen.lock().unwrap().push(seen);
    let challenge = state.challenge.lock().unwrap().clone();
    let reply = match challenge {
        Some(c) if path.starts_with("/v2/") && !authorized => Some(Reply::Challenge(c)),
        // Routes are paths; a query (a token request's scope) is ignored.
        _ => {
            let route = path.split('?').next().unwrap_or_default();
            state.routes.lock().unwrap().get(route).cloned()
        }
    };
    let stopped = || state.stop.load(Ordering::SeqCst);
    let head_of =
        |status: &str, extra: &str| format!("HTTP/1.1 {status}\r\n{extra}connection: close\r\n\r\n");
    let _ = match reply {
        None => conn
            .write_all(
                head_of(
                    "404 Not Found",
                    "content-type: application/json\r\ncontent-length: 2\r\n",
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(b"{}")),
        Some(Reply::Body { content_type, body }) => conn
            .write_all(
                head_of(
                    "200 OK",
                    &format!(
                        "content-type: {content_type}\r\ncontent-length: {}\r\n",
                        body.len()
                    ),
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(&body)),
        Some(Reply::LyingLength { declared, body }) => conn
            .write_all(
                head_of(
                    "200 OK",
                    &format!("content-type: application/octet-stream\r\ncontent-length: {declared}\r\n"),
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(&body)),
        Some(Reply::Endless) => {
            let zeros = vec![0u8; 64 * 1024];
            conn.write_all(head_of("200 OK", "content-type: application/octet-stream\r\n").as_bytes())
                .and_then(|()| {
                    while !stopped() {
                        conn.write_all(&zeros)?;
                    }
                    Ok(())
                })
        }
        Some(Reply::Dribble) => conn
            .write_all(head_of("200 OK", &format!("content-type: {OCI_MANIFEST}\r\n")).as_bytes())
            .and_then(|()| {
                while !stopped() {
                    conn.write_all(b" ")?;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(())
            }),
        Some(Reply::Silent) => {
            while !stopped() {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
        Some(Reply::Redirect(to)) => conn.write_all(
            head_of(
                "307 Temporary Redirect",
                &format!("location: {to}\r\ncontent-length: 0\r\n"),
            )
            .as_bytes(),
        ),
        Some(Reply::Challenge(c)) => conn
            .write_all(
                head_of(
                    "401 Unauthorized",
                    &format!(
                        "www-authenticate: {c}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
                    ),
                )
                .as_bytes(),
            )
            .and_then(|()| conn.write_all(b"{}")),
    };
    let _ = conn.flush();
}
