//! Manifests, indexes, image configs, digests and image references: never a
//! panic, only typed errors, only store-safe digests accepted (see
//! berthd::fuzzing::documents).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| berthd::fuzzing::documents::run(data));
