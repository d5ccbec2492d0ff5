//! Fuzzing entry points for the code that reads hostile bytes: a layer
//! blob ([`unpack`]), a registry's manifests, indexes, configs and digests
//! ([`documents`]), and a CRI caller's requests ([`cri`]).
//!
//! Each `run` is called two ways, as berth-spdy's frame decoder is: by the
//! libFuzzer targets in `runtime/fuzz` (unbounded, coverage-guided, needs
//! nightly and cargo-fuzz), and by a seeded mutation test next to it in
//! `cargo test` (a few thousand deterministic mutations of real inputs).
//! Every `run` asserts its invariants itself, so a violation is a panic in
//! both: libFuzzer saves the input, the test fails with the seed.

pub mod cri;
pub mod documents;
pub mod unpack;

/// A fixed-seed xorshift generator with a byte mutator: the same seed gives
/// the same inputs on every machine, so a failure reproduces.
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

/// Bytes that steer parsers: path separators and dots, NUL, octal digits
/// (tar numbers), JSON punctuation, and the extremes.
const INTERESTING: &[u8] = b"/.\0 07:\"{}[],-+\\x\xff\x80\x7f";

impl Mutator {
    /// A generator for `seed` (0 is replaced: xorshift would stay at 0).
    pub fn new(seed: u64) -> Self {
        Mutator { state: seed.max(1) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// A byte, half the time one of [`INTERESTING`].
    pub fn byte(&mut self) -> u8 {
        if self.next_u64().is_multiple_of(2) {
            INTERESTING[self.below(INTERESTING.len())]
        } else {
            self.next_u64() as u8
        }
    }

    /// A mutated copy of `input`: 1 to 8 edits, each an overwritten byte
    /// (at a position `pick` chooses), an inserted or deleted run, a run
    /// spliced in from `other`, or a truncation.
    pub fn mutate(
        &mut self,
        input: &[u8],
        other: &[u8],
        pick: &mut dyn FnMut(&mut Self, usize) -> usize,
    ) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..self.below(8) + 1 {
            match self.below(10) {
                0..=5 if !out.is_empty() => {
                    let i = pick(self, out.len()).min(out.len() - 1);
                    out[i] = self.byte();
                }
                6 => {
                    let at = self.below(out.len() + 1);
                    let run: Vec<u8> = (0..self.below(16) + 1).map(|_| self.byte()).collect();
                    out.splice(at..at, run);
                }
                7 if !out.is_empty() => {
                    let at = self.below(out.len());
                    let end = (at + self.below(32) + 1).min(out.len());
                    out.drain(at..end);
                }
                8 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let end = (from + self.below(64) + 1).min(other.len());
                    let at = pick(self, out.len() + 1).min(out.len());
                    out.splice(at..at, other[from..end].iter().copied());
                }
                9 => {
                    let keep = self.below(out.len() + 1);
                    out.truncate(keep);
                }
                _ => {}
            }
        }
        out
    }
}

/// Writes `seeds` as libFuzzer corpus files into `$BERTH_FUZZ_CORPUS/<target>`
/// when that variable is set (how `runtime/fuzz/corpus` was made), so the
/// fuzzers start from the inputs the mutation tests start from.
#[cfg(test)]
fn write_corpus(target: &str, seeds: &[Vec<u8>]) {
    let Some(dir) = std::env::var_os("BERTH_FUZZ_CORPUS") else {
        return;
    };
    let dir = std::path::Path::new(&dir).join(target);
    std::fs::create_dir_all(&dir).unwrap();
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mutator_is_deterministic_and_edits() {
        let input = b"0123456789abcdef".repeat(4);
        let mut uniform = |m: &mut Mutator, n: usize| m.below(n);
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7);
            (0..50).map(|_| m.mutate(&input, b"xyz", &mut uniform)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut m = Mutator::new(7);
            (0..50).map(|_| m.mutate(&input, b"xyz", &mut uniform)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().filter(|v| **v != input).count() > 40);
    }
}
