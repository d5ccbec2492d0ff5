//! CLOCK_MONOTONIC as plain nanoseconds: one clock for berthd, the shim and
//! every stage the shim clones, so times taken in different processes
//! subtract (a step that starts in one process and ends in another).

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn mono_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one timespec, which `t` is; it
    // cannot fail for CLOCK_MONOTONIC with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    /// The clock is the one `std::time::Instant` reads, and it does not go
    /// back.
    #[test]
    fn mono_ns_follows_instant() {
        let a = super::mono_ns();
        let i = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = super::mono_ns();
        assert!(b >= a + 5_000_000, "{a} {b}");
        assert!(u128::from(b - a) >= i.elapsed().as_nanos().saturating_sub(1_000_000));
    }
}
