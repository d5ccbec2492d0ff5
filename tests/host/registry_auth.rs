//! Registry auth against a real registry: `docker-registry` with `auth:
//! token:` (it verifies each JWT's `x5c` certificate against its
//! `rootcertbundle`, and checks issuer, audience, validity and access) and
//! the test token server (`berth_tests::token_server`). Covers every CRI
//! AuthConfig form: username/password and `auth` through the bearer flow,
//! `identity_token` (an OAuth2 refresh token), `registry_token` (used as
//! is), and the anonymous token flow. Runs as root, like every host test
//! that starts berthd.

use std::collections::HashMap;

use berth_proto::cri;
use berth_tests::registry::RegistryProcess;
use berth_tests::token_server::{claims, Policy, Signer, TokenServer};
use berth_tests::*;

const KEY: &[u8] = include_bytes!("testdata/token.pk8");
const CERT: &str = include_str!("testdata/token.crt");
const UNTRUSTED_KEY: &[u8] = include_bytes!("testdata/untrusted.pk8");
const UNTRUSTED_CERT: &str = include_str!("testdata/untrusted.crt");
const ISSUER: &str = "berth-test-issuer";
const SERVICE: &str = "berth-test-registry";
const REFRESH: &str = "berth-refresh-token";

/// A token server and a registry that trusts it. `library/busybox-uid` is
/// public (anonymous pull); the rest needs `berth` / `berth-pass`.
struct Setup {
    tokens: TokenServer,
    reg: RegistryProcess,
}

impl Setup {
    fn start() -> Self {
        let policy = Policy {
            users: HashMap::from([("berth".into(), "berth-pass".into())]),
            refresh_tokens: HashMap::from([(REFRESH.into(), "berth".into())]),
            public_repos: vec!["library/busybox-uid".into()],
        };
        let tokens = TokenServer::start(Signer::new(KEY, CERT), ISSUER, SERVICE, policy);
        let certs = tempfile::tempdir().unwrap();
        let bundle = certs.path().join("token.crt");
        std::fs::write(&bundle, CERT).unwrap();
        let reg = RegistryProcess::start_with(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            tokens.realm,
            bundle.display()
        ));
        // The registry reads the bundle at start; the dir may go now.
        drop(certs);
        Setup { tokens, reg }
    }

    fn image(&self, name: &str) -> String {
        format!("{}/library/{name}:latest", self.reg.addr)
    }
}

async fn pull(
    c: &mut CriClient,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

fn basic(user: &str, pass: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: user.into(),
        password: pass.into(),
        ..Default::default()
    })
}

fn pull_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:library/{repo}:pull")]
}

