//! Per-API-key fixed-window rate limits. A window never outlasts its length,
//! so a client over the limit waits at most `window` and is never locked out.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub struct RateLimiter {
    limit: u32,
    window: Duration,
    windows: Mutex<HashMap<Uuid, (Instant, u32)>>,
}

/// What the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets (at least 1).
    pub reset_secs: u64,
    pub allowed: bool,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn check(&self, key: Uuid) -> Quota {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: Uuid, now: Instant) -> Quota {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        let allowed = entry.1 < self.limit;
        if allowed {
            entry.1 += 1;
        }
        let left = self.window.saturating_sub(now.duration_since(entry.0));
        Quota {
            limit: self.limit,
            remaining: self.limit - entry.1,
            reset_secs: left.as_secs_f64().ceil().max(1.0) as u64,
            allowed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_over_the_limit_until_the_window_ends() {
        let rl = RateLimiter::new(2, Duration::from_secs(10));
        let key = Uuid::new_v4();
        let t0 = Instant::now();
        assert!(rl.check_at(key, t0).allowed);
        let q = rl.check_at(key, t0);
        assert!(q.allowed);
        assert_eq!(q.remaining, 0);
        let refused = rl.check_at(key, t0 + Duration::from_secs(4));
        assert!(!refused.allowed);
        assert_eq!(refused.reset_secs, 6);
        // Other keys are unaffected; the window ends on time.
        assert!(rl.check_at(Uuid::new_v4(), t0).allowed);
        assert!(rl.check_at(key, t0 + Duration::from_secs(10)).allowed);
    }
}
