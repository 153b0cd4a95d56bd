//! One typed configuration: built-in defaults < a TOML file < `BUKTOR_*`
//! environment variables (nested keys with `__`, e.g. `BUKTOR_RATE_LIMIT__REQUESTS`).
//! `DATABASE_URL` is honoured too, as most deployment tools set it.
//! Invalid configuration fails at start, naming the key.
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// `postgres://…` selects PostgreSQL; unset uses the embedded store in `data_dir`.
    pub database_url: Option<Secret>,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// PostgreSQL connections per server instance.
    pub pool_size: usize,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long in-flight requests get to finish on SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    pub rate_limit: RateLimit,
    pub log: Log,
    /// Shifts the server's clock by this many seconds. For drills and tests
    /// that need "later today" now; a warning is logged when it is not 0.
    pub clock_offset_secs: i64,
    /// Serve the browser pages (`web/`) from this directory, read at every
    /// request, instead of the copies built into the binary: for working
    /// on the widget and the admin screens without rebuilding.
    pub web_dir: Option<PathBuf>,
    pub webhooks: Webhooks,
    pub notifications: Notifications,
    pub secrets: Secrets,
}

/// The keys that seal stored secrets (webhook signing secrets, the
/// token-signing key) at rest: `src/secrets.rs`, docs/secrets.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    /// Base64 of 32 random bytes (`buktor secrets generate-key`). Seals new
    /// values. Required on PostgreSQL; the embedded store makes and keeps
    /// one in `data_dir/secrets.key` when unset.
    pub encryption_key: Option<Secret>,
    /// Keys being rotated out: they still open what they sealed until
    /// `buktor secrets rotate` (or a start) has sealed it again.
    pub old_encryption_keys: Vec<Secret>,
}

/// Patient notifications and reminders (`docs/notifications.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// Whether this instance plans and sends notifications. Several
    /// instances may: the planner runs on one at a time, each timer is
    /// leased to one sender at a time.
    pub dispatch: bool,
    /// The SMTP server; unset = no e-mail (e-mails due are recorded as skipped).
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `none` (plain, for a local relay), `starttls` or `tls` (implicit TLS).
    pub smtp_tls: SmtpTls,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<Secret>,
    /// The sender, e.g. `Hospital <noreply@hospital.example>`.
    pub from: String,
    /// Signs the requests to SMS gateways; each hospital's secret is derived
    /// from it. Unset = no SMS.
    pub sms_signing_key: Option<Secret>,
    /// How long one send (SMTP or HTTP) may take.
    pub send_timeout_ms: u64,
    /// How long a claimed timer stays leased to this instance.
    pub lease_ms: u64,
    /// The pauses after the 1st, 2nd, … failed attempt; the last one repeats.
    pub retry_delays_ms: Vec<u64>,
    /// Attempts, the first included, before a notification is recorded as failed.
    pub max_attempts: u32,
    /// How often to look for due timers when idle.
    pub poll_ms: u64,
    /// Sends in flight at once on this instance.
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

impl Default for Notifications {
    fn default() -> Self {
        const S: u64 = 1000;
        Notifications {
            dispatch: true,
            smtp_host: None,
            smtp_port: 587,
            smtp_tls: SmtpTls::Starttls,
            smtp_username: None,
            smtp_password: None,
            from: "Buktor <noreply@localhost>".into(),
            sms_signing_key: None,
            send_timeout_ms: 10 * S,
            lease_ms: 60 * S,
            // 1 min, 5 min, 15 min, 1 h.
            retry_delays_ms: vec![60 * S, 300 * S, 900 * S, 3600 * S],
            max_attempts: 5,
            poll_ms: 1000,
            max_in_flight: 16,
        }
    }
}

