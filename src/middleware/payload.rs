//! A received body, checked against the payload contract of
//! `docs/webhooks.md` (version 1) before anything is stored.
use serde_json::Value as Json;

/// The payload versions this middleware understands.
pub const SUPPORTED_VERSION: i64 = 1;

/// A `webhook-id`: 1 to 255 visible ASCII characters (Buktor's are
/// `msg_` + 32 hex digits; other senders' are accepted if they fit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WebhookId(String);

impl WebhookId {
    pub fn parse(text: &str) -> Result<WebhookId, String> {
        if text.is_empty() || text.len() > 255 {
            return Err("a webhook-id has 1 to 255 characters".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a webhook-id is visible ASCII without spaces".into());
        }
        Ok(WebhookId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for WebhookId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WebhookId::parse(s)
    }
}

/// What the receiver stores for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub webhook_id: WebhookId,
    pub event_type: String,
    pub appointment_id: Option<String>,
    pub appointment_version: Option<i64>,
    /// The body exactly as received and signed.
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// 400: not JSON at all, or not UTF-8.
    #[error("the body is not a JSON object: {0}")]
    Malformed(String),
    /// 422: a payload version this middleware does not know.
    #[error(
        "payload version {0} is not supported (this middleware reads version {SUPPORTED_VERSION})"
    )]
    UnsupportedVersion(String),
    /// 422: JSON, but not the documented shape.
    #[error("{0}")]
    Invalid(String),
}

impl Incoming {
    pub fn parse(webhook_id: WebhookId, body: &[u8]) -> Result<Incoming, PayloadError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| PayloadError::Malformed("it is not UTF-8".into()))?;
        let json: Json =
            serde_json::from_str(text).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        let Json::Object(object) = &json else {
            return Err(PayloadError::Malformed("it is not an object".into()));
        };
        match object.get("version") {
            Some(v) if v.as_i64() == Some(SUPPORTED_VERSION) => {}
            Some(v) => return Err(PayloadError::UnsupportedVersion(v.to_string())),
            None => return Err(PayloadError::Invalid("the body has no \"version\"".into())),
        }
        let event_type = object
            .get("type")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PayloadError::Invalid("the body has no \"type\" string".into()))?
            .to_owned();
        if !object.get("data").is_some_and(Json::is_object) {
            return Err(PayloadError::Invalid(
                "the body has no \"data\" object".into(),
            ));
        }
        let (appointment_id, appointment_version) = if event_type.starts_with("appointment.") {
            let appointment = json.pointer("/data/appointment");
            let id = appointment
                .and_then(|a| a.get("id"))
                .and_then(Json::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    PayloadError::Invalid(format!(
                        "a {event_type} body needs data.appointment.id (a string)"
                    ))
                })?;
            let version = appointment
                .and_then(|a| a.get("version"))
                .and_then(Json::as_i64)
                .ok_or_else(|| {
                    PayloadError::Invalid(format!(
                        "a {event_type} body needs data.appointment.version (an integer)"
                    ))
                })?;
            (Some(id.to_owned()), Some(version))
        } else {
            (None, None)
        };
        Ok(Incoming {
            webhook_id,
            event_type,
            appointment_id,
            appointment_version,
            body: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> WebhookId {
        WebhookId::parse("msg_1").unwrap()
    }

    #[test]
    fn an_appointment_body_gives_its_id_and_version() {
        let body = br#"{"type":"appointment.booked","version":1,"data":{"appointment":{"id":"a1","version":2}}}"#;
        let m = Incoming::parse(id(), body).unwrap();
        assert_eq!(m.event_type, "appointment.booked");
        assert_eq!(m.appointment_id.as_deref(), Some("a1"));
        assert_eq!(m.appointment_version, Some(2));
        let other = br#"{"type":"schedule.changed","version":1,"data":{"schedule":{}}}"#;
        assert_eq!(Incoming::parse(id(), other).unwrap().appointment_id, None);
    }

    #[test]
    fn bodies_outside_the_contract_are_refused_by_kind() {
        type Case = (&'static [u8], fn(&PayloadError) -> bool);
        let cases: [Case; 5] = [
            (b"{not json", |e| matches!(e, PayloadError::Malformed(_))),
            (b"[1]", |e| matches!(e, PayloadError::Malformed(_))),
            (
                br#"{"type":"appointment.booked","version":2,"data":{}}"#,
                |e| matches!(e, PayloadError::UnsupportedVersion(_)),
            ),
            (
                br#"{"type":"appointment.booked","version":1,"data":{}}"#,
                |e| matches!(e, PayloadError::Invalid(_)),
            ),
            (br#"{"version":1,"data":{}}"#, |e| {
                matches!(e, PayloadError::Invalid(_))
            }),
        ];
        for (body, is) in cases {
            let err = Incoming::parse(id(), body).unwrap_err();
            assert!(is(&err), "{}: {err:?}", String::from_utf8_lossy(body));
        }
        assert!(WebhookId::parse("").is_err());
        assert!(WebhookId::parse("a b").is_err());
        assert!(WebhookId::parse(&"x".repeat(256)).is_err());
    }
}
