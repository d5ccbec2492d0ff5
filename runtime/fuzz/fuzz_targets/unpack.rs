//! A layer blob unpacked into a snapshot dir: never a panic, never a write
//! outside the snapshot (see berthd::fuzzing::unpack for the invariants).
//! Runs as root, as berthd does (whiteouts are device nodes, the opaque
//! marker a trusted xattr); the work dir is fixed so the corpus's absolute
//! symlinks point into it.
#![no_main]

use std::sync::OnceLock;

use berthd::fuzzing::unpack::{run, Workspace};
use libfuzzer_sys::fuzz_target;

static WORK: OnceLock<Workspace> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let ws = WORK
        .get_or_init(|| Workspace::create(std::path::Path::new("/tmp/berth-fuzz-unpack")).expect("work dir"));
    let _ = run(ws, data);
});
