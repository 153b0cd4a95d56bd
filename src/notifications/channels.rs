//! The two ways a patient is told: e-mail over SMTP (lettre) and a text
//! message through a hospital's SMS gateway (an HTTP POST of JSON, signed
//! like Buktor's webhooks so the gateway can check it came from Buktor).
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use buktor_domain::TenantId;
use hmac::{Hmac, Mac};
use lettre::message::header::{ContentType, HeaderName, HeaderValue, MIME_VERSION_1_0};
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::config::{Notifications as Config, SmtpTls};
use crate::webhooks::signature::{self, SigningSecret};

/// Why a send failed: what is recorded (never a credential).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the address {0:?} is not usable")]
    BadAddress(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("the SMS gateway answered HTTP {status}")]
    GatewayStatus { status: u16 },
    #[error("the SMS gateway could not be reached: {0}")]
    Gateway(String),
    #[error("sending took longer than {0:?}")]
    Timeout(Duration),
}

/// One e-mail to send.
pub struct Email<'a> {
    pub notification_id: Uuid,
    pub to_name: Option<&'a str>,
    pub to: &'a str,
    pub language: &'a str,
    pub subject: &'a str,
    pub body: &'a str,
}

/// The SMTP side, built once from the configuration.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

impl Mailer {
    /// `None` when no SMTP server is configured.
    pub fn new(config: &Config) -> anyhow::Result<Option<Mailer>> {
        let Some(host) = &config.smtp_host else {
            return Ok(None);
        };
        let timeout = Duration::from_millis(config.send_timeout_ms);
        let mut builder = match config.smtp_tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        }
        .port(config.smtp_port)
        .timeout(Some(timeout));
        if let (Some(user), Some(password)) = (&config.smtp_username, &config.smtp_password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        Ok(Some(Mailer {
            transport: builder.build(),
            from: config.from.parse()?,
            timeout,
        }))
    }

    pub async fn send(&self, email: &Email<'_>) -> Result<(), SendError> {
        let address = email
            .to
            .parse::<lettre::Address>()
            .map_err(|_| SendError::BadAddress(email.to.to_owned()))?;
        let to = Mailbox::new(email.to_name.map(str::to_owned), address);
        let mut message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            // Stable per notification: a resend after a crash (see
            // docs/notifications.md) carries the same id.
            .message_id(Some(format!("<{}@buktor>", email.notification_id)))
            // RFC 2045 §4: a message with MIME headers (Content-Type,
            // Content-Transfer-Encoding) must say `MIME-Version: 1.0`;
            // lettre adds it only for (multi|single)part bodies.
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.to_owned())
            .map_err(|e| SendError::Smtp(e.to_string()))?;
        if let Ok(name) = HeaderName::new_from_ascii("Content-Language".into()) {
            message
                .headers_mut()
                .insert_raw(HeaderValue::new(name, email.language.to_owned()));
        }
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(SendError::Smtp(e.to_string())),
            Err(_) => Err(SendError::Timeout(self.timeout)),
        }
    }
}

/// The JSON body POSTed to an SMS gateway.
#[derive(Debug, Serialize)]
pub struct SmsBody<'a> {
    /// E.164, e.g. `+31612345678`.
    pub to: &'a str,
    pub text: &'a str,
    pub language: &'a str,
    pub notification_id: Uuid,
    pub appointment_id: Uuid,
    /// booked, rescheduled, cancelled or reminder.
    pub kind: &'a str,
}

/// The SMS side: an HTTP client and the key each hospital's secret is derived from.
pub struct SmsSender {
    client: reqwest::Client,
    key: Option<crate::config::Secret>,
}

impl SmsSender {
    pub fn new(config: &Config) -> anyhow::Result<SmsSender> {
        Ok(SmsSender {
            client: reqwest::Client::builder()
                .timeout(Duration::from_millis(config.send_timeout_ms))
                .build()?,
            key: config.sms_signing_key.clone(),
        })
    }

    /// Whether text messages can be signed (the key is configured).
    pub fn available(&self) -> bool {
        self.key.is_some()
    }

    /// The secret a hospital's gateway checks signatures with.
    pub fn secret_for(&self, tenant: TenantId) -> Option<SigningSecret> {
        self.key
            .as_ref()
            .map(|key| tenant_secret(key.expose(), tenant))
    }

    pub async fn send(
        &self,
        tenant: TenantId,
        url: &str,
        body: &SmsBody<'_>,
    ) -> Result<(), SendError> {
        let secret = self
            .secret_for(tenant)
            .ok_or_else(|| SendError::Gateway("no SMS signing key is configured".into()))?;
        let bytes = serde_json::to_vec(body).map_err(|e| SendError::Gateway(e.to_string()))?;
        // The receiver checks the timestamp against its own clock: the real
        // time, not the server's (possibly shifted) one.
        let timestamp = chrono::Utc::now().timestamp();
        let id = format!("msg_{}", body.notification_id.simple());
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "Buktor-Notifications/1");
        for (name, value) in signature::headers(&[secret], &id, timestamp, &bytes) {
            request = request.header(name, value);
        }
        let response = request
            .body(bytes)
            .send()
            .await
            .map_err(|e| SendError::Gateway(without_url(&e)))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::GatewayStatus {
                status: status.as_u16(),
            })
        }
    }
}

/// A request error's text without its URL (it may carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// HMAC-SHA256 of the tenant id under `key`: a per-hospital secret that
/// every instance derives alike and nothing has to store.
pub fn tenant_secret(key: &str, tenant: TenantId) -> SigningSecret {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"buktor-sms:");
    mac.update(tenant.as_uuid().as_bytes());
    let bytes = mac.finalize().into_bytes();
    SigningSecret::parse(&format!("whsec_{}", STANDARD.encode(bytes)))
        .expect("32 bytes make a valid secret")
}

/// `a***@example.org`; `+31******78`: enough for an auditor to tell which
/// address, not enough to harvest it.
pub fn mask(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 5 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask("ada@example.org"), "a***@example.org");
        assert_eq!(mask("+31612345678"), "+31*******78");
    }

    #[test]
    fn each_hospital_gets_its_own_stable_secret() {
        let a = TenantId::from_uuid(Uuid::from_u128(1));
        let b = TenantId::from_uuid(Uuid::from_u128(2));
        assert_eq!(tenant_secret("k", a), tenant_secret("k", a));
        assert_ne!(tenant_secret("k", a), tenant_secret("k", b));
        assert_ne!(tenant_secret("k", a), tenant_secret("j", a));
    }
}
