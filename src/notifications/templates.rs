//! Notification texts: `{{placeholder}}` substitution and the choice of a
//! template by language.
//!
//! A template is chosen for the notification's kind and channel in this
//! order: the patient's language (`pt-BR`), its primary subtag (`pt`), the
//! hospital's default language and its primary subtag, then the built-in
//! English text. No template engine: placeholders are replaced, nothing
//! else is interpreted.
use buktor_domain::patient::Channel;
use buktor_domain::values::Language;
use buktor_domain::{DomainError, DomainResult};
use serde::{Deserialize, Serialize};

use super::settings::{NotificationKind, Template};

/// Every placeholder a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "patient_name",
    "date",
    "time",
    "time_zone",
    "practitioner",
    "service",
    "location",
    "hospital",
    "manage_hint",
];

pub const MAX_BODY_CHARS: usize = 4000;
pub const MAX_SUBJECT_CHARS: usize = 200;

/// Text whose placeholders are all known; built only through [`TemplateText::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateText(String);

impl TemplateText {
    pub fn parse(field: &'static str, raw: &str, max_chars: usize) -> DomainResult<Self> {
        if raw.trim().is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        if raw.chars().count() > max_chars {
            return Err(DomainError::invalid(
                field,
                format!("must be at most {max_chars} characters"),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
        {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        let mut rest = raw;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(DomainError::invalid(field, "has a {{ without a closing }}"));
            };
            let name = after[..close].trim();
            if !PLACEHOLDERS.contains(&name) {
                return Err(DomainError::invalid(
                    field,
                    format!(
                        "uses the unknown placeholder {{{{{name}}}}}; known: {}",
                        PLACEHOLDERS.join(", ")
                    ),
                ));
            }
            rest = &after[close + 2..];
        }
        Ok(TemplateText(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with each placeholder replaced by `value(name)`.
    pub fn render(&self, value: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.0.len() + 64);
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            match after.find("}}") {
                Some(close) => {
                    out.push_str(&value(after[..close].trim()));
                    rest = &after[close + 2..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

impl TryFrom<String> for TemplateText {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        TemplateText::parse("template", &s, MAX_BODY_CHARS)
    }
}

impl From<TemplateText> for String {
    fn from(t: TemplateText) -> String {
        t.0
    }
}

/// A template chosen for a notification: subject (e-mail) and body, and the
/// language they are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub language: String,
    pub subject: Option<TemplateText>,
    pub body: TemplateText,
}

/// The template for `kind` on `channel` for a patient speaking `patient`
/// (if known), with the hospital's `default` language and `templates`.
pub fn choose(
    templates: &[Template],
    kind: NotificationKind,
    channel: Channel,
    patient: Option<&Language>,
    default: &Language,
) -> Chosen {
    let mut wanted: Vec<&str> = Vec::with_capacity(4);
    for language in patient.into_iter().chain(std::iter::once(default)) {
        for tag in [language.as_str(), language.primary()] {
            if !wanted.iter().any(|w| w.eq_ignore_ascii_case(tag)) {
                wanted.push(tag);
            }
        }
    }
    for tag in wanted {
        if let Some(t) = templates.iter().find(|t| {
            t.kind == kind && t.channel == channel && t.language.as_str().eq_ignore_ascii_case(tag)
        }) {
            return Chosen {
                language: t.language.as_str().to_owned(),
                subject: t.subject.clone(),
                body: t.body.clone(),
            };
        }
    }
    built_in(kind, channel)
}

/// The English texts used when a hospital has none that fit.
pub fn built_in(kind: NotificationKind, channel: Channel) -> Chosen {
    let (subject, email, sms) = match kind {
        NotificationKind::Booked => (
            "Your appointment on {{date}} at {{time}}",
            "Dear {{patient_name}},\n\nYour appointment for {{service}} with {{practitioner}} \
             is booked for {{date}} at {{time}} ({{time_zone}}). {{location}}\n\n{{manage_hint}}\n\n{{hospital}}",
            "{{hospital}}: {{service}} with {{practitioner}} booked for {{date}} {{time}}. {{manage_hint}}",
        ),
        NotificationKind::Rescheduled => (
            "Your appointment has moved to {{date}} at {{time}}",
            "Dear {{patient_name}},\n\nYour appointment for {{service}} with {{practitioner}} \
             has moved to {{date}} at {{time}} ({{time_zone}}). {{location}}\n\n{{manage_hint}}\n\n{{hospital}}",
            "{{hospital}}: your appointment moved to {{date}} {{time}}. {{manage_hint}}",
        ),
        NotificationKind::Cancelled => (
            "Your appointment on {{date}} at {{time}} is cancelled",
            "Dear {{patient_name}},\n\nYour appointment for {{service}} with {{practitioner}} \
             on {{date}} at {{time}} ({{time_zone}}) is cancelled.\n\n{{hospital}}",
            "{{hospital}}: your appointment on {{date}} {{time}} is cancelled.",
        ),
        NotificationKind::Reminder => (
            "Reminder: your appointment on {{date}} at {{time}}",
            "Dear {{patient_name}},\n\nThis is a reminder of your appointment for {{service}} \
             with {{practitioner}} on {{date}} at {{time}} ({{time_zone}}). {{location}}\n\n\
             {{manage_hint}}\n\n{{hospital}}",
            "{{hospital}} reminder: {{service}} with {{practitioner}} on {{date}} {{time}}. {{manage_hint}}",
        ),
    };
    let text = |s: &str| TemplateText(s.to_owned());
    match channel {
        Channel::Email => Chosen {
            language: "en".into(),
            subject: Some(text(subject)),
            body: text(email),
        },
        Channel::Sms => Chosen {
            language: "en".into(),
            subject: None,
            body: text(sms),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lang(s: &str) -> Language {
        Language::parse(s).unwrap()
    }

    fn template(kind: NotificationKind, channel: Channel, language: &str, body: &str) -> Template {
        Template {
            kind,
            channel,
            language: lang(language),
            subject: None,
            body: TemplateText::parse("body", body, MAX_BODY_CHARS).unwrap(),
        }
    }

    #[test]
    fn placeholders_are_replaced_and_unknown_ones_refused() {
        let t = TemplateText::parse("body", "Hi {{ patient_name }}, {{time}}!", 100).unwrap();
        let out = t.render(|name| match name {
            "patient_name" => "Ada".into(),
            "time" => "09:00".into(),
            _ => String::new(),
        });
        assert_eq!(out, "Hi Ada, 09:00!");
        let e = TemplateText::parse("body", "Hi {{name}}", 100).unwrap_err();
        assert_eq!(e.code(), "INVALID_INPUT");
        assert!(e.to_string().contains("{{name}}"), "{e}");
        assert!(TemplateText::parse("body", "Hi {{time", 100).is_err());
        assert!(TemplateText::parse("body", "  ", 100).is_err());
        assert!(TemplateText::parse("body", &"x".repeat(101), 100).is_err());
        assert!(TemplateText::parse("body", "a\u{7}b", 100).is_err());
    }

    #[test]
    fn the_patients_language_then_its_primary_subtag_then_the_default_then_english() {
        use NotificationKind::*;
        let templates = vec![
            template(Booked, Channel::Email, "pt", "pt"),
            template(Booked, Channel::Email, "nl", "nl"),
            template(Booked, Channel::Email, "nl-BE", "nl-BE"),
            template(Reminder, Channel::Email, "de", "de"),
            template(Booked, Channel::Sms, "fr", "fr sms"),
        ];
        let nl = lang("nl");
        let body = |kind, channel, patient: Option<&str>, default: &Language| {
            let patient = patient.map(lang);
            choose(&templates, kind, channel, patient.as_ref(), default)
                .body
                .as_str()
                .to_owned()
        };
        assert_eq!(body(Booked, Channel::Email, Some("nl-BE"), &nl), "nl-BE");
        assert_eq!(body(Booked, Channel::Email, Some("pt-BR"), &nl), "pt");
        assert_eq!(body(Booked, Channel::Email, Some("sv"), &nl), "nl");
        assert_eq!(body(Booked, Channel::Email, None, &lang("nl-NL")), "nl");
        assert_eq!(body(Reminder, Channel::Email, Some("de-AT"), &nl), "de");
        // Nothing in the patient's or the default language: built-in English.
        let chosen = choose(&templates, Cancelled, Channel::Email, None, &nl);
        assert_eq!(chosen.language, "en");
        assert!(chosen.subject.is_some());
        let sms = choose(&templates, Booked, Channel::Sms, Some(&lang("en")), &nl);
        assert_eq!(sms.language, "en");
        assert!(sms.subject.is_none());
        assert_eq!(body(Booked, Channel::Sms, Some("fr-CA"), &nl), "fr sms");
    }

    #[test]
    fn built_in_texts_use_only_known_placeholders() {
        for kind in NotificationKind::ALL {
            for channel in Channel::ALL {
                let c = built_in(kind, channel);
                TemplateText::parse("body", c.body.as_str(), MAX_BODY_CHARS).unwrap();
                if let Some(s) = c.subject {
                    TemplateText::parse("subject", s.as_str(), MAX_SUBJECT_CHARS).unwrap();
                }
            }
        }
    }
}