/// Username/password (and the `auth` form of them) are sent to the token
/// server, whose token the registry accepts; a wrong password, or none for
/// a private repository, is Unauthenticated and stores nothing.
#[tokio::test]
async fn credentials_are_exchanged_for_a_bearer_token() {
    let s = Setup::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let busybox = s.image("busybox");

    let e = pull(&mut c, &busybox, basic("berth", "not-the-pass"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(
        !e.message().contains("not-the-pass"),
        "no secret in errors: {e:?}"
    );
    let e = pull(&mut c, &busybox, None).await.unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Unauthenticated,
        "anonymous, private repo: {e:?}"
    );
    assert!(c.list_images().await.unwrap().is_empty());
    let seen = s.tokens.seen();
    assert_eq!(
        seen.iter()
            .map(|r| (r.via.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("basic", 401), ("anonymous", 200)],
        "{seen:?}"
    );
    assert_eq!(seen[0].scopes, pull_scope("busybox"), "{seen:?}");

    let id = pull(&mut c, &busybox, basic("berth", "berth-pass"))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nregistry log:\n{}", s.reg.log()));
    assert!(id.starts_with("sha256:"), "{id}");
    let last = s.tokens.seen().pop().unwrap();
    assert_eq!(
        (last.via.as_str(), last.user.as_str(), last.status),
        ("basic", "berth", 200)
    );
    assert_eq!(last.scopes, pull_scope("busybox"));

    // kubelet's docker-config form: auth = base64("berth:berth-pass").
    let b64 = Some(cri::AuthConfig {
        auth: "YmVydGg6YmVydGgtcGFzcw==".into(),
        ..Default::default()
    });
    pull(&mut c, &s.image("busybox-groups"), b64)
        .await
        .expect("pull with auth");
    assert_eq!(
        s.tokens.seen().pop().unwrap().scopes,
        pull_scope("busybox-groups")
    );
    assert_eq!(c.list_images().await.unwrap().len(), 2);
}

/// The anonymous token flow: no credentials, the token server grants pull
/// on a public repository, the registry takes that token.
#[tokio::test]
async fn anonymous_token_flow_for_a_public_repository() {
    let s = Setup::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let id = pull(&mut c, &s.image("busybox-uid"), None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nregistry log:\n{}", s.reg.log()));
    assert!(id.starts_with("sha256:"));
    let seen = s.tokens.seen();
    assert!(!seen.is_empty(), "the registry sent berthd to the token server");
    assert!(
        seen.iter().all(|r| r.via == "anonymous" && r.status == 200),
        "{seen:?}"
    );
}

/// An identity token is an OAuth2 refresh token: POSTed to the token
/// endpoint (grant_type=refresh_token) for an access token. An unknown one
/// is Unauthenticated.
#[tokio::test]
async fn identity_token_is_exchanged_at_the_token_endpoint() {
    let s = Setup::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let identity = |t: &str| {
        Some(cri::AuthConfig {
            username: "berth".into(),
            identity_token: t.into(),
            ..Default::default()
        })
    };
    let e = pull(&mut c, &s.image("busybox"), identity("stale-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    pull(&mut c, &s.image("busybox"), identity(REFRESH))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\nregistry log:\n{}", s.reg.log()));
    let seen = s.tokens.seen();
    assert_eq!(
        seen.iter()
            .map(|r| (r.method.as_str(), r.via.as_str(), r.status))
            .collect::<Vec<_>>(),
        [("POST", "refresh_token", 401), ("POST", "refresh_token", 200)],
        "{seen:?}"
    );
    assert_eq!(seen[1].user, "berth");
    assert_eq!(seen[1].scopes, pull_scope("busybox"));
}

/// A registry token is sent as the bearer token itself, never to the token
/// server. The registry really checks it: a token signed by a key it does
/// not trust, from another issuer, or for another repository is refused,
/// and berthd says Unauthenticated.
#[tokio::test]
async fn registry_token_is_used_as_is_and_verified_by_the_registry() {
    let s = Setup::start();
    let (_b, mut c, _d) = berthd_on_host("").await.expect("berthd");
    let bearer = |t: String| {
        Some(cri::AuthConfig {
            registry_token: t,
            ..Default::default()
        })
    };
    let pull_busybox = [("library/busybox".to_string(), vec!["pull".to_string()])];
    let forged =
        Signer::new(UNTRUSTED_KEY, UNTRUSTED_CERT).sign(&claims(ISSUER, SERVICE, "berth", &pull_busybox));
    let other_issuer = Signer::new(KEY, CERT).sign(&claims("someone-else", SERVICE, "berth", &pull_busybox));
    let other_repo = s
        .tokens
        .mint("berth", &[("library/noise".into(), vec!["pull".into()])]);
    for (what, token) in [
        ("untrusted key", forged),
        ("other issuer", other_issuer),
        ("other repository", other_repo),
    ] {
        let e = pull(&mut c, &s.image("busybox"), bearer(token))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{what}: {e:?}");
    }
    pull(
        &mut c,
        &s.image("busybox"),
        bearer(s.tokens.mint("berth", &pull_busybox)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:?}\nregistry log:\n{}", s.reg.log()));
    assert!(s.tokens.seen().is_empty(), "{:?}", s.tokens.seen());
    assert_eq!(c.list_images().await.unwrap().len(), 1);
}