/// Push delivery to HIS endpoints (`docs/webhooks.md`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// Whether this instance fans events out and delivers them. Several
    /// instances may: each message is leased to one at a time.
    pub dispatch: bool,
    /// How long one attempt may take, connecting included.
    pub attempt_timeout_ms: u64,
    /// How long a claimed message stays leased to this instance. Longer than
    /// an attempt can take, so no other instance sends it meanwhile.
    pub lease_ms: u64,
    /// The pauses after the 1st, 2nd, … failed attempt; the last one repeats.
    pub retry_delays_ms: Vec<u64>,
    /// Attempts, the first included, before a message is dead-lettered
    /// (an endpoint may ask for another number).
    pub max_attempts: u32,
    /// Attempts in flight at once on this instance, over all endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint, from this instance.
    pub max_in_flight_per_endpoint: usize,
    /// How often to look for work another instance made, when idle.
    pub poll_ms: u64,
    /// The overlap after a secret rotation, when both secrets sign.
    pub rotation_overlap_secs: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        const S: u64 = 1000;
        Webhooks {
            dispatch: true,
            attempt_timeout_ms: 10 * S,
            lease_ms: 60 * S,
            // Immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            retry_delays_ms: vec![
                5 * S,
                300 * S,
                1800 * S,
                7200 * S,
                5 * 3600 * S,
                10 * 3600 * S,
                10 * 3600 * S,
            ],
            max_attempts: 8,
            max_in_flight: 512,
            max_in_flight_per_endpoint: 16,
            poll_ms: 250,
            rotation_overlap_secs: 24 * 3600,
        }
    }
}

/// The largest `clock_offset_secs`: 100 years.
const MAX_CLOCK_OFFSET_SECS: u64 = 100 * 365 * 24 * 3600;

/// Requests per API key per window. A client that exceeds it waits at most
/// until the window ends: there is no lock-out beyond that.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub window_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,buktor=debug`.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            data_dir: PathBuf::from("data"),
            pool_size: 32,
            workers: 0,
            max_body_bytes: 256 * 1024,
            shutdown_timeout_secs: 30,
            rate_limit: RateLimit {
                requests: 1200,
                window_secs: 60,
            },
            log: Log {
                format: LogFormat::Pretty,
                filter: "info".into(),
            },
            clock_offset_secs: 0,
            web_dir: None,
            webhooks: Webhooks::default(),
            notifications: Notifications::default(),
            secrets: Secrets::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

