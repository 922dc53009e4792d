//! Target selection for one upstream pool: round robin, least-request (power of two choices),
//! consistent hashing; health state from active checks and passive outlier ejection; the panic
//! threshold.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use holdfast_core::config::{Balance, Upstream};

/// Health and load of one target.
pub struct TargetState {
    pub authority: String,
    pub weight: u32,
    pub inflight: AtomicUsize,
    /// Set by active health checks (true until a check says otherwise).
    pub active_healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// End of the current ejection, in nanoseconds after [`origin`]; 0 when the target was
    /// never ejected. A target that was not ejected is checked without reading the clock.
    ejected_until: AtomicU64,
    /// When the target last failed (nanoseconds after [`origin`]); 0 after a success. A target
    /// that failed within [`SUSPECT_FOR`] is *suspect*: requests that cannot be retried once
    /// sent (a POST) go to another target while one is available.
    last_failure: AtomicU64,
}

/// How long a failure makes a target suspect for requests that cannot be retried, unless a
/// success comes first.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// The instant the ejection deadlines count from.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds from [`origin`] to `at` (at least 1, so that 0 can mean "never").
fn since_origin(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin()).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl TargetState {
    fn new(authority: &str, weight: u32) -> TargetState {
        TargetState {
            authority: authority.to_string(),
            weight,
            inflight: AtomicUsize::new(0),
            active_healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
        }
    }

    /// Failed within [`SUSPECT_FOR`], with no success since.
    fn suspect(&self) -> bool {
        match self.last_failure.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let window = u64::try_from(SUSPECT_FOR.as_nanos()).unwrap_or(u64::MAX);
                since_origin(Instant::now()).saturating_sub(at) < window
            }
        }
    }

    fn ejected(&self) -> bool {
        match self.ejected_until.load(Ordering::Acquire) {
            0 => false,
            until => until > since_origin(Instant::now()),
        }
    }

    fn last_failure_set(&self) -> bool {
        self.last_failure.load(Ordering::Relaxed) != 0
    }

    /// Ejected by passive outlier detection right now.
    pub fn is_ejected(&self) -> bool {
        self.ejected()
    }

    /// How many times outlier detection ejected the target in a row (the next ejection
    /// lasts twice as long); 0 once it served well again.
    pub fn ejection_count(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Usable right now: passes active checks and is not ejected.
    pub fn healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed) && !self.ejected()
    }

    /// How bad a target is, for choosing the least-bad one when all are down.
    fn badness(&self) -> (bool, u32, usize) {
        (
            self.ejected(),
            self.consecutive_failures.load(Ordering::Relaxed),
            self.inflight.load(Ordering::Relaxed),
        )
    }
}

/// Selection state for one pool.
pub struct Balancer {
    pub upstream: Upstream,
    pub targets: Vec<TargetState>,
    sequence: Vec<usize>,
    next: AtomicUsize,
    ring: Vec<(u64, usize)>,
}

