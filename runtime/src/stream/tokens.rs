//! Single-use tokens naming a pending streaming request.
//!
//! The Exec, Attach and PortForward RPCs only register what was asked and
//! answer a URL carrying a token; the client then connects to the
//! streaming server with it. A token is 256 bits from the OS's CSPRNG
//! (unguessable: it is the only credential the streaming server checks),
//! works once, and expires (default one minute, like kubelet's streaming
//! server). Used and expired tokens are remembered until a while after
//! their expiry, so a refusal can say which it was.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

pub use crate::config::defaults::DEFAULT_STREAM_TOKEN_TTL as DEFAULT_TTL;

/// Most tokens pending at once; more is a client bug or an attack.
pub const MAX_PENDING: usize = 1000;

/// How long after its expiry a spent token is still recognised.
const REMEMBER_SPENT: Duration = Duration::from_secs(300);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Never issued (or forgotten long ago).
    #[error("unknown streaming token")]
    Unknown,
    /// Issued, but its time ran out before anyone used it.
    #[error("streaming token expired (tokens are valid for {0:?})")]
    Expired(Duration),
    /// Issued and used once already.
    #[error("streaming token already used (each token works once)")]
    Used,
    /// Issued for another kind of request (an exec token on /attach/...).
    #[error("streaming token is for {0}, not for this URL")]
    WrongKind(&'static str),
}

enum Slot<T> {
    Pending { request: T, expires: Instant },
    Spent { used: bool, forget_at: Instant },
}

/// Pending requests by token.
pub struct TokenCache<T> {
    ttl: Duration,
    slots: Mutex<HashMap<String, Slot<T>>>,
}

/// Something a token can stand for, with the name of its kind.
pub trait Kind {
    /// `exec`, `attach` or `portforward`: the URL path it belongs to.
    fn kind(&self) -> &'static str;
}

impl<T: Kind> TokenCache<T> {
    /// A cache whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Registers `request`; returns its new token.
    pub fn insert(&self, request: T) -> Result<String, crate::error::Error> {
        self.insert_at(request, Instant::now())
    }