impl Config {
    /// Loads defaults, then `file` if given (it must exist) or `buktor.toml` if
    /// present, then the environment.
    pub fn load(file: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Rule(format!(
                        "configuration file {} does not exist",
                        path.display()
                    )));
                }
                figment.merge(Toml::file(path))
            }
            None => figment.merge(Toml::file("buktor.toml")),
        };
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        // BUKTOR_CONFIG names the file (read by the CLI); BUKTOR_TEST_* belong
        // to the test suite and BUKTOR_MIDDLEWARE_* to buktor-middleware.
        figment = figment.merge(
            Env::prefixed("BUKTOR_")
                .ignore(&["config"])
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !key.starts_with("test_") && !key.starts_with("middleware_")
                })
                .split("__"),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            let u = url.expose();
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                return Err(ConfigError::Rule(
                    "database_url must be a postgres:// URL (leave it unset for the embedded store)"
                        .into(),
                ));
            }
        }
        if self.pool_size == 0 {
            return Err(ConfigError::Rule("pool_size must be at least 1".into()));
        }
        if self.rate_limit.requests == 0 || self.rate_limit.window_secs == 0 {
            return Err(ConfigError::Rule(
                "rate_limit.requests and rate_limit.window_secs must be at least 1".into(),
            ));
        }
        let w = &self.webhooks;
        if w.attempt_timeout_ms == 0 || w.lease_ms < 2 * w.attempt_timeout_ms {
            return Err(ConfigError::Rule(
                "webhooks.lease_ms must be at least twice webhooks.attempt_timeout_ms (> 0)".into(),
            ));
        }
        if w.retry_delays_ms.is_empty()
            || w.max_attempts == 0
            || w.max_in_flight == 0
            || w.max_in_flight_per_endpoint == 0
            || w.poll_ms == 0
        {
            return Err(ConfigError::Rule(
                "webhooks: retry_delays_ms needs an entry; max_attempts, max_in_flight, \
                 max_in_flight_per_endpoint and poll_ms must be at least 1"
                    .into(),
            ));
        }
        let n = &self.notifications;
        if n.send_timeout_ms == 0 || n.lease_ms < 2 * n.send_timeout_ms {
            return Err(ConfigError::Rule(
                "notifications.lease_ms must be at least twice notifications.send_timeout_ms (> 0)"
                    .into(),
            ));
        }
        if n.retry_delays_ms.is_empty()
            || n.max_attempts == 0
            || n.poll_ms == 0
            || n.max_in_flight == 0
        {
            return Err(ConfigError::Rule(
                "notifications: retry_delays_ms needs an entry; max_attempts, poll_ms and \
                 max_in_flight must be at least 1"
                    .into(),
            ));
        }
        if n.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::Rule(
                "notifications.from must be a mailbox such as `Hospital <noreply@hospital.example>`"
                    .into(),
            ));
        }
        // The clock offset is added to every time the server reads, and the
        // rotation overlap to a rotation's time: bounded so neither can
        // overflow a date (the API accepts the years 1900 to 2199).
        if self.clock_offset_secs.unsigned_abs() > MAX_CLOCK_OFFSET_SECS {
            return Err(ConfigError::Rule(format!(
                "clock_offset_secs must be within ±{MAX_CLOCK_OFFSET_SECS} (100 years)"
            )));
        }
        if self.webhooks.rotation_overlap_secs > 30 * 24 * 3600 {
            return Err(ConfigError::Rule(
                "webhooks.rotation_overlap_secs must be at most 30 days (2592000)".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Rule(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

/// A secret: readable through `expose`, never through `Debug`, `Display` or
/// serialization, which show it with credentials masked.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// For URLs, keeps scheme, user and host and masks the password; else masks all.
    pub fn redacted(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let (auth, host) = match rest.rsplit_once('@') {
                    Some((auth, host)) => (Some(auth), host),
                    None => (None, rest),
                };
                let user = auth.map(|a| a.split(':').next().unwrap_or(""));
                // Drop query parameters: they may carry passwords too.
                let host = host.split('?').next().unwrap_or(host);
                match user {
                    Some(user) => format!("{scheme}://{user}:***@{host}"),
                    None => format!("{scheme}://{host}"),
                }
            }
            None => "***".into(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own large error
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("postgres://buktor:hunter2@db:5432/buktor?password=x");
        assert_eq!(format!("{s:?}"), "postgres://buktor:***@db:5432/buktor");
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        assert_eq!(Secret::new("plain").redacted(), "***");
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("b.toml", "listen = \"127.0.0.1:9000\"\npool_size = 4\n[rate_limit]\nrequests = 10\nwindow_secs = 1\n")?;
            jail.set_env("BUKTOR_POOL_SIZE", "7");
            jail.set_env("BUKTOR_RATE_LIMIT__REQUESTS", "99");
            jail.set_env("BUKTOR_CONFIG", "b.toml");
            jail.set_env("BUKTOR_TEST_SOMETHING", "not a configuration key");
            jail.set_env(
                "BUKTOR_MIDDLEWARE_LISTEN",
                "the middleware's, not the server's",
            );
            let c = Config::load(Some(std::path::Path::new("b.toml"))).unwrap();
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.pool_size, 7);
            assert_eq!(c.rate_limit.requests, 99);
            assert_eq!(c.rate_limit.window_secs, 1);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_fail_with_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BUKTOR_POOL_SIZE", "many");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("pool_size"), "{err}");
            jail.set_env("BUKTOR_POOL_SIZE", "1");
            jail.set_env("DATABASE_URL", "mysql://x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("postgres://"), "{err}");
            jail.set_env("DATABASE_URL", "postgres://localhost/buktor");
            // Durations that would overflow a date are refused at start-up.
            jail.set_env("BUKTOR_CLOCK_OFFSET_SECS", i64::MIN.to_string());
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("clock_offset_secs"), "{err}");
            jail.set_env("BUKTOR_CLOCK_OFFSET_SECS", "0");
            jail.set_env(
                "BUKTOR_WEBHOOKS__ROTATION_OVERLAP_SECS",
                u64::MAX.to_string(),
            );
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("rotation_overlap_secs"), "{err}");
            Ok(())
        });
    }
}
