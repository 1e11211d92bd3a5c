//! Per-sender token buckets for incoming swap traffic.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token-bucket rate: `burst` messages at once, refilled at `per_minute` messages a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Bucket size: how many messages a sender may send back to back.
    pub burst: u32,
    /// Refill rate, in messages per minute.
    pub per_minute: u32,
}

impl RateLimit {
    /// A rate limit of `burst` at once and `per_minute` sustained.
    pub const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by sender. Memory is bounded: when more than `max_keys` senders are
/// tracked, buckets that have refilled completely (and so carry no information) are forgotten.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: HashMap<K, Bucket>,
    max_keys: usize,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// A limiter applying `limit` to every key.
    pub fn new(limit: RateLimit) -> Self {
        Self { limit, buckets: HashMap::new(), max_keys: 10_000 }
    }

    fn refill(limit: RateLimit, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        let rate = f64::from(limit.per_minute) / 60.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(limit.burst));
        bucket.last = now;
    }

    /// Takes one token for `key` at time `now`; `false` when the sender is over its limit.
    pub fn check_at(&mut self, key: &K, now: Instant) -> bool {
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            let limit = self.limit;
            self.buckets.retain(|_, b| {
                Self::refill(limit, b, now);
                b.tokens < f64::from(limit.burst)
            });
        }
        let limit = self.limit;
        let bucket = self
            .buckets
            .entry(key.clone())
            .or_insert(Bucket { tokens: f64::from(limit.burst), last: now });
        Self::refill(limit, bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes one token for `key` now.
    pub fn check(&mut self, key: &K) -> bool {
        self.check_at(key, Instant::now())
    }

    /// Time until `key` has a token again (zero when it has one).
    pub fn retry_after(&self, key: &K) -> Duration {
        match self.buckets.get(key) {
            Some(b) if b.tokens < 1.0 && self.limit.per_minute > 0 => {
                Duration::from_secs_f64((1.0 - b.tokens) * 60.0 / f64::from(self.limit.per_minute))
            }
            Some(_) | None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let mut l = RateLimiter::new(RateLimit::new(2, 60));
        let t0 = Instant::now();
        assert!(l.check_at(&1u8, t0));
        assert!(l.check_at(&1u8, t0));
        assert!(!l.check_at(&1u8, t0));
        assert!(l.check_at(&2u8, t0), "other senders are not affected");
        assert!(l.check_at(&1u8, t0 + Duration::from_millis(1100)));
        assert!(!l.check_at(&1u8, t0 + Duration::from_millis(1200)));
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut l = RateLimiter::new(RateLimit::new(1, 0));
        let t0 = Instant::now();
        assert!(l.check_at(&1u8, t0));
        assert!(!l.check_at(&1u8, t0 + Duration::from_secs(3600)));
    }
}
