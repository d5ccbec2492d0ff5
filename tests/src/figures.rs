//! Figures for the benchmark binaries (`src/bin/berth-*bench.rs`, run by
//! `hack/bench/*.sh`, see hack/bench/README.md): durations as the
//! milliseconds their BERTH-BENCH lines print.

use std::time::Duration;

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile (nearest rank) of `v`, in milliseconds.
pub fn percentile_ms(mut v: Vec<Duration>, p: usize) -> f64 {
    v.sort();
    ms(v[((v.len() * p).div_ceil(100)).max(1) - 1])
}
