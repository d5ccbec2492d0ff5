//! CRI requests decoded from bytes through berthd's checks: never a panic or
//! an overflow, only client errors, and what passes is in range (see
//! berthd::fuzzing::cri).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berthd::fuzzing::cri::run(data);
});
