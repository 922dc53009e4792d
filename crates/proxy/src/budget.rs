//! The retry budget: retries may be at most `percent`% of requests plus `min_per_second`
//! per second, over a sliding two-second window, so a sick upstream cannot cause a retry storm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use holdfast_core::config::RetryBudget;

/// The two one-second windows the budget looks at. Requests are counted in one atomic total
/// (a request costs no lock and no clock read); a window holds the total as it was when the
/// window began.
struct Window {
    start: Instant,
    /// The request total when the previous window began.
    prev_mark: u64,
    /// The request total when this window began.
    mark: u64,
    retries: u64,
    prev_retries: u64,
}

/// How often (in requests) counting a request also moves the windows on.
const ROTATE_EVERY: u64 = 64;

/// Move the windows on to now: by one second after one, afresh after two.
fn rotate(w: &mut Window, total: u64) {
    let elapsed = w.start.elapsed();
    if elapsed >= Duration::from_secs(2) {
        *w = Window {
            start: Instant::now(),
            prev_mark: w.mark,
            mark: total,
            retries: 0,
            prev_retries: 0,
        };
    } else if elapsed >= Duration::from_secs(1) {
        w.prev_mark = w.mark;
        w.mark = total;
        w.prev_retries = w.retries;
        w.retries = 0;
        w.start += Duration::from_secs(1);
    }
}

/// Shared by every route.
pub struct Budget {
    config: RetryBudget,
    requests: AtomicU64,
    window: Mutex<Window>,
}

impl Budget {
    pub fn new(config: RetryBudget) -> Budget {
        Budget {
            config,
            requests: AtomicU64::new(0),
            window: Mutex::new(Window {
                start: Instant::now(),
                prev_mark: 0,
                mark: 0,
                retries: 0,
                prev_retries: 0,
            }),
        }
    }

    /// The configured backoff bounds.
    pub fn config(&self) -> &RetryBudget {
        &self.config
    }

    /// Count one request. Every [`ROTATE_EVERY`] requests the windows move on as time passed,
    /// so that the budget keeps the last two seconds of traffic even while nothing retries.
    pub fn on_request(&self) {
        let total = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if total.is_multiple_of(ROTATE_EVERY) {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            rotate(&mut w, total);
        }
    }

    /// Take one retry from the budget; `false` when it is spent.
    pub fn try_retry(&self) -> bool {
        let percent = u64::from(self.config.percent);
        let floor = u64::from(self.config.min_per_second);
        let total = self.requests.load(Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        rotate(&mut w, total);
        {
            // Requests of this window and the one before.
            let requests = total.saturating_sub(w.prev_mark);
            let retries = w.retries + w.prev_retries;
            // Two seconds of window: the floor counts twice.
            let allowed = requests * percent / 100 + floor * 2;
            if retries < allowed {
                w.retries += 1;
                true
            } else {
                false
            }
        }
    }

    /// Full-jitter exponential backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.config.backoff_base.as_micros() as u64;
        let cap = self.config.backoff_max.as_micros() as u64;
        let ceiling = base
            .saturating_mul(1u64 << retry.saturating_sub(1).min(20))
            .min(cap);
        if ceiling == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(rand::random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_floor_then_percent() {
        let b = Budget::new(RetryBudget {
            percent: 20,
            min_per_second: 1,
            ..RetryBudget::default()
        });
        assert!(b.try_retry());
        assert!(b.try_retry());
        assert!(!b.try_retry(), "floor of 1/s over a 2 s window is 2");
        for _ in 0..10 {
            b.on_request();
        }
        assert!(b.try_retry(), "20% of 10 requests adds 2");
        assert!(b.try_retry());
        assert!(!b.try_retry());
    }

    #[test]
    fn backoff_stays_under_the_cap() {
        let b = Budget::new(RetryBudget::default());
        for retry in 1..30 {
            assert!(b.backoff(retry) <= RetryBudget::default().backoff_max);
        }
    }
}
