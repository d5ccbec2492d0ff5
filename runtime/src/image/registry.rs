//! A small OCI distribution client: manifests and blobs over HTTP(S), with
//! the registry auth flows: anonymous and credentialed bearer tokens (basic
//! auth or an OAuth2 refresh token at the token endpoint), a bearer token
//! given by the client, and HTTP basic auth.
//!
//! Blocking (ureq) on purpose: pulls run on tokio's blocking pool, and a
//! blocking client keeps the streaming-hash-to-disk code straightforward.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::auth::Credentials;
use super::reference::Reference;
use super::Digest;
use crate::error::{Error, Result};

/// Media types we accept for manifests, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How often a long download logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Largest manifest or config we read into memory.
const MAX_DOC_BYTES: u64 = 8 * 1024 * 1024;

/// A registry session for one repository. Cloned for parallel layer
/// downloads: the clones share the connection pool and the token.
#[derive(Clone)]
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    repository: String,
    creds: Credentials,
    /// The `Authorization` header value in use (after a challenge).
    auth: Option<String>,
    /// Whole-request deadline for a manifest, config or token response.
    document_deadline: Duration,
}

/// What a request fetches: it decides the deadline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// A manifest, index, config or token (at most [`MAX_DOC_BYTES`]):
    /// bounded as a whole, so a registry that trickles one byte per idle
    /// period cannot hold the pull (and the image's gate) for ever.
    Document,
    /// A layer blob: bounded by progress (the idle timeout), however long
    /// a large layer on a slow link takes.
    Layer,
}

/// A manifest as fetched.
#[derive(Debug)]
pub struct FetchedManifest {
    /// Raw bytes (the digest is over these).
    pub bytes: Vec<u8>,
    /// `sha256:...` of the bytes.
    pub digest: Digest,
    /// Content-Type the registry sent (or the document's mediaType).
    pub media_type: String,
}

impl Registry {
    /// A session with one endpoint (a mirror or the registry) for `r`'s
    /// repository; connects lazily.
    pub fn new(
        r: &Reference,
        endpoint: &super::hosts::Endpoint,
        agent: ureq::Agent,
        creds: Credentials,
        timeouts: &super::hosts::Timeouts,
    ) -> Self {
        Registry {
            agent,
            document_deadline: timeouts.document_deadline(),
            base: endpoint.base.clone(),
            repository: r.repository.clone(),
            auth: match &creds {
                Credentials::RegistryToken(t) => Some(format!("Bearer {t}")),
                _ => None,
            },
            creds,
        }
    }

    fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
        fetch: Fetch,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if fetch == Fetch::Document {
                req = req.config().timeout_global(Some(self.document_deadline)).build();
            }
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(h) = &self.auth {
                req = req.header("Authorization", h);
            }
            let resp = req.call().map_err(|e| Error::Image(format!("GET {url}: {e}")))?;
            if resp.status() != 401 {
                return Ok(resp);
            }
            self.check_challenger(url, &resp)?;
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if attempt > 0 || matches!(self.creds, Credentials::RegistryToken(_)) {
                return Err(Error::Unauthenticated(format!(
                    "{url}: the registry refused {} (challenge {challenge:?})",
                    match self.creds {
                        Credentials::None => "anonymous access",
                        _ => "the credentials",
                    }
                )));
            }
            self.auth = Some(self.answer(&challenge)?);
        }
        Err(Error::Unauthenticated(format!("GET {url}: unauthorized")))
    }

    /// A 401 is answered with the registry's credentials only when the
    /// registry itself sent it: after a redirect (blobs go to storage on
    /// other hosts) the challenge is the other host's, and its token realm
    /// could be anyone.
    fn check_challenger(&self, url: &str, resp: &ureq::http::Response<ureq::Body>) -> Result<()> {
        use ureq::ResponseExt;
        let from = resp
            .get_uri()
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let own = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, a)| a)
            .to_ascii_lowercase();
        if from == own {
            return Ok(());
        }
        Err(Error::Unauthenticated(format!(
            "{url}: {from}, where the registry redirected, asks for credentials; the registry's are not sent there"
        )))
    }

    /// The `Authorization` header that answers a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str) -> Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return self.creds.basic_header().ok_or_else(|| {
                Error::Unauthenticated(format!(
                    "{} needs a username and password (challenge {challenge:?})",
                    self.base
                ))
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(format!("Bearer {}", self.fetch_token(params)?));
        }
        Err(Error::Unauthenticated(format!(
            "registry asks for unsupported auth: {challenge:?}"
        )))
    }

    /// Credentials cross plain http only to the registry's own host (an
    /// operator-configured insecure registry): a challenge naming an http
    /// realm elsewhere would send them readable to whoever is on the path.
    fn check_realm(&self, realm: &str) -> Result<()> {
        if matches!(self.creds, Credentials::None) || !realm.starts_with("http://") {
            return Ok(());
        }
        let hostname = |url: &str| -> String {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let authority = rest.split('/').next().unwrap_or_default();
            let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default().to_ascii_lowercase(),
                None => authority
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            }
        };
        if self.base.starts_with("http://") && hostname(&self.base) == hostname(realm) {
            return Ok(());
        }
        Err(Error::Unauthenticated(format!(
            "{}: token realm {realm:?} is plain http on another host; credentials are not sent there",
            self.base
        )))
    }

    /// Bearer-token flow (`Bearer realm=..,service=..,scope=..`): GET with
    /// basic credentials (or none), or the OAuth2 POST with a refresh token.
    fn fetch_token(&self, params: &str) -> Result<String> {
        let mut realm = None;
        let mut fields: Vec<(String, String)> = Vec::new();
        for part in split_challenge(params) {
            if let Some((k, v)) = part.split_once('=') {
                let v = v.trim_matches('"');
                match k.trim() {
                    "realm" => realm = Some(v.to_string()),
                    k => fields.push((k.to_string(), v.to_string())),
                }
            }
        }
        if !fields.iter().any(|(k, _)| k == "scope") {
            fields.push(("scope".into(), format!("repository:{}:pull", self.repository)));
        }
        let realm = realm.ok_or_else(|| Error::Image("token challenge without realm".into()))?;
        self.check_realm(&realm)?;
        let mut resp = if let Credentials::IdentityToken(refresh) = &self.creds {
            let mut form: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            form.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("client_id", "berth"),
            ]);
            self.agent
                .post(&realm)
                .config()
                .timeout_global(Some(self.document_deadline))
                .build()
                .send_form(form)
        } else {
            let query: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let url = format!("{realm}?{}", query.join("&"));
            let mut req = self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(self.document_deadline))
                .build();
            if let Some(h) = self.creds.basic_header() {
                req = req.header("Authorization", &h);
            }
            req.call()
        }
        .map_err(|e| Error::Image(format!("token {realm}: {e}")))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => {
                return Err(Error::Unauthenticated(format!(
                    "token {realm}: HTTP {} for {:?}",
                    resp.status(),
                    self.creds
                )))
            }
            s => return Err(Error::Image(format!("token {realm}: HTTP {s}"))),
        }
        let body: serde_json::Value = serde_json::from_slice(
            &resp
                .body_mut()
                .with_config()
                .limit(MAX_DOC_BYTES)
                .read_to_vec()
                .map_err(|e| Error::Image(e.to_string()))?,
        )
        .map_err(|e| Error::Image(format!("token response: {e}")))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Image("token response has no token".into()))
    }

    /// Fetches a manifest or index by tag or digest; verifies a digest reference.
    pub fn manifest(&mut self, reference: &str) -> Result<FetchedManifest> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let mut resp = self.get(&url, Some(MANIFEST_ACCEPT), Fetch::Document)?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(Error::NotFound(format!(
                    "image manifest {}:{reference}",
                    self.repository
                )))
            }
            s => return Err(Error::Image(format!("GET {url}: HTTP {s}"))),
        }
        let header_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOC_BYTES)
            .read_to_vec()
            .map_err(|e| Error::Image(format!("read manifest: {e}")))?;
        let digest = Digest::of(&bytes);
        if reference.starts_with("sha256:") && digest != *reference {
            return Err(Error::Image(format!(
                "manifest digest mismatch: asked {reference}, got {digest}"
            )));
        }
        let doc_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string));
        Ok(FetchedManifest {
            media_type: doc_type.unwrap_or(header_type),
            bytes,
            digest,
        })
    }

    /// Fetches a small blob (a config) into memory, verified.
    pub fn blob_bytes(&mut self, digest: &Digest) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        let mut resp = self.get(&url, None, Fetch::Document)?;
        if resp.status() != 200 {
            return Err(Error::Image(format!("GET {url}: HTTP {}", resp.status())));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOC_BYTES)
            .read_to_vec()
            .map_err(|e| Error::Image(format!("read blob {digest}: {e}")))?;
        let got = Digest::of(&bytes);
        if got != *digest {
            return Err(Error::Image(format!(
                "blob digest mismatch: expected {digest}, got {got}"
            )));
        }
        Ok(bytes)
    }

    /// Streams a blob to `dest` (via a temp file of its own, so concurrent
    /// pulls never share one), verifying size and digest before the final
    /// rename, so a bad or partial blob is never in use. Logs progress on
    /// long downloads; stops (leaving nothing) once `stop` says so.
    pub fn blob_to_file(
        &mut self,
        digest: &Digest,
        size: u64,
        dest: &Path,
        stop: &dyn Fn() -> bool,
    ) -> Result<()> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        let mut resp = self.get(&url, None, Fetch::Layer)?;
        if resp.status() != 200 {
            return Err(Error::Image(format!("GET {url}: HTTP {}", resp.status())));
        }
        let tmp = PathBuf::from(format!("{}.{}.partial", dest.display(), crate::store::new_id()));
        let result = (|| {
            let mut out =
                std::fs::File::create(&tmp).map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            let mut hasher = Sha256::new();
            let mut reader = resp
                .body_mut()
                .with_config()
                .limit(size.saturating_add(1))
                .reader();
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            let started = Instant::now();
            let mut last_report = started;
            loop {
                if stop() {
                    return Err(Error::Image(format!("pull cancelled while downloading {digest}")));
                }
                let n = reader
                    .read(&mut buf)
                    .map_err(|e| Error::Image(format!("download {digest}: {e}")))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(
                        layer = %digest,
                        bytes = total,
                        of = size,
                        mib_per_s = format!("{:.1}", total as f64 / secs / 1048576.0),
                        "downloading"
                    );
                }
            }
            let got = Digest::from_hasher(hasher);
            if total != size || got != *digest {
                return Err(Error::Image(format!(
                    "blob {digest}: expected {size} bytes with that digest, got {total} bytes with {got}"
                )));
            }
            out.sync_all().map_err(|e| Error::io("fsync blob", e))?;
            std::fs::rename(&tmp, dest).map_err(|e| Error::io(format!("rename to {}", dest.display()), e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Splits `a="x,y",b=z` on commas outside quotes.
fn split_challenge(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A token realm over plain http on another host than the registry
    /// never receives basic credentials: the pull is refused instead.
    #[test]
    fn basic_credentials_never_go_to_an_http_realm_elsewhere() {
        let body = r#"{"token":"t"}"#;
        let (port, rx) = recording_server(move |_| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        });
        let reg = Registry {
            agent: ureq::Agent::new_with_defaults(),
            base: "https://registry.example".into(),
            repository: "lib/app".into(),
            creds: Credentials::Basic {
                username: "u".into(),
                password: "secret".into(),
            },
            auth: None,
            document_deadline: Duration::from_secs(60),
        };
        let got = reg.fetch_token(&format!("realm=\"http://127.0.0.1:{port}/token\",service=\"x\""));
        let e = got.expect_err("basic credentials offered to an http realm");
        assert!(matches!(e, Error::Unauthenticated(_)), "{e}");
        if let Ok(req) = rx.try_recv() {
            assert!(!req.contains("authorization"), "credentials leaked: {req}");
        }
        // An insecure registry the operator named, with its realm on the
        // same host, still gets its credentials.
        let same = Registry {
            base: "http://127.0.0.1:5000".into(),
            ..reg
        };
        let realm = format!("realm=\"http://127.0.0.1:{port}/token\"");
        assert_eq!(same.fetch_token(&realm).unwrap(), "t");
        assert!(rx.recv().unwrap().contains("authorization: basic"));
    }

    /// A loopback server that answers every request with `reply` and
    /// sends the request's lowercased head down the channel.
    pub(in crate::image) fn recording_server(
        reply: impl Fn(u16) -> String + Send + 'static,
    ) -> (u16, std::sync::mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        berth_sys::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { continue };
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap_or(0);
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).to_lowercase());
                let _ = c.write_all(reply(port).as_bytes());
            }
        });
        (port, rx)
    }

    /// Blob downloads redirect to storage on another host: the registry's
    /// Authorization header must not follow (pinned here; ureq's default
    /// already strips it, so this guards the agent's configuration).
    #[test]
    fn a_redirect_to_another_host_carries_no_authorization() {
        let (store, seen) = recording_server(|_| {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".into()
        });
        let (reg_port, reg_seen) = recording_server(move |_| {
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://localhost:{store}/blob\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        });
        let host = format!("127.0.0.1:{reg_port}");
        let agent = super::super::hosts::agent(
            &super::super::hosts::Hosts::default(),
            &host,
            &super::super::hosts::Timeouts::default(),
        )
        .unwrap();
        let mut reg = Registry {
            agent,
            base: format!("http://{host}"),
            repository: "lib/app".into(),
            creds: Credentials::None,
            auth: Some("Bearer registry-secret".into()),
            document_deadline: Duration::from_secs(60),
        };
        let resp = reg
            .get(&format!("http://{host}/v2/lib/app/blobs/x"), None, Fetch::Layer)
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(reg_seen
            .recv()
            .unwrap()
            .contains("authorization: bearer registry-secret"));
        let req = seen.recv().unwrap();
        assert!(req.starts_with("get /blob"), "{req}");
        assert!(
            !req.contains("authorization"),
            "token followed the redirect: {req}"
        );
    }

    #[test]
    fn splits_token_challenges() {
        let parts = split_challenge(
            r#"realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], r#"scope="repository:a/b:pull,push""#);
    }
}
