//! The middleware's one typed configuration: built-in defaults < a TOML file
//! (`--config FILE`, `BUKTOR_MIDDLEWARE_CONFIG`, or `./buktor-middleware.toml`
//! if present) < `BUKTOR_MIDDLEWARE_*` environment variables (nested keys
//! with `__`, e.g. `BUKTOR_MIDDLEWARE_SCHEDULE__INTERVAL_SECS`).
//!
//! [`MiddlewareConfig::load`] validates everything a running middleware
//! needs (secrets, database URL, mapping file, schedule, windows) and fails
//! at start naming the key; [`Settings`] is the parsed result the rest of the
//! module works with.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use super::mapping::Mapping;
use super::mllp::Hl7Config;
use super::schedule::{CronExpr, Schedule, TimeWindow, Zone};
use crate::config::{Log, LogFormat, Secret};
use crate::webhooks::signature::{SigningSecret, DEFAULT_TOLERANCE_SECS};

/// The file read when neither `--config` nor `BUKTOR_MIDDLEWARE_CONFIG` names one.
pub const DEFAULT_FILE: &str = "buktor-middleware.toml";
pub const ENV_PREFIX: &str = "BUKTOR_MIDDLEWARE_";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareConfig {
    /// Where the receiver listens. Port 0 picks a free port (printed at start).
    pub listen: SocketAddr,
    /// Where the local store keeps `middleware.db`.
    pub data_dir: PathBuf,
    /// The endpoint's `whsec_` signing secrets. A message signed by any one
    /// of them is accepted, so a secret can be rotated without downtime.
    pub secrets: Vec<Secret>,
    /// How far a `webhook-timestamp` may be from this machine's clock, either way.
    pub tolerance_secs: i64,
    /// Larger request bodies are answered 413.
    pub max_body_bytes: usize,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// How long in-flight requests and a running sync batch get on SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// IANA time zone of the time windows and the cron expression; unset =
    /// this machine's local time.
    pub time_zone: Option<String>,
    /// Synced, skipped and ignored messages older than this are deleted from
    /// the local store; 0 keeps them forever.
    pub retention_days: u32,
    /// The HIS's own SQL database. Unset: no database output.
    pub his_db: Option<HisDbConfig>,
    /// HL7 v2 SIU messages over MLLP to the HIS. Unset: no HL7 output.
    pub hl7: Option<Hl7Config>,
    pub schedule: ScheduleConfig,
    pub retry: RetryConfig,
    pub log: Log,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HisDbConfig {
    /// `postgres://…` or `sqlite:PATH` (also `sqlite://PATH`).
    pub url: Secret,
    /// The TOML mapping file: target table and columns (see `docs/middleware.md`).
    /// A relative path is taken from the configuration file's directory.
    pub mapping: PathBuf,
    /// Asked before every pass; the pass is skipped unless it succeeds,
    /// e.g. `SELECT 1 FROM his.maintenance WHERE open` (it must return a row).
    #[serde(default)]
    pub health_query: Option<String>,
    /// Rows per transaction.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Connecting gives up after this long.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// One batch (or the health query) gives up after this long; the
    /// connection is then dropped and the batch retried later.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_secs: u64,
}

fn default_batch_size() -> usize {
    500
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_statement_timeout() -> u64 {
    60
}

/// When the sync runs: every `interval_secs`, or at the times of `cron`
/// (5 fields, Unix semantics) — not both — and only inside `windows`
/// (`HH:MM-HH:MM` in `time_zone`, several allowed; none = always).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub interval_secs: Option<u64>,
    pub cron: Option<String>,
    pub windows: Vec<String>,
}

/// Backoff for a message whose output was unavailable: `initial_secs`,
/// doubling per attempt, at most `max_secs`. Such a message is retried
/// forever; only permanent errors make it `failed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub initial_secs: u64,
    pub max_secs: u64,
}

impl Default for MiddlewareConfig {
    fn default() -> Self {
        MiddlewareConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8090)),
            data_dir: PathBuf::from("middleware-data"),
            secrets: Vec::new(),
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            max_body_bytes: 1024 * 1024,
            workers: 0,
            shutdown_timeout_secs: 30,
            time_zone: None,
            retention_days: 30,
            his_db: None,
            hl7: None,
            schedule: ScheduleConfig {
                interval_secs: None,
                cron: None,
                windows: Vec::new(),
            },
            retry: RetryConfig {
                initial_secs: 30,
                max_secs: 3600,
            },
            log: Log {
                format: LogFormat::Pretty,
                filter: "info".into(),
            },
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

fn rule(message: impl Into<String>) -> ConfigError {
    ConfigError::Rule(message.into())
}

/// Where the HIS database is.
#[derive(Clone, PartialEq)]
pub enum HisDbUrl {
    Postgres(Secret),
    Sqlite(PathBuf),
}

