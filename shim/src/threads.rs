//! The shim's threads: its async runtime and the threads it makes itself,
//! all with [`berth_sys::thread::STACK`] stacks (see there why: a 2 MiB
//! stack can cost a shim a 2 MiB huge page).

/// A builder for one of the shim's own threads.
pub fn thread() -> std::thread::Builder {
    berth_sys::thread::builder()
}

/// The shim's async runtime: two workers, and every thread it makes gets
/// [`berth_sys::thread::STACK`].
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(berth_sys::thread::STACK)
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

    /// The shim's copier threads, and its runtime's workers and blocking
    /// threads, have stacks no huge page fits in (the default 2 MiB one
    /// could be, and cost a shim 2 MiB of Pss when it was). Measured in a
    /// fresh process of this test binary (see `probe_in_fresh_process`).
    #[test]
    fn the_shims_threads_have_stacks_no_huge_page_fits_in() {
        berth_sys::thread::probe_in_fresh_process(
            "threads::tests::the_shims_threads_have_stacks_no_huge_page_fits_in",
            probe_stacks,
        );
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
        use berth_sys::thread::{assert_small_stack, own_stack_mapping_len};
        assert_small_stack(
            "copier",
            thread().spawn(own_stack_mapping_len).unwrap().join().unwrap(),
        );
        let rt = runtime().unwrap();
        let worker = rt.block_on(async { tokio::spawn(async { own_stack_mapping_len() }).await.unwrap() });
        assert_small_stack("worker", worker);
        let blocking =
            rt.block_on(async { tokio::task::spawn_blocking(own_stack_mapping_len).await.unwrap() });
        assert_small_stack("blocking", blocking);
    }
}
