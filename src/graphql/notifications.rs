//! Notification settings over GraphQL: admins and the HIS configure them,
//! auditors read them; an appointment's notifications (its
//! `reminders-<appointment>` stream) are readable by whoever reads
//! appointments. Every write is a command (idempotency keys, events).
use async_graphql::{Context, Enum, InputObject, Object, Result, SimpleObject, ID};
use buktor_domain::patient::{Channel, PatientContact};
use buktor_domain::values::{Email, Language, Name, Phone, ShortText};
use buktor_domain::{decode, AppointmentId, Role, ServiceId};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::types::CommandResult;
use super::{app_error, command_context, done, invalid, parse_id, principal, scheduler};
use crate::app::{
    AppError, ConfigureNotifications, RecordPatientContact, RemoveNotificationTemplate,
    RemoveReminderRule, SetNotificationTemplate, SetReminderRule,
};
use crate::notifications::reminders::{reminders_stream, Reminders, Status};
use crate::notifications::rules::Timing;
use crate::notifications::settings::{
    parse_local_time, GatewayUrl, General, NotificationKind, NotificationSettings, Template,
};
use crate::notifications::templates::{TemplateText, MAX_BODY_CHARS, MAX_SUBJECT_CHARS};

pub(super) fn require(ctx: &Context<'_>, allowed: &[Role], action: &'static str) -> Result<()> {
    let role = principal(ctx).role;
    if allowed.contains(&role) {
        Ok(())
    } else {
        Err(app_error(AppError::Forbidden {
            role: role.as_str(),
            action,
        }))
    }
}

fn domain(e: buktor_domain::DomainError) -> async_graphql::Error {
    app_error(AppError::Domain(e))
}

/// What a notification is about.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "NotificationKind")]
pub enum NotificationKindGql {
    Booked,
    Rescheduled,
    Cancelled,
    Reminder,
}

impl From<NotificationKindGql> for NotificationKind {
    fn from(k: NotificationKindGql) -> Self {
        match k {
            NotificationKindGql::Booked => NotificationKind::Booked,
            NotificationKindGql::Rescheduled => NotificationKind::Rescheduled,
            NotificationKindGql::Cancelled => NotificationKind::Cancelled,
            NotificationKindGql::Reminder => NotificationKind::Reminder,
        }
    }
}

