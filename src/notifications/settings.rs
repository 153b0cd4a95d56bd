//! A hospital's notification settings, event-sourced in the stream
//! `notification-settings-<tenant>`: whether notifications are on, the
//! default language, the channels, the reminder rules and the templates.
//!
//! The planner folds these events in the tenant's global order, so an
//! appointment event is planned with the settings as they were when it
//! happened (and one recorded before notifications were enabled is never
//! planned at all).
use buktor_domain::patient::Channel;
use buktor_domain::values::Language;
use buktor_domain::{Aggregate, DomainError, DomainEvent, DomainResult, ServiceId};
use chrono::NaiveTime;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::rules::Timing;
use super::templates::TemplateText;

/// Most reminder rules a hospital may have.
pub const MAX_RULES: usize = 20;
/// Most templates a hospital may have.
pub const MAX_TEMPLATES: usize = 400;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    Booked,
    Rescheduled,
    Cancelled,
    Reminder,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 4] = [
        NotificationKind::Booked,
        NotificationKind::Rescheduled,
        NotificationKind::Cancelled,
        NotificationKind::Reminder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Booked => "booked",
            NotificationKind::Rescheduled => "rescheduled",
            NotificationKind::Cancelled => "cancelled",
            NotificationKind::Reminder => "reminder",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

pub fn channel_parse(s: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == s)
}

/// When to remind, and for which services (empty = all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderRule {
    pub id: Uuid,
    pub timing: Timing,
    pub service_ids: Vec<ServiceId>,
}

impl ReminderRule {
    pub fn applies_to(&self, service: ServiceId) -> bool {
        self.service_ids.is_empty() || self.service_ids.contains(&service)
    }
}

/// A text for one kind, channel and language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub kind: NotificationKind,
    pub channel: Channel,
    pub language: Language,
    /// The e-mail subject; SMS have none.
    pub subject: Option<TemplateText>,
    pub body: TemplateText,
}

/// An HTTP endpoint of an SMS gateway: Buktor POSTs each text message there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GatewayUrl(String);

