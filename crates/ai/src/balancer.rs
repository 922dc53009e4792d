//! Deployment state and choice: in-flight counts, latency EWMA, consecutive failures and
//! cooldown; ordering by the model's strategy (ordered, weighted, least-busy, lowest-latency).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdfast_core::config::ai::{Deployment, Model, Strategy};

/// Live state of one deployment.
#[derive(Debug)]
pub struct DeploymentState {
    pub config: Deployment,
    inflight: AtomicU32,
    /// Latency EWMA in microseconds (0 = no sample yet).
    ewma_us: AtomicU64,
    failures: AtomicU32,
    cooldown_until: Mutex<Option<Instant>>,
    /// The current cooldown started because the provider rate limited the deployment (429).
    rate_limited: AtomicBool,
}

impl DeploymentState {
    pub fn new(config: Deployment) -> Self {
        DeploymentState {
            config,
            inflight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            cooldown_until: Mutex::new(None),
            rate_limited: AtomicBool::new(false),
        }
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn ewma(&self) -> Option<Duration> {
        match self.ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Time left in cooldown, if cooling down.
    pub fn cooling(&self, now: Instant) -> Option<Duration> {
        let until = *self
            .cooldown_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until
            .and_then(|u| u.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// True when the current (or last) cooldown came from a 429.
    pub fn cooling_for_rate_limit(&self) -> bool {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Mark a request as started; the guard ends it.
    pub fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(self.clone())
    }

    pub fn record_success(&self, latency: Duration) {
        self.failures.store(0, Ordering::Relaxed);
        let sample = latency.as_micros().max(1) as u64;
        let old = self.ewma_us.load(Ordering::Relaxed);
        // alpha = 0.3
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample * 3) / 10
        };
        self.ewma_us.store(new.max(1), Ordering::Relaxed);
    }

    /// Count a failure; after `threshold` in a row (or when the provider asked for a wait
    /// longer than we retry for), cool down. `rate_limited` says the failure was a 429.
    /// Returns true when a cooldown started.
    pub fn record_failure(
        &self,
        threshold: u32,
        cooldown: Duration,
        wait: Option<Duration>,
        rate_limited: bool,
    ) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let span = match wait {
            Some(w) => Some(w.max(if n >= threshold {
                cooldown
            } else {
                Duration::ZERO
            })),
            None if n >= threshold => Some(cooldown),
            None => None,
        };
        if let Some(span) = span {
            let mut until = self
                .cooldown_until
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *until = Some(Instant::now() + span);
            self.rate_limited.store(rate_limited, Ordering::Relaxed);
            if n >= threshold {
                self.failures.store(0, Ordering::Relaxed);
            }
            return true;
        }
        false
    }
}

/// Ends an in-flight count when dropped.
pub struct InflightGuard(Arc<DeploymentState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A model's deployments and how it picks among them.
#[derive(Debug)]
pub struct ModelState {
    pub strategy: Strategy,
    pub deployments: Vec<Arc<DeploymentState>>,
    pub fallbacks: Vec<String>,
}

impl ModelState {
    pub fn new(m: &Model) -> Self {
        ModelState {
            strategy: m.strategy,
            deployments: m
                .deployments
                .iter()
                .cloned()
                .map(|d| Arc::new(DeploymentState::new(d)))
                .collect(),
            fallbacks: m.fallbacks.clone(),
        }
    }

    /// All deployments in the order to try them.
    pub fn order(&self) -> Vec<Arc<DeploymentState>> {
        let mut list = self.deployments.clone();
        match self.strategy {
            Strategy::Ordered => {}
            Strategy::Weighted => {
                // Weighted sampling without replacement.
                let mut out = Vec::with_capacity(list.len());
                while !list.is_empty() {
                    let total: u64 = list.iter().map(|d| d.config.weight as u64).sum();
                    let mut pick = fastrand::u64(0..total.max(1));
                    let mut idx = 0;
                    for (i, d) in list.iter().enumerate() {
                        let w = d.config.weight as u64;
                        if pick < w {
                            idx = i;
                            break;
                        }
                        pick -= w;
                    }
                    out.push(list.remove(idx));
                }
                list = out;
            }
            Strategy::LeastBusy => {
                // Shuffle first so ties spread out.
                fastrand::shuffle(&mut list);
                list.sort_by_key(|d| d.inflight());
            }
            Strategy::LowestLatency => {
                fastrand::shuffle(&mut list);
                // Unmeasured deployments first, so each gets a sample.
                list.sort_by_key(|d| d.ewma().unwrap_or(Duration::ZERO));
            }
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::config::ai::Provider;

    fn dep(name: &str, weight: u32) -> Deployment {
        Deployment {
            name: name.into(),
            provider: Provider::OpenAi,
            model: name.into(),
            base_url: "http://127.0.0.1:1".into(),
            api_key: String::new(),
            api_version: String::new(),
            weight,
        }
    }

    fn model(strategy: Strategy, deps: Vec<Deployment>) -> ModelState {
        ModelState::new(&Model {
            strategy,
            deployments: deps,
            fallbacks: vec![],
        })
    }

    #[test]
    fn weighted_follows_weights() {
        let m = model(Strategy::Weighted, vec![dep("a", 9), dep("b", 1)]);
        let firsts = (0..2000)
            .filter(|_| m.order()[0].config.name == "a")
            .count();
        assert!((1600..=1950).contains(&firsts), "a first {firsts} of 2000");
    }

    #[test]
    fn least_busy_prefers_idle() {
        let m = model(Strategy::LeastBusy, vec![dep("a", 1), dep("b", 1)]);
        let _g = m.deployments[0].begin();
        for _ in 0..20 {
            assert_eq!(m.order()[0].config.name, "b");
        }
    }

    #[test]
    fn lowest_latency_prefers_fast() {
        let m = model(Strategy::LowestLatency, vec![dep("a", 1), dep("b", 1)]);
        m.deployments[0].record_success(Duration::from_millis(200));
        m.deployments[1].record_success(Duration::from_millis(20));
        assert_eq!(m.order()[0].config.name, "b");
    }

    #[test]
    fn cooldown_after_threshold() {
        let d = DeploymentState::new(dep("a", 1));
        let now = Instant::now();
        assert!(!d.record_failure(2, Duration::from_secs(5), None, false));
        assert!(d.cooling(now).is_none());
        assert!(d.record_failure(2, Duration::from_secs(5), None, false));
        assert!(d.cooling(Instant::now()).is_some());
    }
}
