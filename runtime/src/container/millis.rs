//! CRI timeouts (any `i64` of seconds) as the shim's millisecond fields.
//!
//! `Duration::as_millis` is a `u128`; an `as` cast to the shim's `i64` or
//! `u64` keeps the low bits, so a caller's huge timeout could arrive as a
//! negative one (ExecSync: no timeout at all) or a tiny one (a stop signal
//! redelivered for a few milliseconds). These saturate instead.

use std::time::Duration;

/// ExecRequest.timeout_ms: at most `i64::MAX`.
pub(super) fn exec_timeout_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// KillRequest.redeliver_ms: at most `u64::MAX`.
pub(super) fn redeliver_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_cri_timeouts_saturate_instead_of_wrapping() {
        // The largest timeout a CRI caller can send (i64::MAX seconds).
        let huge = Duration::from_secs(i64::MAX as u64);
        assert_eq!(exec_timeout_ms(huge), i64::MAX);
        assert_eq!(redeliver_ms(huge), u64::MAX);
        // A timeout whose millisecond count has bit 63 set: `as i64` made
        // it negative, which the shim reads as "no timeout".
        let high_bit = Duration::from_millis(1 << 63);
        assert_eq!(exec_timeout_ms(high_bit), i64::MAX);
        assert_eq!(exec_timeout_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(redeliver_ms(Duration::from_secs(30)), 30_000);
    }
}