impl std::fmt::Debug for HisDbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HisDbUrl::Postgres(url) => write!(f, "Postgres({url})"),
            HisDbUrl::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
        }
    }
}

impl HisDbUrl {
    pub fn parse(url: &Secret) -> Result<HisDbUrl, ConfigError> {
        let text = url.expose();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(HisDbUrl::Postgres(url.clone()));
        }
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(rule("his_db.url sqlite: needs a file path"));
            }
            return Ok(HisDbUrl::Sqlite(PathBuf::from(path)));
        }
        Err(rule("his_db.url must be a postgres:// URL or sqlite:PATH"))
    }
}

/// The HIS database output, parsed.
#[derive(Debug, Clone)]
pub struct HisDbSettings {
    pub url: HisDbUrl,
    pub mapping: Mapping,
    pub health_query: Option<String>,
    pub batch_size: usize,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

/// Everything the middleware runs with, parsed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub secrets: Vec<SigningSecret>,
    pub tolerance_secs: i64,
    pub max_body_bytes: usize,
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub zone: Zone,
    pub retention_days: u32,
    pub his_db: Option<HisDbSettings>,
    pub hl7: Option<Hl7Config>,
    pub schedule: Schedule,
    pub windows: Vec<TimeWindow>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl MiddlewareConfig {
    /// Defaults, then `file` (it must exist) or `./buktor-middleware.toml`
    /// if present, then the environment. Not validated: see [`Self::settings`].
    pub fn load(file: Option<&Path>) -> Result<MiddlewareConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(MiddlewareConfig::default()));
        figment = match file {
            Some(path) => {
                if !path.exists() {
                    return Err(rule(format!(
                        "configuration file {} does not exist",
                        path.display()
                    )));
                }
                figment.merge(Toml::file(path))
            }
            None => figment.merge(Toml::file(DEFAULT_FILE)),
        };
        figment = figment.merge(Env::prefixed(ENV_PREFIX).ignore(&["config"]).split("__"));
        let config: MiddlewareConfig = figment.extract().map_err(Box::new)?;
        Ok(config)
    }

    /// Parses and checks every value; relative mapping paths are resolved
    /// against `base_dir` (the configuration file's directory).
    pub fn settings(&self, base_dir: &Path) -> Result<Settings, ConfigError> {
        if self.secrets.is_empty() {
            return Err(rule("secrets must name at least one whsec_ signing secret"));
        }
        let secrets = self
            .secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                SigningSecret::parse(s.expose()).map_err(|e| rule(format!("secrets[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.tolerance_secs < 1 {
            return Err(rule("tolerance_secs must be at least 1"));
        }
        // Subtracted from now when old messages are purged: bounded so the
        // date cannot overflow.
        if self.retention_days > 36_500 {
            return Err(rule("retention_days must be at most 36500 (100 years)"));
        }
        if self.max_body_bytes < 1024 {
            return Err(rule("max_body_bytes must be at least 1024"));
        }
        let zone = match &self.time_zone {
            None => Zone::Local,
            Some(name) => Zone::Named(
                name.parse()
                    .map_err(|_| rule(format!("time_zone: {name:?} is not an IANA time zone")))?,
            ),
        };
        let his_db = match &self.his_db {
            None => None,
            Some(db) => Some(db.settings(base_dir)?),
        };
        if let Some(hl7) = &self.hl7 {
            hl7.validate().map_err(rule)?;
        }
        if his_db.is_none() && self.hl7.is_none() {
            return Err(rule(
                "configure an output: his_db (the HIS database), hl7, or both",
            ));
        }
        let schedule = match (&self.schedule.interval_secs, &self.schedule.cron) {
            (Some(_), Some(_)) => {
                return Err(rule("schedule: set interval_secs or cron, not both"))
            }
            (Some(0), None) => return Err(rule("schedule.interval_secs must be at least 1")),
            (Some(secs), None) => Schedule::Interval(Duration::from_secs(*secs)),
            (None, Some(expr)) => Schedule::Cron(
                CronExpr::parse(expr).map_err(|e| rule(format!("schedule.cron: {e}")))?,
            ),
            (None, None) => Schedule::Interval(Duration::from_secs(60)),
        };
        let windows = self
            .schedule
            .windows
            .iter()
            .map(|w| TimeWindow::parse(w).map_err(|e| rule(format!("schedule.windows: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if self.retry.initial_secs == 0 || self.retry.max_secs < self.retry.initial_secs {
            return Err(rule(
                "retry: initial_secs must be at least 1 and max_secs at least initial_secs",
            ));
        }
        Ok(Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            secrets,
            tolerance_secs: self.tolerance_secs,
            max_body_bytes: self.max_body_bytes,
            workers: self.workers,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_secs),
            zone,
            retention_days: self.retention_days,
            his_db,
            hl7: self.hl7.clone(),
            schedule,
            windows,
            retry_initial: Duration::from_secs(self.retry.initial_secs),
            retry_max: Duration::from_secs(self.retry.max_secs),
        })
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

impl HisDbConfig {
    fn settings(&self, base_dir: &Path) -> Result<HisDbSettings, ConfigError> {
        let url = HisDbUrl::parse(&self.url)?;
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(rule("his_db.batch_size must be between 1 and 10000"));
        }
        if self.connect_timeout_secs == 0 || self.statement_timeout_secs == 0 {
            return Err(rule(
                "his_db.connect_timeout_secs and his_db.statement_timeout_secs must be at least 1",
            ));
        }
        let path = if self.mapping.is_absolute() {
            self.mapping.clone()
        } else {
            base_dir.join(&self.mapping)
        };
        let mapping = Mapping::load(&path)
            .map_err(|e| rule(format!("his_db.mapping {}: {e}", path.display())))?;
        Ok(HisDbSettings {
            url,
            mapping,
            health_query: self
                .health_query
                .as_ref()
                .filter(|q| !q.trim().is_empty())
                .cloned(),
            batch_size: self.batch_size,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            statement_timeout: Duration::from_secs(self.statement_timeout_secs),
        })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own large error
mod tests {
    use super::*;

    const MAPPING: &str = r#"
table = "his_appointments"
[key]
column = "appointment_id"
[version]
column = "version"
[[columns]]
column = "status"
field = "data.appointment.status"
type = "text"
"#;

    #[test]
    fn file_and_environment_give_settings_and_secrets_never_print() {
        figment::Jail::expect_with(|jail| {
            let secret = SigningSecret::generate().expose();
            jail.create_file("mapping.toml", MAPPING)?;
            jail.create_file(
                "m.toml",
                &format!(
                    "secrets = [\"{secret}\"]\ntime_zone = \"Europe/Amsterdam\"\n\
                     [his_db]\nurl = \"postgres://his:hunter2@db/his\"\nmapping = \"mapping.toml\"\n\
                     [schedule]\ncron = \"*/5 * * * *\"\nwindows = [\"22:00-06:00\"]\n"
                ),
            )?;
            jail.set_env("BUKTOR_MIDDLEWARE_HIS_DB__BATCH_SIZE", "7");
            jail.set_env("BUKTOR_MIDDLEWARE_RETRY__MAX_SECS", "60");
            let config = MiddlewareConfig::load(Some(Path::new("m.toml"))).unwrap();
            let settings = config.settings(jail.directory()).unwrap();
            let db = settings.his_db.as_ref().unwrap();
            assert_eq!(db.batch_size, 7);
            assert_eq!(settings.retry_max, Duration::from_secs(60));
            assert_eq!(settings.windows.len(), 1);
            assert!(matches!(settings.schedule, Schedule::Cron(_)));
            let shown = format!("{config:?} {settings:?} {}", config.to_redacted_toml());
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains(&secret[6..]), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn the_documented_example_files_are_valid() {
        figment::Jail::expect_with(|jail| {
            let secret = SigningSecret::generate().expose();
            jail.set_env("BUKTOR_MIDDLEWARE_SECRETS", format!("[\"{secret}\"]"));
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
            let config =
                MiddlewareConfig::load(Some(&docs.join("middleware.example.toml"))).unwrap();
            let settings = config.settings(&docs).unwrap();
            let db = settings.his_db.unwrap();
            assert_eq!(
                db.mapping.table.to_string(),
                "scheduling.buktor_appointments"
            );
            assert_eq!(settings.windows.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_fail_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("mapping.toml", MAPPING)?;
            let base = "[his_db]\nurl = \"sqlite:his.db\"\nmapping = \"mapping.toml\"\n";
            let cases = [
                ("secrets = [\"whsec_c2hvcnQ=\"]\n", "secrets[0]"),
                ("secrets = []\n", "secrets"),
                (
                    "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n[schedule]\nwindows = [\"25:00-01:00\"]\n",
                    "schedule.windows",
                ),
                (
                    "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n[schedule]\ninterval_secs = 5\ncron = \"* * * * *\"\n",
                    "not both",
                ),
                (
                    "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\ntime_zone = \"Mars/Olympus\"\n",
                    "time_zone",
                ),
                (
                    "secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\nretention_days = 4294967295\n",
                    "retention_days",
                ),
            ];
            for (i, (text, key)) in cases.iter().enumerate() {
                let name = format!("c{i}.toml");
                let file = format!("{text}{base}");
                jail.create_file(&name, &file)?;
                let err = MiddlewareConfig::load(Some(Path::new(&name)))
                    .and_then(|c| c.settings(jail.directory()).map(|_| ()))
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key), "{key}: {err}");
            }
            Ok(())
        });
    }
}
