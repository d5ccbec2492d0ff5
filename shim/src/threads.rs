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

/// A job for the helper thread.
type Job = Box<dyn FnOnce() + Send>;

/// The helper thread's queue; None when its thread could not be made.
static HELPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();

/// Makes the helper thread now, before any call needs it: the shim does
/// this as it starts serving, so no call pays for the thread.
pub fn start_helper() {
    let _ = helper();
}

fn helper() -> Option<&'static std::sync::mpsc::Sender<Job>> {
    HELPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let made = thread().name("berth-shim-helper".into()).spawn(move || {
                for job in rx {
                    // A job that panics must not take the queue (and the
                    // jobs waiting in it) down with the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
            made.ok().map(|_| tx)
        })
        .as_ref()
}

/// Runs `job` off the caller's path, on the shim's one helper thread,
/// which waits for jobs and is always there.
///
/// Why not `spawn_blocking`: under emulation, a call that hands work to
/// the blocking pool when no pool thread is idle waits while the pool
/// makes one (2.8 ms of CreateContainer's last step, measured in the VM
/// bench, where the thread that had just read init's report was not yet
/// back in the pool). Handing a job to a thread that is already waiting
/// costs the caller one wake-up.
///
/// Jobs run one after the other: they must be short (starting threads,
/// not running them). A job that panics ends alone; should the helper
/// thread be missing (it could not be made), jobs run on the blocking
/// pool, as before.
pub fn off_path(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let job = match helper() {
        Some(tx) => match tx.send(job) {
            Ok(()) => return,
            Err(std::sync::mpsc::SendError(job)) => job,
        },
        None => job,
    };
    tokio::task::spawn_blocking(job);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    /// Jobs run on the helper thread, one after the other, in the order
    /// given, and never on the caller's thread.
    #[tokio::test]
    async fn off_path_jobs_run_in_order_on_the_helper_thread() {
        start_helper();
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            off_path(move || {
                let name = std::thread::current().name().map(str::to_string);
                tx.send((i, name)).unwrap();
            });
        }
        let got: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        let helper = Some("berth-shim-helper".to_string());
        assert_eq!(got, [(0, helper.clone()), (1, helper.clone()), (2, helper)]);
    }

    /// A job that panics ends alone: the helper goes on with the next.
    #[tokio::test]
    async fn a_panicking_job_leaves_the_helper_serving() {
        start_helper();
        off_path(|| panic!("a job that panics (expected by this test)"));
        let (tx, rx) = std::sync::mpsc::channel();
        off_path(move || {
            tx.send(std::thread::current().name().map(str::to_string))
                .unwrap()
        });
        let ran_on = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the next job ran");
        assert_eq!(ran_on.as_deref(), Some("berth-shim-helper"));
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
