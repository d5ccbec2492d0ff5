//! Loaded device programs, kept per program so that containers with the
//! same device rules (nearly all of them: the defaults) share one.
//!
//! BPF_PROG_LOAD runs the kernel's verifier and JIT for every load, a
//! syscall that costs about a millisecond under the test VM's emulation;
//! the program is the same bytes for every container with the same rules.
//! A loaded program can be attached to any number of cgroups, and each
//! attachment holds its own reference, so keeping our fd open only keeps
//! the program loaded for the next container. The cache is bounded: a node
//! whose pods ask for many distinct device lists loads the rest each time.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Result;

/// At most this many distinct programs stay loaded.
pub const MAX_PROGRAMS: usize = 16;

/// Programs by their byte image (what BPF_PROG_LOAD reads).
#[derive(Debug, Default)]
pub struct ProgramCache {
    loaded: Mutex<HashMap<Vec<u8>, Arc<OwnedFd>>>,
}

impl ProgramCache {
    /// The loaded program for `image`, loading it with `load` if it is not
    /// kept. A failed load keeps nothing. The lock is not held across the
    /// load: two first containers may both load it, and one copy is kept.
    pub fn get_or_load(&self, image: &[u8], load: impl FnOnce() -> Result<OwnedFd>) -> Result<Arc<OwnedFd>> {
        if let Some(p) = self.loaded.lock().get(image) {
            return Ok(p.clone());
        }
        let prog = Arc::new(load()?);
        let mut loaded = self.loaded.lock();
        if let Some(p) = loaded.get(image) {
            return Ok(p.clone());
        }
        if loaded.len() >= MAX_PROGRAMS {
            // Rare (many distinct device lists); the attached cgroups keep
            // their own references, so dropping ours unloads nothing in use.
            loaded.clear();
        }
        loaded.insert(image.to_vec(), prog.clone());
        Ok(prog)
    }

    /// How many programs are kept.
    pub fn len(&self) -> usize {
        self.loaded.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::Cell;

    fn fd() -> Result<OwnedFd> {
        Ok(std::fs::File::open("/dev/null").unwrap().into())
    }

    #[test]
    fn the_same_program_is_loaded_once() {
        let cache = ProgramCache::default();
        let loads = Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            fd()
        };
        let a = cache.get_or_load(b"defaults", load).unwrap();
        let b = cache.get_or_load(b"defaults", load).unwrap();
        assert_eq!(loads.get(), 1);
        assert!(Arc::ptr_eq(&a, &b));
        cache.get_or_load(b"with /dev/fuse", load).unwrap();
        assert_eq!(loads.get(), 2, "another program is another load");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_failed_load_keeps_nothing() {
        let cache = ProgramCache::default();
        let err = cache.get_or_load(b"p", || Err(Error::Internal("verifier says no".into())));
        assert!(err.is_err());
        assert!(cache.is_empty());
        let loads = Cell::new(0);
        cache
            .get_or_load(b"p", || {
                loads.set(1);
                fd()
            })
            .unwrap();
        assert_eq!(loads.get(), 1, "the next container loads it again");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = ProgramCache::default();
        for i in 0..(MAX_PROGRAMS * 3) {
            cache.get_or_load(format!("program {i}").as_bytes(), fd).unwrap();
            assert!(cache.len() <= MAX_PROGRAMS);
        }
    }
}
