//! A bulkhead: at most `max_in_flight` calls at once per target key, so one
//! slow target cannot take every connection and task of the process. A call
//! waits for a permit (backpressure), it is never refused.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One target's bulkhead.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Bulkhead {
    pub fn new(max_in_flight: u32) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight as usize)),
            max: max_in_flight,
        }
    }

    /// Waits for a free slot; the slot is free again when the permit drops.
    pub async fn enter(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so this cannot fail; should it
        // ever, the call goes on unbounded rather than failing.
        match Arc::clone(&self.permits).acquire_owned().await {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("bulkhead semaphore closed; calls are no longer bounded");
                Arc::new(Semaphore::new(1))
                    .try_acquire_owned()
                    .unwrap_or_else(|_| unreachable!("a fresh semaphore has a permit"))
            }
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> u32 {
        self.max
            .saturating_sub(u32::try_from(self.permits.available_permits()).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_max_in_flight() {
        let b = Bulkhead::new(3);
        let now = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (b, now, peak) = (b.clone(), Arc::clone(&now), Arc::clone(&peak));
                tokio::spawn(async move {
                    let _permit = b.enter().await;
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for c in calls {
            c.await.expect("call");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(b.in_flight(), 0);
    }
}