impl From<NotificationKind> for NotificationKindGql {
    fn from(k: NotificationKind) -> Self {
        match k {
            NotificationKind::Booked => NotificationKindGql::Booked,
            NotificationKind::Rescheduled => NotificationKindGql::Rescheduled,
            NotificationKind::Cancelled => NotificationKindGql::Cancelled,
            NotificationKind::Reminder => NotificationKindGql::Reminder,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum NotificationChannel {
    Email,
    Sms,
}

impl From<NotificationChannel> for Channel {
    fn from(c: NotificationChannel) -> Self {
        match c {
            NotificationChannel::Email => Channel::Email,
            NotificationChannel::Sms => Channel::Sms,
        }
    }
}

impl From<Channel> for NotificationChannel {
    fn from(c: Channel) -> Self {
        match c {
            Channel::Email => NotificationChannel::Email,
            Channel::Sms => NotificationChannel::Sms,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum NotificationStatus {
    Scheduled,
    Sent,
    Failed,
    Skipped,
    Cancelled,
}

impl From<Status> for NotificationStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Scheduled => NotificationStatus::Scheduled,
            Status::Sent => NotificationStatus::Sent,
            Status::Failed => NotificationStatus::Failed,
            Status::Skipped => NotificationStatus::Skipped,
            Status::Cancelled => NotificationStatus::Cancelled,
        }
    }
}

/// A hospital's notification settings.
pub struct NotificationSettingsGql(NotificationSettings);

#[Object(name = "NotificationSettings")]
impl NotificationSettingsGql {
    async fn enabled(&self) -> bool {
        self.0.general.enabled
    }
    async fn default_language(&self) -> &str {
        self.0.general.default_language.as_str()
    }
    async fn email(&self) -> bool {
        self.0.general.email
    }
    async fn sms_gateway_url(&self) -> Option<&str> {
        self.0.general.sms_gateway.as_ref().map(|g| g.as_str())
    }
    async fn manage_hint(&self) -> Option<&str> {
        self.0.general.manage_hint.as_ref().map(|h| h.as_str())
    }
    async fn rules(&self) -> Vec<ReminderRuleGql> {
        self.0
            .rules
            .iter()
            .map(|r| {
                let (minutes_before, days_before, at) = match r.timing {
                    Timing::Before { minutes } => (Some(minutes), None, None),
                    Timing::DaysBeforeAt { days, at } => {
                        (None, Some(days), Some(at.format("%H:%M").to_string()))
                    }
                };
                ReminderRuleGql {
                    id: ID(r.id.to_string()),
                    minutes_before,
                    days_before,
                    at,
                    service_ids: r.service_ids.iter().map(|s| ID(s.to_string())).collect(),
                }
            })
            .collect()
    }
    async fn templates(&self) -> Vec<NotificationTemplateGql> {
        self.0
            .templates
            .iter()
            .map(|t| NotificationTemplateGql {
                kind: t.kind.into(),
                channel: t.channel.into(),
                language: t.language.as_str().to_owned(),
                subject: t.subject.as_ref().map(|s| s.as_str().to_owned()),
                body: t.body.as_str().to_owned(),
            })
            .collect()
    }
}

/// When to remind: `minutesBefore` (elapsed time), or `daysBefore` at `at`
/// (local wall-clock time in the hospital's zone).
#[derive(SimpleObject)]
#[graphql(name = "ReminderRule")]
pub struct ReminderRuleGql {
    id: ID,
    minutes_before: Option<u32>,
    days_before: Option<u32>,
    at: Option<String>,
    /// Empty: every service.
    service_ids: Vec<ID>,
}

#[derive(SimpleObject)]
#[graphql(name = "NotificationTemplate")]
pub struct NotificationTemplateGql {
    kind: NotificationKindGql,
    channel: NotificationChannel,
    language: String,
    subject: Option<String>,
    body: String,
}

/// One notification of an appointment, as its stream records it.
#[derive(SimpleObject)]
pub struct AppointmentNotification {
    id: ID,
    kind: NotificationKindGql,
    channel: NotificationChannel,
    rule_id: Option<ID>,
    status: NotificationStatus,
    /// When it is (or was last) due.
    due_at: DateTime<Utc>,
    /// The appointment's start it was planned for.
    appointment_start: DateTime<Utc>,
    attempts: u32,
    /// The last failure, the skip reason or why it was cancelled.
    detail: Option<String>,
    /// The masked address it went to.
    recipient: Option<String>,
}

#[derive(InputObject)]
pub struct NotificationsInput {
    pub enabled: bool,
    /// A language tag such as `nl` or `pt-BR`; default `en`.
    pub default_language: Option<String>,
    /// Default true.
    pub email: Option<bool>,
    /// Text messages are POSTed here; none = no SMS.
    pub sms_gateway_url: Option<String>,
    /// `{{manage_hint}}` in templates: how to change or cancel.
    pub manage_hint: Option<String>,
}

#[derive(InputObject)]
pub struct ReminderRuleInput {
    /// The rule to replace; none makes a new one.
    pub id: Option<ID>,
    /// Elapsed minutes before the start (e.g. 120 for 2 h)…
    pub minutes_before: Option<i64>,
    /// …or calendar days before the start's local day, at `at` (`HH:MM`, local).
    pub days_before: Option<i64>,
    pub at: Option<String>,
    /// Only for these services; none or empty = every service.
    pub service_ids: Option<Vec<ID>>,
}

#[derive(InputObject)]
pub struct NotificationTemplateInput {
    pub kind: NotificationKindGql,
    pub channel: NotificationChannel,
    pub language: String,
    /// E-mail only (required there).
    pub subject: Option<String>,
    pub body: String,
}

#[derive(InputObject)]
pub struct PatientContactInput {
    pub his_patient_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub language: Option<String>,
    /// Channels the patient asked not to be contacted on.
    pub opted_out: Option<Vec<NotificationChannel>>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The caller's hospital's notification settings.
    async fn notification_settings(&self, ctx: &Context<'_>) -> Result<NotificationSettingsGql> {
        require(
            ctx,
            &[Role::Admin, Role::HisSystem, Role::Auditor],
            "read notification settings",
        )?;
        let s = scheduler(ctx)
            .notification_settings(principal(ctx).tenant_id())
            .await
            .map_err(app_error)?;
        Ok(NotificationSettingsGql(s))
    }

    /// An appointment's notifications, in the order they were scheduled.
    async fn appointment_notifications(
        &self,
        ctx: &Context<'_>,
        appointment_id: ID,
    ) -> Result<Vec<AppointmentNotification>> {
        let id: AppointmentId = parse_id("appointmentId", &appointment_id)?;
        let tenant = principal(ctx).tenant_id();
        let events = scheduler(ctx)
            .store()
            .read_stream(tenant, &reminders_stream(id), 0)
            .await
            .map_err(|e| app_error(AppError::Store(e)))?;
        let mut state = Reminders::default();
        for e in events {
            let event = decode(&e.event_type, e.schema_version, e.payload)
                .map_err(|e| app_error(AppError::Corrupt(e.to_string())))?;
            buktor_domain::Aggregate::apply(&mut state, &event);
        }
        Ok(state
            .notifications
            .into_iter()
            .map(|n| AppointmentNotification {
                id: ID(n.id.to_string()),
                kind: n.kind.into(),
                channel: n.channel.into(),
                rule_id: n.rule_id.map(|r| ID(r.to_string())),
                status: n.status.into(),
                due_at: n.due_at,
                appointment_start: n.appointment_start,
                attempts: n.attempts,
                detail: n.detail,
                recipient: n.recipient,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Turns notifications on or off, with the channels and default language.
    async fn configure_notifications(
        &self,
        ctx: &Context<'_>,
        input: NotificationsInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let general = General {
            enabled: input.enabled,
            default_language: match nonempty(input.default_language) {
                Some(l) => Language::parse(&l).map_err(|_| {
                    invalid(
                        "defaultLanguage",
                        "must be a language tag such as en, de or pt-BR",
                    )
                })?,
                None => General::default().default_language,
            },
            email: input.email.unwrap_or(true),
            sms_gateway: nonempty(input.sms_gateway_url)
                .map(|u| GatewayUrl::parse(&u))
                .transpose()
                .map_err(domain)?,
            manage_hint: nonempty(input.manage_hint)
                .map(|h| TemplateText::parse("manageHint", &h, 500))
                .transpose()
                .map_err(domain)?,
        };
        let cmd = ConfigureNotifications { general };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).configure_notifications(&c, &cmd)).await
    }

    /// Adds a reminder rule, or replaces the one named by `id`. The id of the rule is returned.
    async fn set_reminder_rule(
        &self,
        ctx: &Context<'_>,
        input: ReminderRuleInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let timing = match (input.minutes_before, input.days_before, input.at) {
            (Some(m), None, None) => Timing::before(m).map_err(domain)?,
            (None, Some(d), Some(at)) => {
                Timing::days_before_at(d, parse_local_time("at", &at).map_err(domain)?)
                    .map_err(domain)?
            }
            _ => {
                return Err(invalid(
                    "input",
                    "give either minutesBefore, or daysBefore and at",
                ))
            }
        };
        let mut service_ids: Vec<ServiceId> = input
            .service_ids
            .unwrap_or_default()
            .iter()
            .map(|id| parse_id("serviceIds", id))
            .collect::<Result<_>>()?;
        service_ids.sort_by_key(|s| s.as_uuid());
        service_ids.dedup();
        let cmd = SetReminderRule {
            id: input
                .id
                .as_ref()
                .map(|id| parse_id::<Uuid>("id", id))
                .transpose()?,
            timing,
            service_ids,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).set_reminder_rule(&c, &cmd)).await
    }

    async fn remove_reminder_rule(
        &self,
        ctx: &Context<'_>,
        id: ID,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = RemoveReminderRule {
            rule_id: parse_id("id", &id)?,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).remove_reminder_rule(&c, &cmd)).await
    }

    /// Sets the text of one kind, channel and language.
    async fn set_notification_template(
        &self,
        ctx: &Context<'_>,
        input: NotificationTemplateInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let channel: Channel = input.channel.into();
        let subject = match (channel, nonempty(input.subject)) {
            (Channel::Email, Some(s)) => {
                Some(TemplateText::parse("subject", &s, MAX_SUBJECT_CHARS).map_err(domain)?)
            }
            (Channel::Email, None) => return Err(invalid("subject", "an e-mail needs a subject")),
            (Channel::Sms, Some(_)) => {
                return Err(invalid("subject", "a text message has no subject"))
            }
            (Channel::Sms, None) => None,
        };
        let template = Template {
            kind: input.kind.into(),
            channel,
            language: Language::parse(&input.language).map_err(|_| {
                invalid("language", "must be a language tag such as en, de or pt-BR")
            })?,
            subject,
            body: TemplateText::parse("body", &input.body, MAX_BODY_CHARS).map_err(domain)?,
        };
        let cmd = SetNotificationTemplate { template };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).set_notification_template(&c, &cmd)).await
    }

    async fn remove_notification_template(
        &self,
        ctx: &Context<'_>,
        kind: NotificationKindGql,
        channel: NotificationChannel,
        language: String,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let cmd = RemoveNotificationTemplate {
            kind: kind.into(),
            channel: channel.into(),
            language: Language::parse(&language).map_err(|_| {
                invalid("language", "must be a language tag such as en, de or pt-BR")
            })?,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).remove_notification_template(&c, &cmd)).await
    }

