//! Creating, changing and rotating endpoints: the checks and rules the
//! GraphQL mutations and `buktor endpoint` share.
use buktor_domain::TenantId;
use chrono::{Duration, Utc};
use uuid::Uuid;

use super::payload::TYPES;
use super::signature::SigningSecret;
use crate::store::webhooks::{EndpointRecord, EndpointSpec, WebhookStore};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no webhook endpoint {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &'static str, message: impl Into<String>) -> EndpointError {
    EndpointError::Invalid {
        field,
        message: message.into(),
    }
}

/// Everything an endpoint can be given; on update, `None` keeps what it has.
#[derive(Debug, Clone, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub practitioner_ids: Option<Vec<Uuid>>,
    pub departments: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the limit.
    pub rate_limit_per_second: Option<Option<u32>>,
    pub max_attempts: Option<Option<u32>>,
    pub disable_on_dead_letter: Option<bool>,
}

const MAX_URL: usize = 2048;
const MAX_LIST: usize = 200;

fn check_url(url: &str) -> Result<(), EndpointError> {
    if url.len() > MAX_URL {
        return Err(invalid("url", format!("longer than {MAX_URL} characters")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid("url", e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("url", "must be an http:// or https:// URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", "names no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "url",
            "must not carry credentials: the signature authenticates Buktor",
        ));
    }
    Ok(())
}

fn check(spec: &EndpointSpec) -> Result<(), EndpointError> {
    check_url(&spec.url)?;
    if spec.description.chars().count() > 200 {
        return Err(invalid("description", "longer than 200 characters"));
    }
    // As every other text of the API (and `buktor endpoint create`).
    if spec
        .description
        .chars()
        .any(buktor_domain::values::is_unsafe_char)
    {
        return Err(invalid(
            "description",
            "must not contain control characters or bidirectional overrides",
        ));
    }
    if let Some(t) = spec
        .event_types
        .iter()
        .find(|t| !TYPES.contains(&t.as_str()))
    {
        return Err(invalid(
            "eventTypes",
            format!("unknown type {t:?}; known: {}", TYPES.join(", ")),
        ));
    }
    if spec.event_types.len() > MAX_LIST
        || spec.practitioner_ids.len() > MAX_LIST
        || spec.departments.len() > MAX_LIST
    {
        return Err(invalid(
            "eventTypes",
            format!("filter lists hold at most {MAX_LIST} entries"),
        ));
    }
    if let Some(d) = spec
        .departments
        .iter()
        .find(|d| d.trim().is_empty() || d.len() > 100)
    {
        return Err(invalid(
            "departments",
            format!("{d:?} is not a department name (1 to 100 characters)"),
        ));
    }
    if spec
        .rate_limit_per_second
        .is_some_and(|r| !(1..=10_000).contains(&r))
    {
        return Err(invalid("rateLimitPerSecond", "must be 1 to 10000"));
    }
    if spec.max_attempts.is_some_and(|m| !(1..=50).contains(&m)) {
        return Err(invalid("maxAttempts", "must be 1 to 50"));
    }
    Ok(())
}

fn apply(spec: &mut EndpointSpec, c: EndpointChanges) {
    let dedup = |v: Vec<String>| {
        let mut v: Vec<String> = v.into_iter().map(|s| s.trim().to_owned()).collect();
        v.sort();
        v.dedup();
        v
    };
    if let Some(url) = c.url {
        spec.url = url.trim().to_owned();
    }
    if let Some(d) = c.description {
        spec.description = d.trim().to_owned();
    }
    if let Some(t) = c.event_types {
        spec.event_types = dedup(t);
    }
    if let Some(mut p) = c.practitioner_ids {
        p.sort();
        p.dedup();
        spec.practitioner_ids = p;
    }
    if let Some(d) = c.departments {
        spec.departments = dedup(d);
    }
    if let Some(e) = c.enabled {
        spec.enabled = e;
    }
    if let Some(r) = c.rate_limit_per_second {
        spec.rate_limit_per_second = r;
    }
    if let Some(m) = c.max_attempts {
        spec.max_attempts = m;
    }
    if let Some(d) = c.disable_on_dead_letter {
        spec.disable_on_dead_letter = d;
    }
}

/// Creates an endpoint (enabled unless told otherwise). The secret is in the
/// record; show it to the caller once.
pub async fn create(
    store: &dyn WebhookStore,
    tenant: TenantId,
    changes: EndpointChanges,
) -> Result<EndpointRecord, EndpointError> {
    if changes.url.is_none() {
        return Err(invalid("url", "is required"));
    }
    let mut spec = EndpointSpec {
        url: String::new(),
        description: String::new(),
        event_types: vec![],
        practitioner_ids: vec![],
        departments: vec![],
        enabled: true,
        rate_limit_per_second: None,
        max_attempts: None,
        disable_on_dead_letter: false,
    };
    apply(&mut spec, changes);
    check(&spec)?;
    let now = Utc::now();
    let record = EndpointRecord {
        id: Uuid::now_v7(),
        tenant,
        spec,
        secret: SigningSecret::generate(),
        previous_secret: None,
        disabled_reason: None,
        created_at: now,
        updated_at: now,
    };
    store.create_endpoint(&record).await?;
    tracing::info!(tenant = %tenant, endpoint = %record.id, url = %record.spec.url, "webhook endpoint created");
    Ok(record)
}

pub async fn get(
    store: &dyn WebhookStore,
    tenant: TenantId,
    id: Uuid,
) -> Result<EndpointRecord, EndpointError> {
    store
        .endpoint(tenant, id)
        .await?
        .ok_or(EndpointError::NotFound(id))
}

pub async fn update(
    store: &dyn WebhookStore,
    tenant: TenantId,
    id: Uuid,
    changes: EndpointChanges,
) -> Result<EndpointRecord, EndpointError> {
    let mut record = get(store, tenant, id).await?;
    let enabling = changes.enabled == Some(true);
    apply(&mut record.spec, changes);
    check(&record.spec)?;
    if enabling {
        record.disabled_reason = None;
    }
    record.updated_at = Utc::now();
    if !store.update_endpoint(&record).await? {
        return Err(EndpointError::NotFound(id));
    }
    tracing::info!(tenant = %tenant, endpoint = %id, enabled = record.spec.enabled, "webhook endpoint changed");
    Ok(record)
}

/// A new secret signs from now on; the old one also signs for `overlap`, so
/// a receiver can switch to the new one without losing a message.
pub async fn rotate_secret(
    store: &dyn WebhookStore,
    tenant: TenantId,
    id: Uuid,
    overlap: Duration,
) -> Result<EndpointRecord, EndpointError> {
    if overlap < Duration::zero() || overlap > Duration::days(30) {
        return Err(invalid("overlapMinutes", "must be 0 to 30 days"));
    }
    let mut record = get(store, tenant, id).await?;
    let now = Utc::now();
    let old = std::mem::replace(&mut record.secret, SigningSecret::generate());
    record.previous_secret = (overlap > Duration::zero()).then(|| (old, now + overlap));
    record.updated_at = now;
    if !store.update_endpoint(&record).await? {
        return Err(EndpointError::NotFound(id));
    }
    tracing::info!(tenant = %tenant, endpoint = %id, overlap_secs = overlap.num_seconds(), "webhook secret rotated");
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> EndpointSpec {
        let mut s = EndpointSpec {
            url: String::new(),
            description: String::new(),
            event_types: vec![],
            practitioner_ids: vec![],
            departments: vec![],
            enabled: true,
            rate_limit_per_second: None,
            max_attempts: None,
            disable_on_dead_letter: false,
        };
        apply(
            &mut s,
            EndpointChanges {
                url: Some(url.into()),
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn urls_must_be_plain_http_or_https() {
        assert!(check(&spec("https://his.example.org/hooks")).is_ok());
        assert!(check(&spec("http://127.0.0.1:9000/x")).is_ok());
        for bad in [
            "ftp://his/x",
            "not a url",
            "https://user:pw@his/x",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    check(&spec(bad)),
                    Err(EndpointError::Invalid { field: "url", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn filters_are_checked_and_normalised() {
        let mut s = spec("https://his/x");
        apply(
            &mut s,
            EndpointChanges {
                event_types: Some(vec![
                    "appointment.booked".into(),
                    " appointment.booked".into(),
                ]),
                ..Default::default()
            },
        );
        assert_eq!(s.event_types, vec!["appointment.booked"]);
        s.event_types = vec!["appointment.deleted".into()];
        assert!(matches!(
            check(&s),
            Err(EndpointError::Invalid {
                field: "eventTypes",
                ..
            })
        ));
        s.event_types = vec![];
        s.rate_limit_per_second = Some(0);
        assert!(check(&s).is_err());
        s.rate_limit_per_second = Some(5);
        s.max_attempts = Some(51);
        assert!(check(&s).is_err());
    }
}
