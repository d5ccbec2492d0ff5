//! Feeds arbitrary bytes to one connection's decoder, frame after frame, the
//! way the session's reader does: it must return errors, never panic, and
//! never claim more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut codec = berth_spdy::Codec::new();
    let mut at = 0;
    while let Ok(Some((_, n))) = codec.decode(&data[at..]) {
        assert!(n > 0 && at + n <= data.len());
        at += n;
    }
});