    fn insert_at(&self, request: T, now: Instant) -> Result<String, crate::error::Error> {
        let token = new_token()?;
        let mut slots = self.slots.lock().expect("token lock");
        self.sweep(&mut slots, now);
        let pending = slots
            .values()
            .filter(|s| matches!(s, Slot::Pending { .. }))
            .count();
        if pending >= MAX_PENDING {
            return Err(crate::error::Error::FailedPrecondition(format!(
                "{MAX_PENDING} streaming requests are already waiting for their client; try again later"
            )));
        }
        slots.insert(
            token.clone(),
            Slot::Pending {
                request,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Takes the request of `token` if it is pending, unexpired and of `kind`.
    pub fn consume(&self, token: &str, kind: &'static str) -> Result<T, TokenError> {
        self.consume_at(token, kind, Instant::now())
    }

    fn consume_at(&self, token: &str, kind: &'static str, now: Instant) -> Result<T, TokenError> {
        let mut slots = self.slots.lock().expect("token lock");
        let forget_at = now + REMEMBER_SPENT;
        match slots.get(token) {
            None => return Err(TokenError::Unknown),
            Some(Slot::Spent { used: true, .. }) => return Err(TokenError::Used),
            Some(Slot::Spent { used: false, .. }) => return Err(TokenError::Expired(self.ttl)),
            Some(Slot::Pending { expires, .. }) if *expires <= now => {
                slots.insert(
                    token.to_string(),
                    Slot::Spent {
                        used: false,
                        forget_at,
                    },
                );
                return Err(TokenError::Expired(self.ttl));
            }
            // A token shown on the wrong URL stays usable on the right one.
            Some(Slot::Pending { request, .. }) if request.kind() != kind => {
                return Err(TokenError::WrongKind(request.kind()));
            }
            Some(Slot::Pending { .. }) => {}
        }
        match slots.insert(
            token.to_string(),
            Slot::Spent {
                used: true,
                forget_at,
            },
        ) {
            Some(Slot::Pending { request, .. }) => Ok(request),
            _ => unreachable!("checked pending above under the same lock"),
        }
    }

    /// Turns expired tokens into tombstones and forgets old tombstones.
    fn sweep(&self, slots: &mut HashMap<String, Slot<T>>, now: Instant) {
        slots.retain(|_, s| match s {
            Slot::Spent { forget_at, .. } => *forget_at > now,
            Slot::Pending { .. } => true,
        });
        for s in slots.values_mut() {
            if matches!(s, Slot::Pending { expires, .. } if *expires <= now) {
                *s = Slot::Spent {
                    used: false,
                    forget_at: now + REMEMBER_SPENT,
                };
            }
        }
    }
}

/// 32 bytes from getrandom(2), URL-safe base64 without padding.
fn new_token() -> Result<String, crate::error::Error> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| crate::error::Error::Internal(format!("read random bytes for a token: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Req(&'static str, u32);
    impl Kind for Req {
        fn kind(&self) -> &'static str {
            self.0
        }
    }

    #[test]
    fn a_token_works_once() {
        let c = TokenCache::new(DEFAULT_TTL);
        let t = c.insert(Req("exec", 1)).unwrap();
        assert_eq!(t.len(), 43, "{t}");
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(c.consume(&t, "exec"), Ok(Req("exec", 1)));
        assert_eq!(c.consume(&t, "exec"), Err(TokenError::Used));
        assert_eq!(c.consume("nope", "exec"), Err(TokenError::Unknown));
    }

    #[test]
    fn tokens_are_unique() {
        let c = TokenCache::new(DEFAULT_TTL);
        let a = c.insert(Req("exec", 1)).unwrap();
        let b = c.insert(Req("exec", 2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(c.consume(&b, "exec"), Ok(Req("exec", 2)));
        assert_eq!(c.consume(&a, "exec"), Ok(Req("exec", 1)));
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let c = TokenCache::new(Duration::from_secs(60));
        let now = Instant::now();
        let t = c.insert_at(Req("attach", 1), now).unwrap();
        let late = now + Duration::from_secs(61);
        assert_eq!(
            c.consume_at(&t, "attach", late),
            Err(TokenError::Expired(Duration::from_secs(60)))
        );
        assert_eq!(
            c.consume_at(&t, "attach", late),
            Err(TokenError::Expired(Duration::from_secs(60)))
        );
        // Just before expiry it still works.
        let u = c.insert_at(Req("attach", 2), now).unwrap();
        assert_eq!(
            c.consume_at(&u, "attach", now + Duration::from_secs(59)),
            Ok(Req("attach", 2))
        );
    }

    #[test]
    fn a_sweep_remembers_then_forgets_expired_tokens() {
        let c = TokenCache::new(Duration::from_secs(1));
        let now = Instant::now();
        let t = c.insert_at(Req("exec", 1), now).unwrap();
        // Another insert later sweeps the expired one into a tombstone...
        c.insert_at(Req("exec", 2), now + Duration::from_secs(2)).unwrap();
        assert!(matches!(
            c.consume_at(&t, "exec", now + Duration::from_secs(3)),
            Err(TokenError::Expired(_))
        ));
        // ...and a much later one forgets it.
        c.insert_at(Req("exec", 3), now + Duration::from_secs(1000))
            .unwrap();
        assert_eq!(
            c.consume_at(&t, "exec", now + Duration::from_secs(1000)),
            Err(TokenError::Unknown)
        );
    }

    #[test]
    fn a_token_on_the_wrong_url_is_refused_but_kept() {
        let c = TokenCache::new(DEFAULT_TTL);
        let t = c.insert(Req("exec", 1)).unwrap();
        assert_eq!(c.consume(&t, "portforward"), Err(TokenError::WrongKind("exec")));
        assert_eq!(c.consume(&t, "exec"), Ok(Req("exec", 1)));
    }

    #[test]
    fn pending_tokens_are_bounded() {
        let c = TokenCache::new(DEFAULT_TTL);
        for i in 0..MAX_PENDING {
            c.insert(Req("exec", i as u32)).unwrap();
        }
        let e = c.insert(Req("exec", 0)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }
}
