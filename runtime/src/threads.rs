//! berthd's main async runtime. Its threads, the CRI handler runtime's
//! (`cri::offload_layer::handler_runtime`) and every thread berthd makes
//! itself get [`berth_sys::thread::STACK`] stacks: a default 2 MiB one can
//! be backed by a 2 MiB huge page (see there).

/// The runtime berthd serves on: as `tokio::runtime::Runtime::new` (a
/// worker per CPU), with [`berth_sys::thread::STACK`] stacks.
pub fn main_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(berth_sys::thread::STACK)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use berth_sys::thread::{assert_small_stack, own_stack_mapping_len, probe_in_fresh_process};

    /// Workers and blocking threads of both of berthd's runtimes have
    /// stacks no huge page fits in (berthd's RSS with 10 pods was 2 MiB
    /// higher in 3 bench runs of 7, all of it one huge page in one 2 MiB
    /// stack mapping).
    #[test]
    fn berthds_runtime_threads_have_stacks_no_huge_page_fits_in() {
        probe_in_fresh_process(
            "threads::tests::berthds_runtime_threads_have_stacks_no_huge_page_fits_in",
            || {
                for (name, rt) in [
                    ("main", super::main_runtime().unwrap()),
                    ("handler", crate::cri::offload_layer::handler_runtime().unwrap()),
                ] {
                    let worker =
                        rt.block_on(async { tokio::spawn(async { own_stack_mapping_len() }).await.unwrap() });
                    assert_small_stack(&format!("{name} worker"), worker);
                    let blocking = rt.block_on(async {
                        tokio::task::spawn_blocking(own_stack_mapping_len).await.unwrap()
                    });
                    assert_small_stack(&format!("{name} blocking"), blocking);
                }
            },
        );
    }
}
