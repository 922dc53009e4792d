//! Per-route concurrency limit with a bounded wait queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `max_concurrent` slots and at most `queue_size` waiters, each waiting at most `queue_timeout`.
pub struct Limiter {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_size: usize,
    queue_timeout: Duration,
}

/// Why a request got no slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    QueueFull,
    QueueTimeout,
}

impl Limiter {
    pub fn new(max_concurrent: usize, queue_size: usize, queue_timeout: Duration) -> Limiter {
        Limiter {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            waiting: AtomicUsize::new(0),
            queue_size,
            queue_timeout,
        }
    }

    /// Wait for a slot (bounded in count and time).
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // The place in the queue is given back however the wait ends, also when the waiting
        // request is dropped (its client left).
        let place = QueuePlace(&self.waiting);
        if place.0.fetch_add(1, Ordering::AcqRel) >= self.queue_size {
            return Err(Refused::QueueFull);
        }
        let result =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        drop(place);
        match result {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refused::QueueTimeout),
        }
    }
}

/// One place in a route's wait queue, counted in `waiting` until dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_is_bounded() {
        let l = Arc::new(Limiter::new(1, 1, Duration::from_secs(5)));
        let held = l.acquire().await.unwrap();
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await.map(|_| ()) }
        });
        for _ in 0..100 {
            if l.waiting.load(Ordering::Acquire) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(l.acquire().await.err(), Some(Refused::QueueFull));
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn a_waiter_that_is_dropped_gives_its_place_back() {
        let l = Limiter::new(1, 1, Duration::from_secs(5));
        let _held = l.acquire().await.unwrap();
        for _ in 0..3 {
            // A client that leaves while queued drops its request's future.
            let gave_up = tokio::time::timeout(Duration::from_millis(20), l.acquire()).await;
            assert!(gave_up.is_err(), "still waiting");
            assert_eq!(l.waiting.load(Ordering::Acquire), 0, "place given back");
        }
        assert_eq!(l.waiting.load(Ordering::Acquire), 0);
    }
}
