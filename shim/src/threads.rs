//! The shim's threads: its async runtime and the threads it makes itself,
//! all with [`THREAD_STACK`] stacks.

/// The stack of every thread the shim makes (its runtime's workers and
/// blocking threads, the log copiers): 1 MiB, not the default 2 MiB. Under
/// transparent huge pages set to `always` (Debian's kernels' default), a 2 MiB stack
/// that happens to start on a 2 MiB boundary is backed by one huge page at
/// its first touch: 2 MiB more Pss for that shim (seen on one shim of ten
/// in most bench runs). A mapping smaller than 2 MiB cannot hold one.
/// glibc hands an ended thread's stack to the next thread that fits in
/// it, so one default-sized thread would pass its 2 MiB on: every thread
/// comes from [`thread`] or the runtime.
pub const THREAD_STACK: usize = 1024 * 1024;

/// A builder for one of the shim's own threads: [`THREAD_STACK`] stacks.
pub fn thread() -> std::thread::Builder {
    std::thread::Builder::new().stack_size(THREAD_STACK)
}

/// The shim's async runtime: two workers, and every thread it makes gets
/// [`THREAD_STACK`] (see there why).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(THREAD_STACK)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The length of the mapping that holds the calling thread's stack.
    fn own_stack_mapping_len() -> usize {
        let here = 0u8;
        let at = std::hint::black_box(&here) as *const u8 as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let range = line.split_whitespace().next().unwrap();
            let (start, end) = range.split_once('-').unwrap();
            let (start, end) = (
                usize::from_str_radix(start, 16).unwrap(),
                usize::from_str_radix(end, 16).unwrap(),
            );
            if (start..end).contains(&at) {
                return end - start;
            }
        }
        panic!("no mapping holds {at:#x}");
    }

    /// A transparent huge page is 2 MiB and aligned: a stack mapping
    /// shorter than that can never be backed by one.
    const HUGE_PAGE: usize = 2 * 1024 * 1024;

    /// Set in the child process of the test below.
    const STACK_PROBE: &str = "BERTH_TEST_STACK_PROBE";

    /// The shim's copier threads, and its runtime's workers and blocking
    /// threads, have stacks no huge page fits in (the default 2 MiB one
    /// could be, and cost a shim 2 MiB of Pss when it was). Measured in a
    /// fresh process of this test binary: glibc hands a new thread the
    /// cached stack of an exited one when it is big enough, and the other
    /// tests' threads leave 2 MiB ones behind.
    #[test]
    fn the_shims_threads_have_stacks_no_huge_page_fits_in() {
        if std::env::var_os(STACK_PROBE).is_some() {
            return probe_stacks();
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "threads::tests::the_shims_threads_have_stacks_no_huge_page_fits_in",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(STACK_PROBE, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the probe did not run: {text}");
    }

    fn probe_stacks() {
        let copier = thread().spawn(own_stack_mapping_len).unwrap().join().unwrap();
        assert!(copier < HUGE_PAGE, "copier stack mapping {copier:#x}");
        let rt = runtime().unwrap();
        let worker = rt.block_on(async { tokio::spawn(async { own_stack_mapping_len() }).await.unwrap() });
        assert!(worker < HUGE_PAGE, "worker stack mapping {worker:#x}");
        let blocking =
            rt.block_on(async { tokio::task::spawn_blocking(own_stack_mapping_len).await.unwrap() });
        assert!(blocking < HUGE_PAGE, "blocking stack mapping {blocking:#x}");
        // And the check itself sees a default-sized stack as too big.
        let default = std::thread::Builder::new()
            .stack_size(HUGE_PAGE)
            .spawn(own_stack_mapping_len)
            .unwrap()
            .join()
            .unwrap();
        assert!(default >= HUGE_PAGE, "2 MiB stack mapping {default:#x}");
    }
}
