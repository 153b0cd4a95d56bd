//! How a hospital lets Buktor into the browser: which origins may frame its
//! pages and call the widget API, how long a widget hold lasts, and whether
//! anonymous patients may book. One stream per hospital,
//! `embedding-settings-<tenant>`.
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::error::{DomainError, DomainResult};

/// Most origins one hospital may allow.
pub const MAX_ORIGINS: usize = 20;

/// A web origin, `scheme://host[:port]`: what a browser sends in `Origin`
/// and what CSP `frame-ancestors` matches. Only http and https; the host is
/// lower-cased and a default port dropped so two spellings compare equal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin(String);

impl Origin {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        let bad = |why: &str| DomainError::invalid("allowedOrigins", format!("{raw:?}: {why}"));
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| bad("an origin is scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => "443",
            "http" => "80",
            _ => return Err(bad("only http and https origins")),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*', '\'', ';', ',']) {
            return Err(bad("nothing may follow the host and port"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal's own colons sit inside brackets.
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (rest, None),
        };
        if host.is_empty() || host.len() > 253 {
            return Err(bad("the host is missing or too long"));
        }
        let host_ok = host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !host_ok {
            return Err(bad("the host has characters a host name cannot have"));
        }
        let host = host.to_ascii_lowercase();
        Ok(match port {
            None => Origin(format!("{scheme}://{host}")),
            Some(p) if p == default_port => Origin(format!("{scheme}://{host}")),
            Some(p) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
                Origin(format!("{scheme}://{host}:{port}"))
            }
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Origin {
    type Error = DomainError;
    fn try_from(s: String) -> DomainResult<Self> {
        Origin::parse(&s)
    }
}

impl From<Origin> for String {
    fn from(o: Origin) -> String {
        o.0
    }
}

/// How long choosing a slot in the widget keeps it, in whole minutes (1–30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct HoldMinutes(u8);

impl HoldMinutes {
    pub const DEFAULT: HoldMinutes = HoldMinutes(5);

    pub fn parse(minutes: i64) -> DomainResult<Self> {
        u8::try_from(minutes)
            .ok()
            .filter(|m| (1..=30).contains(m))
            .map(HoldMinutes)
            .ok_or_else(|| DomainError::invalid("holdMinutes", "from 1 to 30 minutes"))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    pub fn duration(self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.0))
    }
}

impl Default for HoldMinutes {
    fn default() -> Self {
        HoldMinutes::DEFAULT
    }
}

impl TryFrom<u8> for HoldMinutes {
    type Error = DomainError;
    fn try_from(m: u8) -> DomainResult<Self> {
        HoldMinutes::parse(i64::from(m))
    }
}

impl From<HoldMinutes> for u8 {
    fn from(m: HoldMinutes) -> u8 {
        m.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmbeddingEvent {
    /// The whole settings as they are from now on.
    EmbeddingConfigured {
        allowed_origins: Vec<Origin>,
        hold_minutes: HoldMinutes,
        patient_booking: bool,
    },
}

impl DomainEvent for EmbeddingEvent {}

/// Until an admin configures anything: nothing may frame Buktor, holds last
/// five minutes, and only staff book through the widget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSettings {
    pub allowed_origins: Vec<Origin>,
    pub hold_minutes: HoldMinutes,
    pub patient_booking: bool,
}

impl Aggregate for EmbeddingSettings {
    type Event = EmbeddingEvent;
    const STREAM_TYPE: &'static str = "embedding-settings";

    fn apply(&mut self, event: &EmbeddingEvent) {
        match event {
            EmbeddingEvent::EmbeddingConfigured {
                allowed_origins,
                hold_minutes,
                patient_booking,
            } => {
                self.allowed_origins = allowed_origins.clone();
                self.hold_minutes = *hold_minutes;
                self.patient_booking = *patient_booking;
            }
        }
    }
}

impl EmbeddingSettings {
    /// Replaces the settings; `None` keeps the current hold length and
    /// patient booking. Nothing is recorded when nothing changes.
    pub fn configure(
        &self,
        allowed_origins: Vec<Origin>,
        hold_minutes: Option<HoldMinutes>,
        patient_booking: Option<bool>,
    ) -> DomainResult<Vec<EmbeddingEvent>> {
        if allowed_origins.len() > MAX_ORIGINS {
            return Err(DomainError::invalid(
                "allowedOrigins",
                format!("at most {MAX_ORIGINS} origins"),
            ));
        }
        let mut origins = allowed_origins;
        origins.sort();
        origins.dedup();
        let next = EmbeddingSettings {
            allowed_origins: origins,
            hold_minutes: hold_minutes.unwrap_or(self.hold_minutes),
            patient_booking: patient_booking.unwrap_or(self.patient_booking),
        };
        if &next == self {
            return Ok(vec![]);
        }
        Ok(vec![EmbeddingEvent::EmbeddingConfigured {
            allowed_origins: next.allowed_origins,
            hold_minutes: next.hold_minutes,
            patient_booking: next.patient_booking,
        }])
    }

    pub fn allows(&self, origin: &str) -> bool {
        Origin::parse(origin).is_ok_and(|o| self.allowed_origins.contains(&o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_anything_after_the_port_is_refused() {
        let ok = |s: &str| Origin::parse(s).unwrap().as_str().to_owned();
        assert_eq!(ok("HTTPS://His.Example.org"), "https://his.example.org");
        assert_eq!(ok("https://his.example.org:443"), "https://his.example.org");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(ok("http://[::1]:3000"), "http://[::1]:3000");
        for bad in [
            "his.example.org",
            "ftp://his.example.org",
            "https://his.example.org/",
            "https://his.example.org/path",
            "https://*.example.org",
            "https://user@his.example.org",
            "https://his.example.org:0",
            "https://his.example.org:99999",
            "https://",
            "https://a b",
            "https://x; script-src *",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn configuring_keeps_what_is_not_given_and_records_only_changes() {
        let s = EmbeddingSettings::default();
        let origin = Origin::parse("https://his.example.org").unwrap();
        let events = s
            .configure(vec![origin.clone(), origin.clone()], None, Some(true))
            .unwrap();
        let s = EmbeddingSettings::from_events(&events);
        assert_eq!(s.allowed_origins, vec![origin.clone()]);
        assert_eq!(s.hold_minutes, HoldMinutes::DEFAULT);
        assert!(s.patient_booking);
        assert!(s.allows("https://HIS.example.org:443"));
        assert!(!s.allows("https://evil.example.org"));
        assert!(s.configure(vec![origin], None, None).unwrap().is_empty());
        assert!(HoldMinutes::parse(0).is_err() && HoldMinutes::parse(31).is_err());
        let too_many = (0..=MAX_ORIGINS)
            .map(|i| Origin::parse(&format!("https://h{i}.example.org")).unwrap())
            .collect();
        assert!(s.configure(too_many, None, None).is_err());
    }
}