impl GatewayUrl {
    pub fn parse(raw: &str) -> DomainResult<Self> {
        let s = raw.trim();
        let ok = (s.starts_with("https://") || s.starts_with("http://"))
            && s.len() <= 2000
            && reqwest::Url::parse(s).is_ok_and(|u| u.host().is_some());
        if !ok {
            return Err(DomainError::invalid(
                "smsGatewayUrl",
                "must be an http:// or https:// URL with a host",
            ));
        }
        Ok(GatewayUrl(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GatewayUrl {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        GatewayUrl::parse(&s)
    }
}

impl From<GatewayUrl> for String {
    fn from(u: GatewayUrl) -> String {
        u.0
    }
}

/// The settings besides rules and templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct General {
    /// Off until an admin turns it on: nothing is planned for appointment
    /// events recorded while it is off.
    pub enabled: bool,
    /// Used when a patient has no language, or none of theirs has a template.
    pub default_language: Language,
    pub email: bool,
    /// Text messages go to this gateway; none = no SMS.
    pub sms_gateway: Option<GatewayUrl>,
    /// A sentence on how to change or cancel (`{{manage_hint}}`).
    pub manage_hint: Option<TemplateText>,
}

impl Default for General {
    fn default() -> Self {
        General {
            enabled: false,
            default_language: Language::parse("en").expect("en is a language tag"),
            email: true,
            sms_gateway: None,
            manage_hint: None,
        }
    }
}

impl General {
    pub fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        if self.email {
            out.push(Channel::Email);
        }
        if self.sms_gateway.is_some() {
            out.push(Channel::Sms);
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SettingsEvent {
    NotificationsConfigured {
        #[serde(flatten)]
        general: General,
    },
    ReminderRuleSet {
        #[serde(flatten)]
        rule: ReminderRule,
    },
    ReminderRuleRemoved {
        rule_id: Uuid,
    },
    NotificationTemplateSet {
        #[serde(flatten)]
        template: Template,
    },
    NotificationTemplateRemoved {
        kind: NotificationKind,
        channel: Channel,
        language: Language,
    },
}

impl DomainEvent for SettingsEvent {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationSettings {
    pub general: General,
    pub rules: Vec<ReminderRule>,
    pub templates: Vec<Template>,
}

impl Aggregate for NotificationSettings {
    type Event = SettingsEvent;
    const STREAM_TYPE: &'static str = "notification-settings";

    fn apply(&mut self, event: &SettingsEvent) {
        match event {
            SettingsEvent::NotificationsConfigured { general } => self.general = general.clone(),
            SettingsEvent::ReminderRuleSet { rule } => {
                match self.rules.iter_mut().find(|r| r.id == rule.id) {
                    Some(r) => *r = rule.clone(),
                    None => self.rules.push(rule.clone()),
                }
            }
            SettingsEvent::ReminderRuleRemoved { rule_id } => {
                self.rules.retain(|r| r.id != *rule_id)
            }
            SettingsEvent::NotificationTemplateSet { template } => {
                match self.templates.iter_mut().find(|t| {
                    (t.kind, t.channel, &t.language)
                        == (template.kind, template.channel, &template.language)
                }) {
                    Some(t) => *t = template.clone(),
                    None => self.templates.push(template.clone()),
                }
            }
            SettingsEvent::NotificationTemplateRemoved {
                kind,
                channel,
                language,
            } => self
                .templates
                .retain(|t| (t.kind, t.channel, &t.language) != (*kind, *channel, language)),
        }
    }
}

/// The stream of a hospital's settings.
pub fn settings_stream(tenant: buktor_domain::TenantId) -> String {
    format!("{}-{}", NotificationSettings::STREAM_TYPE, tenant.as_uuid())
}

impl NotificationSettings {
    pub fn configure(&self, general: General) -> Vec<SettingsEvent> {
        if self.general == general {
            return vec![];
        }
        vec![SettingsEvent::NotificationsConfigured { general }]
    }

    pub fn set_rule(&self, rule: ReminderRule) -> DomainResult<Vec<SettingsEvent>> {
        match self.rules.iter().find(|r| r.id == rule.id) {
            Some(r) if *r == rule => return Ok(vec![]),
            Some(_) => {}
            None if self.rules.len() >= MAX_RULES => {
                return Err(DomainError::invalid(
                    "input",
                    format!("a hospital has at most {MAX_RULES} reminder rules"),
                ))
            }
            None => {}
        }
        if self.rules.iter().any(|r| {
            r.id != rule.id && r.timing == rule.timing && r.service_ids == rule.service_ids
        }) {
            return Err(DomainError::invalid(
                "timing",
                "another rule already reminds at this time for these services",
            ));
        }
        Ok(vec![SettingsEvent::ReminderRuleSet { rule }])
    }

    pub fn remove_rule(&self, rule_id: Uuid) -> DomainResult<Vec<SettingsEvent>> {
        if !self.rules.iter().any(|r| r.id == rule_id) {
            return Err(DomainError::invalid("id", "no reminder rule has this id"));
        }
        Ok(vec![SettingsEvent::ReminderRuleRemoved { rule_id }])
    }

    pub fn set_template(&self, template: Template) -> DomainResult<Vec<SettingsEvent>> {
        let existing = self.templates.iter().find(|t| {
            (t.kind, t.channel, &t.language)
                == (template.kind, template.channel, &template.language)
        });
        match existing {
            Some(t) if *t == template => return Ok(vec![]),
            None if self.templates.len() >= MAX_TEMPLATES => {
                return Err(DomainError::invalid(
                    "input",
                    format!("a hospital has at most {MAX_TEMPLATES} templates"),
                ))
            }
            _ => {}
        }
        Ok(vec![SettingsEvent::NotificationTemplateSet { template }])
    }

    pub fn remove_template(
        &self,
        kind: NotificationKind,
        channel: Channel,
        language: Language,
    ) -> DomainResult<Vec<SettingsEvent>> {
        if !self
            .templates
            .iter()
            .any(|t| (t.kind, t.channel, &t.language) == (kind, channel, &language))
        {
            return Err(DomainError::invalid(
                "language",
                "no template for this kind, channel and language",
            ));
        }
        Ok(vec![SettingsEvent::NotificationTemplateRemoved {
            kind,
            channel,
            language,
        }])
    }
}

/// `HH:MM`, 24-hour.
pub fn parse_local_time(field: &'static str, raw: &str) -> DomainResult<NaiveTime> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M")
        .map_err(|_| DomainError::invalid(field, "must be a time of day HH:MM (00:00 to 23:59)"))
}
