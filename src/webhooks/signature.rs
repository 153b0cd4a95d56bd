//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! A message is signed over `"{webhook-id}.{webhook-timestamp}.{body}"` with
//! HMAC-SHA256; the `webhook-signature` header holds `v1,<base64>` for every
//! signing secret, separated by spaces, so that while a secret is rotated
//! both the old and the new one sign and a receiver holding either accepts.
//! Secrets are written `whsec_<base64 of the key bytes>`.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const PREFIX: &str = "whsec_";
/// Key bytes of a secret Buktor makes: the 24 to 64 the specification allows.
const GENERATED_KEY_BYTES: usize = 32;
/// How far a receiver accepts a timestamp from its own clock, either way.
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("a webhook secret is written whsec_ followed by base64 of 24 to 64 bytes")]
    MalformedSecret,
    #[error("the {0} header is missing or not text")]
    MissingHeader(&'static str),
    #[error("the webhook-timestamp is not a number of seconds")]
    MalformedTimestamp,
    #[error("the webhook-timestamp is {0} s away from now, more than allowed")]
    StaleTimestamp(i64),
    #[error("no signature in webhook-signature matches")]
    NoMatch,
}

/// A signing key. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        rand::thread_rng().fill_bytes(&mut key);
        SigningSecret(key)
    }

    /// From `whsec_<base64>` (the prefix is optional, as in the specification's libraries).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let encoded = text.strip_prefix(PREFIX).unwrap_or(text);
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SignatureError::MalformedSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SignatureError::MalformedSecret);
        }
        Ok(SigningSecret(key))
    }

    /// `whsec_<base64>`: what an endpoint's owner is shown, once.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 HMAC-SHA256>` of the message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The three headers of a message signed with every one of `secrets`.
pub fn headers(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    let signatures: Vec<String> = secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect();
    [
        (HEADER_ID, id.to_owned()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, signatures.join(" ")),
    ]
}

/// Checks a received message: the timestamp within `tolerance_secs` of
/// `now` and one `v1` signature made with `secret` (compared in constant time).
pub fn verify(
    secret: &SigningSecret,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let id = header(HEADER_ID).ok_or(SignatureError::MissingHeader(HEADER_ID))?;
    let timestamp =
        header(HEADER_TIMESTAMP).ok_or(SignatureError::MissingHeader(HEADER_TIMESTAMP))?;
    let signatures =
        header(HEADER_SIGNATURE).ok_or(SignatureError::MissingHeader(HEADER_SIGNATURE))?;
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::MalformedTimestamp)?;
    // Saturating: a timestamp near i64::MIN or MAX must not overflow (a
    // panic in debug builds, a wrapped and passing skew in release ones).
    let skew = now.saturating_sub(timestamp);
    if skew.unsigned_abs() > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::StaleTimestamp(skew));
    }
    for candidate in signatures.split_whitespace() {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            continue;
        };
        if secret.mac(&id, timestamp, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_example_as_its_libraries_do() {
        let secret = SigningSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            secret.sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn an_off_the_shelf_receiver_verifies_our_headers_with_either_secret_while_rotating() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"type":"appointment.booked"}"#;
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in headers(&[old.clone(), new.clone()], "msg_1", now, body) {
            map.insert(name, value.parse().unwrap());
        }
        for secret in [&old, &new] {
            let receiver = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
            receiver
                .verify(body, &map)
                .expect("the receiver accepts our signature");
        }
        let stranger = standardwebhooks::Webhook::new(&SigningSecret::generate().expose()).unwrap();
        assert!(stranger.verify(body, &map).is_err());
        let tampered = br#"{"type":"appointment.cancelled"}"#;
        let receiver = standardwebhooks::Webhook::new(&new.expose()).unwrap();
        assert!(receiver.verify(tampered, &map).is_err());
    }

    #[test]
    fn verify_refuses_what_it_must() {
        let secret = SigningSecret::parse(SPEC_SECRET).unwrap();
        let sent = headers(
            std::slice::from_ref(&secret),
            SPEC_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
        );
        let get = |name: &str| {
            sent.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let now = SPEC_TIMESTAMP + 10;
        assert_eq!(
            verify(&secret, get, SPEC_BODY, now, DEFAULT_TOLERANCE_SECS),
            Ok(())
        );
        assert_eq!(
            verify(&secret, get, b"{}", now, DEFAULT_TOLERANCE_SECS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                &secret,
                get,
                SPEC_BODY,
                SPEC_TIMESTAMP + 3600,
                DEFAULT_TOLERANCE_SECS
            ),
            Err(SignatureError::StaleTimestamp(3600))
        );
        let other = SigningSecret::generate();
        assert_eq!(
            verify(&other, get, SPEC_BODY, now, DEFAULT_TOLERANCE_SECS),
            Err(SignatureError::NoMatch)
        );
        // Timestamps at the ends of i64 are stale, not an overflow.
        for far in [i64::MIN, i64::MAX] {
            let far_get = |name: &str| {
                if name == HEADER_TIMESTAMP {
                    Some(far.to_string())
                } else {
                    get(name)
                }
            };
            assert!(matches!(
                verify(&secret, far_get, SPEC_BODY, now, DEFAULT_TOLERANCE_SECS),
                Err(SignatureError::StaleTimestamp(_))
            ));
        }
        let no_id = |name: &str| if name == HEADER_ID { None } else { get(name) };
        assert_eq!(
            verify(&secret, no_id, SPEC_BODY, now, DEFAULT_TOLERANCE_SECS),
            Err(SignatureError::MissingHeader(HEADER_ID))
        );
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_refused() {
        let secret = SigningSecret::generate();
        assert_eq!(SigningSecret::parse(&secret.expose()).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&secret.expose()[6..]));
        for bad in ["whsec_", "whsec_not base64!", "whsec_c2hvcnQ="] {
            assert_eq!(
                SigningSecret::parse(bad),
                Err(SignatureError::MalformedSecret)
            );
        }
    }
}
