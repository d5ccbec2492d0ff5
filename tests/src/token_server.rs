//! A registry token server for tests: the "token" auth of docker-registry
//! (the Docker Registry v2 bearer-token scheme) needs an authorization
//! service that authenticates the client and issues a signed JWT; this is a
//! small one, with fixed users, refresh tokens and public repositories.
//!
//! * `GET <realm>?service=..&scope=repository:<name>:pull` with optional
//!   Basic credentials: wrong credentials get 401; right ones get every
//!   action asked for; anonymous clients get `pull` on public repositories
//!   only (and a token with no access elsewhere, which the registry then
//!   refuses, as Docker Hub does).
//! * `POST <realm>` with the OAuth2 form `grant_type=refresh_token`: a known
//!   refresh token (a CRI `identity_token`) gets its user's access.
//!
//! Tokens are RS256 JWTs whose header carries the signing certificate in
//! `x5c`; docker-registry verifies that chain against its `rootcertbundle`
//! and checks `iss`, `aud`, `exp`/`nbf` and the `access` claim.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// Signs JWTs with an RSA key, naming its certificate in `x5c`.
pub struct Signer {
    key: RsaKeyPair,
    /// Standard base64 of the certificate's DER (the PEM body).
    x5c: String,
}

impl Signer {
    /// From a PKCS#8 DER key and its PEM certificate.
    pub fn new(pkcs8_der: &[u8], cert_pem: &str) -> Self {
        let key = RsaKeyPair::from_pkcs8(pkcs8_der).expect("test RSA key");
        let x5c: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        Signer { key, x5c }
    }

    /// A compact JWS over `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            b64.encode(header.to_string()),
            b64.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RS256 signature");
        format!("{input}.{}", b64.encode(sig))
    }
}

/// The claims docker-registry checks: issuer, audience (the registry's
/// `service`), a 5-minute validity and the granted `access`.
pub fn claims(
    issuer: &str,
    service: &str,
    subject: &str,
    access: &[(String, Vec<String>)],
) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<_> = access
        .iter()
        .map(|(name, actions)| serde_json::json!({"type": "repository", "name": name, "actions": actions}))
        .collect();
    serde_json::json!({
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("berth-{now}-{}", JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        "access": access,
    })
}

static JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Who may have what.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// username → password.
    pub users: HashMap<String, String>,
    /// refresh token → username.
    pub refresh_tokens: HashMap<String, String>,
    /// Repositories anonymous clients may pull (`library/busybox`).
    pub public_repos: Vec<String>,
}

/// One request the server answered, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET` or `POST`.
    pub method: String,
    /// The authenticated user ("" for anonymous), or the refused one.
    pub user: String,
    /// How the client authenticated: `anonymous`, `basic`, `refresh_token`.
    pub via: String,
    /// The HTTP status answered.
    pub status: u16,
    /// The scopes asked for.
    pub scopes: Vec<String>,
}

struct State {
    signer: Signer,
    issuer: String,
    service: String,
    policy: Policy,
    seen: Mutex<Vec<Seen>>,
}

/// A running token server on loopback; stopped on drop.
pub struct TokenServer {
    /// The URL to put in the registry's `auth.token.realm`.
    pub realm: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    /// Starts serving on a free loopback port, on a thread of its own (so it
    /// answers whatever runtime, if any, the test uses).
    pub fn start(signer: Signer, issuer: &str, service: &str, policy: Policy) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token server");
        std_listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = std_listener.local_addr().unwrap();
        let state = Arc::new(State {
            signer,
            issuer: issuer.into(),
            service: service.into(),
            policy,
            seen: Mutex::new(Vec::new()),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let conn = tokio::select! {
                        _ = &mut stopped => return,
                        c = listener.accept() => c,
                    };
                    let Ok((stream, _)) = conn else { continue };
                    let state = served.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The requests answered so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// A token as this server would issue it for `subject` and `access`.
    pub fn mint(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        self.state
            .signer
            .sign(&claims(&self.state.issuer, &self.state.service, subject, access))
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// `Basic base64(user:pass)` → (user, pass).
fn basic(req: &Request<Incoming>) -> Option<(String, String)> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    let b64 = h.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let creds = basic(&req);
    let mut params = form(&query);
    if method == "POST" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        params.extend(form(&String::from_utf8_lossy(&body)));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let p = &state.policy;
    // Who is asking: Some(user) authenticated, None anonymous, Err refused.
    let (who, via): (Result<Option<String>, String>, &str) = if method == "POST" {
        let user = (get("grant_type").as_deref() == Some("refresh_token"))
            .then(|| get("refresh_token"))
            .flatten()
            .and_then(|t| p.refresh_tokens.get(&t).cloned());
        (user.map(Some).ok_or_else(String::new), "refresh_token")
    } else if let Some((u, pw)) = creds {
        let ok = p.users.get(&u) == Some(&pw);
        (if ok { Ok(Some(u)) } else { Err(u) }, "basic")
    } else {
        (Ok(None), "anonymous")
    };
    let wrong_service = get("service").is_some_and(|s| s != state.service);
    let (status, body) = match (&who, wrong_service) {
        (_, true) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}),
        ),
        (Err(_), _) => (
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication failed"}]}),
        ),
        (Ok(user), _) => {
            let mut access = Vec::new();
            for s in &scopes {
                let mut parts = s.splitn(3, ':');
                let (Some("repository"), Some(name), Some(actions)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let granted: Vec<String> = actions
                    .split(',')
                    .filter(|a| user.is_some() || (*a == "pull" && p.public_repos.iter().any(|r| r == name)))
                    .map(str::to_string)
                    .collect();
                if !granted.is_empty() {
                    access.push((name.to_string(), granted));
                }
            }
            let subject = user.clone().unwrap_or_default();
            let token = state
                .signer
                .sign(&claims(&state.issuer, &state.service, &subject, &access));
            (
                StatusCode::OK,
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300}),
            )
        }
    };
    state.seen.lock().unwrap().push(Seen {
        method,
        user: match &who {
            Ok(u) => u.clone().unwrap_or_default(),
            Err(u) => u.clone(),
        },
        via: via.into(),
        status: status.as_u16(),
        scopes,
    });
    json(status, body)
}
