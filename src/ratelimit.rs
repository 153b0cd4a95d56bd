//! Per-API-key fixed-window rate limits. A window never outlasts its length,
//! so a client over the limit waits at most `window` and is never locked out.
//!
//! A refusal ([`RateLimited`]) carries when to retry, and
//! [`RateLimited::apply`] is the one place that writes `Retry-After` and the
//! `RateLimit-*` headers, so every surface's 429 says the same.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::HttpResponse;
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

/// A request refused for being over the limit: retry after `quota.reset_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub quota: Quota,
}

impl RateLimited {
    /// Seconds until the window ends and the key may call again.
    pub fn retry_after_secs(&self) -> u64 {
        self.quota.reset_secs
    }

    /// Writes `Retry-After` and the `RateLimit-*` headers on a 429.
    pub fn apply(&self, res: &mut HttpResponse) {
        self.quota.apply(res);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
    }
}

impl Quota {
    /// Writes the `RateLimit-Limit`, `-Remaining` and `-Reset` headers
    /// (draft-ietf-httpapi-ratelimit-headers, as seconds).
    pub fn apply(&self, res: &mut HttpResponse) {
        let h = res.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset_secs),
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
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

    /// Counts one request of `key`: its quota, or the refusal when over the limit.
    pub fn admit(&self, key: Uuid) -> Result<Quota, RateLimited> {
        let quota = self.check(key);
        if quota.allowed {
            Ok(quota)
        } else {
            Err(RateLimited { quota })
        }
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
