//! Parsed values: each can only be built through a check, so code deeper in
//! never sees an empty name, a zero duration or a capacity of 0.
use serde::{Deserialize, Serialize};

use crate::error::{DomainError, DomainResult};

/// Whether `c` may not appear in a name or text: a control character, or
/// a bidirectional embedding, override or isolate (U+202A–U+202E,
/// U+2066–U+2069), which can make a name display as something else
/// ("Trojan Source"). The marks U+200E/U+200F stay allowed: mixed-script
/// names need them.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Trimmed, non-empty text of bounded length, without control characters
/// or bidirectional overrides (see [`is_unsafe_char`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn parse(field: &'static str, raw: &str) -> DomainResult<Self> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        if trimmed.chars().count() > MAX {
            return Err(DomainError::invalid(
                field,
                format!("must be at most {MAX} characters"),
            ));
        }
        if trimmed.chars().any(is_unsafe_char) {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters or bidirectional overrides",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse("text", &s)
    }
}

impl<const MAX: usize> From<Text<MAX>> for String {
    fn from(t: Text<MAX>) -> String {
        t.0
    }
}

impl<const MAX: usize> std::fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Name = Text<200>;
pub type ShortText = Text<100>;
pub type Reason = Text<500>;

/// A whole number of minutes within `[MIN, MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Minutes(u32);

impl Minutes {
    pub const ZERO: Minutes = Minutes(0);

    pub fn parse(field: &'static str, value: i64, min: u32, max: u32) -> DomainResult<Self> {
        if value < i64::from(min) || value > i64::from(max) {
            return Err(DomainError::invalid(
                field,
                format!("must be between {min} and {max} minutes, got {value}"),
            ));
        }
        Ok(Minutes(value as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn duration(self) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.0))
    }
}

/// How many patients one slot of a service takes: 1 for a normal visit, more for a group session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capacity(u32);

impl Capacity {
    pub const ONE: Capacity = Capacity(1);

    pub fn parse(value: i64) -> DomainResult<Self> {
        if !(1..=500).contains(&value) {
            return Err(DomainError::invalid(
                "capacity",
                format!("must be between 1 and 500, got {value}"),
            ));
        }
        Ok(Capacity(value as u32))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// The patient as Buktor knows them: the HIS's id and what reminders need, nothing clinical.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRef {
    pub his_patient_id: ShortText,
    pub name: Option<Name>,
    pub phone: Option<Phone>,
    pub email: Option<Email>,
}

/// A phone number in E.164 form (`+` then 8 to 15 digits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::invalid(
                "phone",
                "must be in international form, like +31 20 123 4567",
            ));
        }
        Ok(Phone(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Phone::parse(&s)
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// An e-mail address, checked for shape only (local@domain.tld, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        let s = raw.trim();
        let valid = s.chars().count() <= 254
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.contains('@')
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                }
                None => false,
            };
        if !valid {
            return Err(DomainError::invalid("email", "is not an e-mail address"));
        }
        Ok(Email(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// A language tag for what a patient reads (BCP 47 shape: `en`, `de`,
/// `pt-BR`), kept lower-case in its first part so templates match it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        let s = raw.trim();
        let mut parts = s.split('-');
        let primary = parts.next().unwrap_or_default();
        let primary_ok =
            (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
        let rest_ok = parts
            .all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if !primary_ok || !rest_ok {
            return Err(DomainError::invalid(
                "language",
                "must be a language tag such as en, de or pt-BR",
            ));
        }
        let (head, tail) = s.split_at(primary.len());
        Ok(Language(format!("{}{}", head.to_ascii_lowercase(), tail)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language alone (`pt` for `pt-BR`), to fall back to.
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for Language {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Language::parse(&s)
    }
}

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("name", "  Dr. Ada  ").unwrap().as_str(),
            "Dr. Ada"
        );
        assert_eq!(
            Name::parse("name", "   ").unwrap_err().code(),
            "INVALID_INPUT"
        );
        assert!(ShortText::parse("id", &"x".repeat(101)).is_err());
        assert!(ShortText::parse("id", "a\u{0}b").is_err());
    }

    #[test]
    fn minutes_and_capacity_reject_out_of_range() {
        assert!(Minutes::parse("duration", 0, 5, 480).is_err());
        assert!(Minutes::parse("duration", -5, 0, 480).is_err());
        assert_eq!(Minutes::parse("duration", 30, 5, 480).unwrap().get(), 30);
        assert!(Capacity::parse(0).is_err());
        assert_eq!(Capacity::parse(12).unwrap().get(), 12);
    }

    #[test]
    fn phone_and_email_shapes() {
        assert_eq!(
            Phone::parse("+31 20 123-4567").unwrap().as_str(),
            "+31201234567"
        );
        assert!(Phone::parse("020 1234567").is_err());
        assert!(Phone::parse("+12").is_err());
        assert!(Email::parse("ada@example.org").is_ok());
        assert!(Email::parse("ada@@example.org").is_err());
        assert!(Email::parse("ada example@x.org").is_err());
        assert!(Email::parse("ada@localhost").is_err());
        assert_eq!(Language::parse("PT-BR").unwrap().as_str(), "pt-BR");
        assert_eq!(Language::parse("de").unwrap().primary(), "de");
        assert!(Language::parse("english!").is_err());
        assert!(Language::parse("").is_err());
    }

    #[test]
    fn deserializing_checks_too() {
        assert!(serde_json::from_str::<Phone>("\"12\"").is_err());
        assert!(serde_json::from_str::<Name>("\"  \"").is_err());
    }
}
