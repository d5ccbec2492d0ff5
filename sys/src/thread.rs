//! Thread stacks: every thread berthd and the shim make gets [`STACK`].
//!
//! Under transparent huge pages set to `always` (Debian's kernels'
//! default), a thread stack is a mapping of its own, and a 2 MiB one (the
//! default of Rust's threads and tokio's) that happens to start on a 2 MiB
//! boundary is backed by one huge page at its first touch: 2 MiB more
//! memory for a thread that uses a few pages. Seen in the VM bench on one
//! shim of ten in most runs, and on berthd in 3 runs of 7 (its RSS with
//! 10 pods 14.8 MB against 12.6–13.0, the 2 MiB all in one stack-sized
//! mapping). A mapping smaller than 2 MiB cannot hold one.
//!
//! glibc hands an ended thread's stack to the next thread it fits, so one
//! default-sized thread would pass its 2 MiB on: every thread comes from
//! [`builder`] or a tokio runtime given `thread_stack_size(STACK)`.

/// The stack of every thread: 1 MiB, not the default 2 MiB (see above).
pub const STACK: usize = 1024 * 1024;

/// A transparent huge page: 2 MiB, aligned. A stack mapping shorter than
/// this can never be backed by one.
pub const HUGE_PAGE: usize = 2 * 1024 * 1024;

/// A builder for a thread with a [`STACK`] stack.
pub fn builder() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(STACK)
}

/// `std::thread::spawn` with a [`STACK`] stack: panics, as it does, when
/// the thread cannot be made.
pub fn spawn<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    builder().spawn(f).expect("failed to spawn thread")
}

/// The length of the mapping that holds the calling thread's stack (from
/// /proc/self/maps): what the binaries' tests check their threads with.
pub fn own_stack_mapping_len() -> std::io::Result<usize> {
    let here = 0u8;
    let at = std::hint::black_box(&here) as *const u8 as usize;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let Some((start, end)) = line.split_whitespace().next().and_then(|r| r.split_once('-')) else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        if (start..end).contains(&at) {
            return Ok(end - start);
        }
    }
    Err(std::io::Error::other(format!("no mapping holds {at:#x}")))
}

/// Set in the fresh process [`probe_in_fresh_process`] makes.
const PROBE_ENV: &str = "BERTH_TEST_STACK_PROBE";

/// For tests: runs `probe` in a fresh process of the calling test binary
/// (`test`: the test's full name, which must be the caller), where no
/// ended thread has left a stack in glibc's cache for a new thread to
/// take (the test harness's threads leave 2 MiB ones). Panics when the
/// probe fails or did not run.
pub fn probe_in_fresh_process(test: &str, probe: impl FnOnce()) {
    if std::env::var_os(PROBE_ENV).is_some() {
        return probe();
    }
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--test-threads=1", "--nocapture"])
        .env(PROBE_ENV, "1")
        .output()
        .expect("run the test binary");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the probe did not run: {text}");
}

/// For tests: fails unless `len` (a thread's stack mapping, from
/// [`own_stack_mapping_len`] run on that thread) is shorter than
/// [`HUGE_PAGE`].
pub fn assert_small_stack(what: &str, len: std::io::Result<usize>) {
    let len = len.expect("read /proc/self/maps");
    assert!(len < HUGE_PAGE, "{what}: stack mapping {len:#x}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builder's threads have stacks no huge page fits in, and the
    /// check sees a 2 MiB stack as too big.
    #[test]
    fn builder_threads_have_stacks_no_huge_page_fits_in() {
        probe_in_fresh_process(
            "thread::tests::builder_threads_have_stacks_no_huge_page_fits_in",
            || {
                assert_small_stack("builder", spawn(own_stack_mapping_len).join().unwrap());
                let default = std::thread::Builder::new()
                    .stack_size(HUGE_PAGE)
                    .spawn(own_stack_mapping_len)
                    .unwrap()
                    .join()
                    .unwrap()
                    .unwrap();
                assert!(default >= HUGE_PAGE, "2 MiB stack mapping {default:#x}");
            },
        );
    }
}