/// FNV-1a: a stable hash for the consistent-hash ring (std's hasher is randomly seeded).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Finalize (splitmix) so near keys spread over the ring.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl Balancer {
    pub fn new(upstream: Upstream) -> Balancer {
        let targets: Vec<TargetState> = upstream
            .targets
            .iter()
            .map(|t| TargetState::new(&t.authority, t.weight))
            .collect();
        // Interleaved weighted sequence: target i appears weight_i times, spread out.
        let max_w = targets.iter().map(|t| t.weight).max().unwrap_or(1);
        let mut sequence = Vec::new();
        for round in 0..max_w {
            for (i, t) in targets.iter().enumerate() {
                if round < t.weight {
                    sequence.push(i);
                }
            }
        }
        let mut ring = Vec::new();
        if matches!(upstream.balance, Balance::ConsistentHash(_)) {
            for (i, t) in targets.iter().enumerate() {
                for v in 0..(100 * t.weight) {
                    ring.push((fnv1a(format!("{}#{v}", t.authority).as_bytes()), i));
                }
            }
            ring.sort_unstable();
        }
        let start = if sequence.is_empty() {
            0
        } else {
            rand::random_range(0..sequence.len())
        };
        Balancer {
            upstream,
            targets,
            sequence,
            next: AtomicUsize::new(start),
            ring,
        }
    }

    /// Take over what `old` (the same pool before a reload) learned about each target that
    /// is still in the pool (same `host:port`): its ejection (and the count that doubles the
    /// next one), its consecutive failures, whether it is suspect and, when both pools run
    /// active checks, the checks' verdict. Otherwise a reload would send requests again to
    /// a target the checks had marked down or that was ejected, until they found out anew.
    pub fn inherit(&self, old: &Balancer) {
        let checked = self.upstream.health_check.is_some() && old.upstream.health_check.is_some();
        for t in &self.targets {
            let Some(o) = old.targets.iter().find(|o| o.authority == t.authority) else {
                continue;
            };
            let copy = |to: &AtomicU64, from: &AtomicU64| {
                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
            };
            copy(&t.ejected_until, &o.ejected_until);
            copy(&t.last_failure, &o.last_failure);
            t.ejections
                .store(o.ejections.load(Ordering::Relaxed), Ordering::Relaxed);
            t.consecutive_failures.store(
                o.consecutive_failures.load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            if checked {
                t.active_healthy
                    .store(o.active_healthy.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
    }

    /// Number of targets usable now.
    pub fn healthy_count(&self) -> usize {
        self.targets.iter().filter(|t| t.healthy()).count()
    }

    /// Choose a target, avoiding `exclude` (targets that already failed this request).
    /// `hash` is the consistent-hash key, when the policy uses one.
    pub fn pick(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        self.pick_for(hash, exclude, false)
    }

    /// [`Balancer::pick`] for a request that cannot be retried once sent (`sure = true`): it
    /// also avoids *suspect* targets (failed in the last [`SUSPECT_FOR`], no success since)
    /// while another usable target is available, so that a POST does not find out for itself
    /// that a target is resetting what it gets.
    pub fn pick_for(&self, hash: Option<u64>, exclude: &[usize], sure: bool) -> Option<usize> {
        if self.targets.is_empty() {
            return None;
        }
        let healthy_n = self.healthy_count();
        // Panic threshold: too few healthy targets, so spread over all of them.
        let panic =
            healthy_n * 100 < self.upstream.panic_threshold_percent as usize * self.targets.len();
        // A retry takes the next slot without moving the round-robin turn: otherwise a target
        // that fails every request would also get every first attempt after it.
        let retry = !exclude.is_empty();
        let usable = |i: usize| !exclude.contains(&i) && (panic || self.targets[i].healthy());
        let sound = |i: usize| usable(i) && !self.targets[i].suspect();
        let choose =
            |usable: &dyn Fn(usize) -> bool, advance: bool| match (&self.upstream.balance, hash) {
                (Balance::ConsistentHash(_), Some(h)) => self.pick_ring(h, usable),
                (Balance::LeastRequest, _) => self.pick_p2c(usable),
                _ => self.pick_rr(usable, advance),
            };
        let chosen = if sure && self.targets.iter().any(|t| t.last_failure_set()) {
            choose(&sound, !retry).or_else(|| choose(&usable, false))
        } else {
            choose(&usable, !retry)
        };
        chosen.or_else(|| {
            // Nothing usable: try the least-bad target, preferring ones not yet tried.
            (0..self.targets.len())
                .min_by_key(|i| (exclude.contains(i), self.targets[*i].badness()))
        })
    }

    /// Weighted round robin. When the slot in turn is not usable, the turn counts over the
    /// usable slots only, so the share of a target that is down spreads evenly over the others
    /// (instead of going to whichever target follows it in the sequence).
    fn pick_rr(&self, usable: &dyn Fn(usize) -> bool, advance: bool) -> Option<usize> {
        let n = self.sequence.len();
        if n == 0 {
            return None;
        }
        let turn = if advance {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        };
        let first = self.sequence[turn % n];
        if usable(first) {
            return Some(first);
        }
        let usable_slots = self.sequence.iter().filter(|i| usable(**i)).count();
        if usable_slots == 0 {
            return None;
        }
        self.sequence
            .iter()
            .copied()
            .filter(|i| usable(*i))
            .nth(turn % usable_slots)
    }

    /// Power of two choices, weighted: two distinct candidates drawn with chances in
    /// proportion to their weights, and the one with fewer requests in flight per unit of
    /// weight wins (the first drawn on a tie). An idle pool thus shares its traffic by weight,
    /// and a loaded one by weight and load.
    fn pick_p2c(&self, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.targets.len()).filter(|i| usable(*i)).collect();
        let weight = |i: usize| u64::from(self.targets[i].weight.max(1));
        let draw = |skip: Option<usize>| {
            let total: u64 = candidates
                .iter()
                .filter(|i| Some(**i) != skip)
                .map(|i| weight(*i))
                .sum();
            let mut at = rand::random_range(0..total.max(1));
            for &i in candidates.iter().filter(|i| Some(**i) != skip) {
                let w = weight(i);
                if at < w {
                    return i;
                }
                at -= w;
            }
            candidates[candidates.len() - 1]
        };
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            _ => {
                let a = draw(None);
                let b = draw(Some(a));
                let load = |i: usize| {
                    self.targets[i].inflight.load(Ordering::Relaxed) as u64 * 1000 / weight(i)
                };
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    fn pick_ring(&self, hash: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.ring.partition_point(|(h, _)| *h < hash);
        let n = self.ring.len();
        (0..n)
            .map(|k| self.ring[(start + k) % n].1)
            .find(|i| usable(*i))
    }

    /// A passive success: the outlier counters start over.
    pub fn on_success(&self, i: usize) {
        let t = &self.targets[i];
        t.consecutive_failures.store(0, Ordering::Relaxed);
        if t.last_failure_set() {
            t.last_failure.store(0, Ordering::Relaxed);
        }
        if t.ejections.load(Ordering::Relaxed) != 0 && !t.ejected() {
            t.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// The body of a response from target `i` (not a `5xx`, which counted as a failure at its
    /// head) ended: read to its end, a success; broken off by the upstream (a reset or a close
    /// mid-body), a failure like a reset before the head. The success of an answer is counted
    /// here rather than at its head, so a target that resets every response mid-body gets
    /// ejected after `consecutive_failures` of them.
    pub fn on_body_end(&self, i: usize, complete: bool) {
        if complete {
            self.on_success(i);
        } else {
            self.on_failure(i);
        }
    }

    /// A passive failure (connect failure, reset, 5xx). Returns true if it ejected the target.
    pub fn on_failure(&self, i: usize) -> bool {
        let t = &self.targets[i];
        t.last_failure
            .store(since_origin(Instant::now()), Ordering::Relaxed);
        let failures = t.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.upstream.outlier.consecutive_failures {
            return false;
        }
        t.consecutive_failures.store(0, Ordering::Relaxed);
        let n = t.ejections.fetch_add(1, Ordering::Relaxed);
        let o = &self.upstream.outlier;
        let duration = o
            .base_ejection
            .saturating_mul(1u32 << n.min(16))
            .min(o.max_ejection);
        t.ejected_until
            .store(since_origin(Instant::now() + duration), Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::config::{HashOn, Target};

    fn pool(n: usize, balance: Balance) -> Balancer {
        let targets = (0..n)
            .map(|i| Target::plain(&format!("10.0.0.{i}:80")))
            .collect();
        let mut up = Upstream::with_defaults("p", targets);
        up.balance = balance;
        up.outlier.consecutive_failures = 2;
        Balancer::new(up)
    }

    #[test]
    fn a_reloaded_pool_keeps_what_the_old_one_learned_about_its_targets() {
        let checked = |n: usize| {
            let targets = (0..n)
                .map(|i| Target::plain(&format!("10.0.0.{i}:80")))
                .collect();
            let mut up = Upstream::with_defaults("p", targets);
            up.outlier.consecutive_failures = 1;
            up.health_check = Some(holdfast_core::config::upstream::HealthCheck {
                http_path: None,
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(1),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            });
            Balancer::new(up)
        };
        let old = checked(3);
        old.targets[1]
            .active_healthy
            .store(false, Ordering::Relaxed);
        assert!(old.on_failure(2), "ejected");
        let new = checked(4);
        new.inherit(&old);
        assert!(new.targets[0].healthy());
        assert!(
            !new.targets[1].healthy(),
            "the checks' verdict carries over"
        );
        assert!(!new.targets[2].healthy(), "the ejection carries over");
        assert!(new.targets[3].healthy(), "a new target starts healthy");
        // Without active checks in the new pool, nothing would ever mark it healthy again.
        let mut up = new.upstream.clone();
        up.health_check = None;
        let unchecked = Balancer::new(up);
        unchecked.inherit(&old);
        assert!(unchecked.targets[1].healthy());
        assert!(!unchecked.targets[2].healthy());
    }

    #[test]
    fn round_robin_visits_every_target_and_skips_excluded() {
        let b = pool(3, Balance::RoundRobin);
        let mut seen = [0; 3];
        for _ in 0..30 {
            b.pick(None, &[]);
            seen[b.pick(None, &[1]).unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] >= 10 && seen[2] >= 10, "{seen:?}");
    }

    #[test]
    fn a_retry_takes_the_next_target_without_moving_the_turn() {
        // Target 0 fails every request; each failure is retried on target 1.
        let b = pool(2, Balance::RoundRobin);
        let mut first_attempts = [0; 2];
        for _ in 0..10 {
            let first = b.pick(None, &[]).unwrap();
            first_attempts[first] += 1;
            if first == 0 {
                assert_eq!(b.pick(None, &[0]), Some(1));
            }
        }
        // Before, the retry moved the turn on, so target 0 got every first attempt.
        assert_eq!(first_attempts, [5, 5]);
    }

    #[test]
    fn requests_that_cannot_be_retried_avoid_a_target_that_just_failed() {
        let b = pool(3, Balance::RoundRobin);
        b.on_failure(0); // one failure: suspect, not ejected (the pool ejects after 2)
        assert_eq!(b.healthy_count(), 3);
        let mut plain = [0; 3];
        let mut sure = [0; 3];
        for _ in 0..30 {
            plain[b.pick(None, &[]).unwrap()] += 1;
            sure[b.pick_for(None, &[], true).unwrap()] += 1;
        }
        assert!(plain[0] > 0, "{plain:?}");
        assert_eq!(sure[0], 0, "{sure:?}");
        assert!(sure[1] > 0 && sure[2] > 0, "{sure:?}");
        // A success clears it.
        b.on_success(0);
        assert!((0..30).any(|_| b.pick_for(None, &[], true) == Some(0)));
        // Every target suspect: still a target.
        for i in 0..3 {
            b.on_failure(i);
        }
        assert!(b.pick_for(None, &[], true).is_some());
    }

    #[test]
    fn round_robin_spreads_the_share_of_targets_that_are_down_evenly() {
        let mut b = pool(4, Balance::RoundRobin);
        b.upstream.panic_threshold_percent = 0;
        for i in [1, 2] {
            b.on_failure(i);
            b.on_failure(i);
        }
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[b.pick(None, &[]).unwrap()] += 1;
        }
        assert_eq!((seen[1], seen[2]), (0, 0), "{seen:?}");
        assert_eq!(seen[0], 200, "{seen:?}");
        assert_eq!(seen[3], 200, "{seen:?}");
    }

    #[test]
    fn ejection_and_panic_threshold() {
        let b = pool(4, Balance::RoundRobin);
        assert!(!b.on_failure(0));
        assert!(b.on_failure(0), "second consecutive failure ejects");
        for _ in 0..20 {
            assert_ne!(b.pick(None, &[]), Some(0));
        }
        for i in 1..4 {
            b.on_failure(i);
            b.on_failure(i);
        }
        // Everything ejected: still answers with some target rather than none.
        assert!(b.pick(None, &[]).is_some());
        assert_eq!(b.healthy_count(), 0);
    }

    #[test]
    fn consistent_hash_is_sticky_and_moves_on_exclusion() {
        let b = pool(5, Balance::ConsistentHash(HashOn::ClientIp));
        let key = fnv1a(b"192.0.2.7");
        let first = b.pick(Some(key), &[]).unwrap();
        for _ in 0..10 {
            assert_eq!(b.pick(Some(key), &[]), Some(first));
        }
        assert_ne!(b.pick(Some(key), &[first]), Some(first));
    }

    #[test]
    fn least_request_shares_an_idle_pool_by_weight() {
        let targets = [1, 3]
            .iter()
            .enumerate()
            .map(|(i, w)| Target {
                weight: *w,
                ..Target::plain(&format!("10.0.0.{i}:80"))
            })
            .collect();
        let mut up = Upstream::with_defaults("p", targets);
        up.balance = Balance::LeastRequest;
        let b = Balancer::new(up);
        // One request at a time (nothing in flight at each pick): 1:3, not all to the heavier.
        let mut seen = [0u32; 2];
        for _ in 0..4000 {
            seen[b.pick(None, &[]).unwrap()] += 1;
        }
        assert!((800..1200).contains(&seen[0]), "{seen:?}");
        // Under load, in flight per unit of weight decides: 2 on weight 1 is more than 3 on 3.
        b.targets[0].inflight.store(2, Ordering::Relaxed);
        b.targets[1].inflight.store(3, Ordering::Relaxed);
        for _ in 0..50 {
            assert_eq!(b.pick(None, &[]), Some(1));
        }
    }

    #[test]
    fn least_request_prefers_idle_targets() {
        let b = pool(2, Balance::LeastRequest);
        b.targets[0].inflight.store(50, Ordering::Relaxed);
        for _ in 0..20 {
            assert_eq!(b.pick(None, &[]), Some(1));
        }
    }
}