    /// Records a patient's contact data, language and opt-outs, whole (the
    /// HIS API records the same). Notifications prefer it to the copy an
    /// appointment took at booking.
    async fn record_patient_contact(
        &self,
        ctx: &Context<'_>,
        input: PatientContactInput,
        idempotency_key: Option<String>,
    ) -> Result<CommandResult> {
        let mut opted_out: Vec<Channel> = input
            .opted_out
            .unwrap_or_default()
            .into_iter()
            .map(Into::into)
            .collect();
        opted_out.sort_by_key(|c| c.as_str());
        opted_out.dedup();
        let contact = PatientContact {
            name: nonempty(input.name)
                .map(|n| Name::parse("name", &n))
                .transpose()
                .map_err(domain)?,
            phone: nonempty(input.phone)
                .map(|p| Phone::parse(&p))
                .transpose()
                .map_err(domain)?,
            email: nonempty(input.email)
                .map(|e| Email::parse(&e))
                .transpose()
                .map_err(domain)?,
            language: nonempty(input.language)
                .map(|l| Language::parse(&l))
                .transpose()
                .map_err(domain)?,
            opted_out,
        };
        let cmd = RecordPatientContact {
            his_patient_id: ShortText::parse("hisPatientId", &input.his_patient_id)
                .map_err(domain)?,
            contact,
        };
        let c = command_context(ctx, idempotency_key)?;
        done(scheduler(ctx).record_patient_contact(&c, &cmd)).await
    }
}
