//! Undo on failure: a multi-step operation (RunPodSandbox, CreateContainer)
//! registers the undo of each step it completes; an error (or a panic) drops
//! the guard, which runs the undos in reverse, so nothing is left behind.
//! Success disarms it.

/// Undo steps for a multi-step operation; runs them in reverse unless disarmed.
#[must_use]
pub struct Rollback(Vec<Box<dyn FnOnce() + Send>>);

impl Rollback {
    /// Nothing to undo yet.
    pub fn new() -> Self {
        Rollback(Vec::new())
    }
    /// Registers the undo of a step that just succeeded.
    pub fn push(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }
    /// Success: keep everything.
    pub fn disarm(mut self) {
        self.0.clear();
    }
}

impl Default for Rollback {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn rollback_runs_in_reverse_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut r = Rollback::new();
            for i in 0..3 {
                let l = log.clone();
                r.push(move || l.lock().push(i));
            }
        }
        assert_eq!(*log.lock(), vec![2, 1, 0]);
        let n = Arc::new(AtomicUsize::new(0));
        let mut r = Rollback::new();
        let n2 = n.clone();
        r.push(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        r.disarm();
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
