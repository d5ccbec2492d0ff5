//! Name reservations for objects being created.
//!
//! The CRI requires a pod's (name, namespace, uid, attempt) and a container's
//! (name, attempt) in its pod to be unique, and kubelet retries a slow
//! RunPodSandbox or CreateContainer while the first call still runs. A name
//! is therefore reserved before the first side effect, in the same lock hold
//! that checks the existing objects, and released when the creation ends:
//! by then a successful one is in the manager's map, a failed one is undone.

use std::collections::HashSet;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Names whose objects are being created.
#[derive(Debug, Default)]
pub struct Reservations {
    pending: Mutex<HashSet<String>>,
}

/// A held name; dropping it releases the name.
#[must_use = "the name is released when the reservation is dropped"]
#[derive(Debug)]
pub struct Reservation<'a> {
    owner: &'a Reservations,
    key: String,
}

impl Reservations {
    /// Reserves `key` unless another creation holds it or `existing` (which
    /// runs under the reservation lock) names an object that already has
    /// it. Either way the error is AlreadyExists with `what` in it. The
    /// caller must insert its object into its map before dropping the
    /// reservation, so no window lets a second caller in.
    pub fn reserve(
        &self,
        key: String,
        what: &str,
        existing: impl FnOnce() -> Option<String>,
    ) -> Result<Reservation<'_>> {
        let mut pending = self.pending.lock();
        if pending.contains(&key) {
            return Err(Error::AlreadyExists(format!("{what} (being created)")));
        }
        if let Some(id) = existing() {
            return Err(Error::AlreadyExists(format!("{what} as {id}")));
        }
        pending.insert(key.clone());
        Ok(Reservation { owner: self, key })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.owner.pending.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn one_of_many_concurrent_reservations_wins() {
        let r = Arc::new(Reservations::default());
        let start = Arc::new(Barrier::new(16));
        let done = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (r, start, done) = (r.clone(), start.clone(), done.clone());
                berth_sys::thread::spawn(move || {
                    start.wait();
                    let got = r.reserve("pod/ns/uid/0".into(), "pod", || None);
                    let ok = got.is_ok();
                    let code = got.as_ref().err().map(|e| e.code());
                    // Held until every thread has tried.
                    done.wait();
                    (ok, code)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(ok, _)| *ok).count(), 1, "{results:?}");
        assert!(results
            .iter()
            .all(|(ok, code)| *ok || *code == Some(tonic::Code::AlreadyExists)));
    }

    #[test]
    fn released_on_drop_and_existing_objects_refuse() {
        let r = Reservations::default();
        let held = r.reserve("a".into(), "pod a", || None).unwrap();
        assert!(r.reserve("a".into(), "pod a", || None).is_err());
        assert!(r.reserve("b".into(), "pod b", || None).is_ok());
        drop(held);
        let _again = r.reserve("a".into(), "pod a", || None).unwrap();
        let e = r
            .reserve("c".into(), "pod c", || Some("1234".into()))
            .unwrap_err();
        assert!(
            matches!(e, Error::AlreadyExists(ref m) if m.contains("1234")),
            "{e}"
        );
    }
}
