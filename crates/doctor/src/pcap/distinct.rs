//! Counting distinct items (connections past the table's cap) in bounded memory: exactly up to
//! [`EXACT_UP_TO`], then with a HyperLogLog++ estimate (the `hyperloglogplus` crate) of fixed
//! size, whatever the number of items. A SYN flood of millions of connections is counted
//! without remembering them.

use std::hash::{BuildHasherDefault, DefaultHasher, Hash};

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use rustc_hash::FxHashSet;

/// Distinct items are counted exactly up to this many; past it the count is an estimate.
pub const EXACT_UP_TO: u64 = 1024;
/// log2 of the number of HyperLogLog registers: 2^14 registers (12 KiB), for a relative
/// standard error of 1.04 / sqrt(2^14), under 1%.
const PRECISION: u8 = 14;

/// SipHash with fixed keys: well-mixed bits (which HyperLogLog needs) and the same count on
/// every run.
type FixedHasher = BuildHasherDefault<DefaultHasher>;

/// A distinct count: exact while small, then estimated. Memory: at most [`EXACT_UP_TO`]
/// hashes, then only the sketch; nothing is allocated until the first item.
#[derive(Default)]
pub struct Distinct {
    /// Hashes of the items seen, while there are at most [`EXACT_UP_TO`] of them.
    exact: FxHashSet<u64>,
    /// True once there were more than [`EXACT_UP_TO`]: `exact` is dropped.
    estimated: bool,
    /// The estimate, fed from the first item on (so it holds every item).
    sketch: Option<HyperLogLogPlus<u64, FixedHasher>>,
}

impl std::fmt::Debug for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distinct")
            .field("exact", &self.exact.len())
            .field("estimated", &self.estimated)
            .finish()
    }
}

impl Distinct {
    /// Counts `item` (again: a repeated item changes nothing).
    pub fn insert<T: Hash>(&mut self, item: &T) {
        use std::hash::BuildHasher;
        let hash = FixedHasher::default().hash_one(item);
        let sketch = self.sketch.get_or_insert_with(|| {
            HyperLogLogPlus::new(PRECISION, FixedHasher::default())
                .expect("PRECISION is within hyperloglogplus's range (4..=18)")
        });
        sketch.insert(&hash);
        if !self.estimated {
            self.exact.insert(hash);
            if self.exact.len() as u64 > EXACT_UP_TO {
                self.estimated = true;
                self.exact = FxHashSet::default();
            }
        }
    }

    /// The number of distinct items, and whether it is exact.
    pub fn count(&mut self) -> (u64, bool) {
        if !self.estimated {
            return (self.exact.len() as u64, true);
        }
        let estimate = self.sketch.as_mut().map_or(0.0, |s| s.count());
        // More than EXACT_UP_TO were seen for certain.
        ((estimate.round() as u64).max(EXACT_UP_TO + 1), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_while_small_and_repeats_count_once() {
        let mut d = Distinct::default();
        assert_eq!(d.count(), (0, true));
        for round in 0..3 {
            for i in 0..EXACT_UP_TO {
                d.insert(&i);
            }
            assert_eq!(d.count(), (EXACT_UP_TO, true), "round {round}");
        }
    }

    #[test]
    fn estimates_within_a_few_percent_in_fixed_memory() {
        for n in [2_000u64, 40_000, 1_000_000] {
            let mut d = Distinct::default();
            for i in 0..n {
                d.insert(&i);
                d.insert(&i);
            }
            let (estimate, exact) = d.count();
            assert!(!exact);
            let error = (estimate as f64 - n as f64).abs() / n as f64;
            assert!(error < 0.03, "{n}: estimated {estimate}");
            assert_eq!(d.exact.capacity(), 0);
        }
    }
}
