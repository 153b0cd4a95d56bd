//! The commands that configure a hospital's notifications, and the reads
//! the notification dispatcher needs (settings, a patient's contact).
use buktor_domain::patient::{Channel, Patient, PatientContact};
use buktor_domain::values::Language;
use buktor_domain::{DomainError, DomainResult, PatientId, Role, ServiceId, TenantId};
use serde::Serialize;
use uuid::Uuid;

use super::{AppResult, CommandContext, CommandOutcome, Decided, Pending, Scheduler};
use crate::notifications::rules::Timing;
use crate::notifications::settings::{
    settings_stream, General, NotificationKind, NotificationSettings, ReminderRule, SettingsEvent,
    Template,
};

macro_rules! settings_command {
    ($ty:ident, $name:literal, $method:ident) => {
        impl super::Command for $ty {
            const NAME: &'static str = $name;
            fn allowed(role: Role) -> bool {
                role.can_configure()
            }
            fn contention_key(&self, ctx: &CommandContext) -> Option<String> {
                Some(settings_stream(ctx.tenant))
            }
            async fn decide(
                &self,
                s: &Scheduler,
                ctx: &CommandContext,
                new_id: Uuid,
            ) -> AppResult<Decided> {
                if let Some(e) = self.precheck(s, ctx).await? {
                    return Err(e.into());
                }
                s.decide_settings(ctx, self.id(ctx, new_id), |state| {
                    self.decide_with(state, new_id)
                })
                .await
            }
        }

        impl Scheduler {
            pub async fn $method(
                &self,
                ctx: &CommandContext,
                command: &$ty,
            ) -> AppResult<CommandOutcome> {
                self.run(ctx, command).await
            }
        }
    };
}

/// Turns notifications on or off and sets the channels and default language.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigureNotifications {
    pub general: General,
}
settings_command!(
    ConfigureNotifications,
    "configureNotifications",
    configure_notifications
);

impl ConfigureNotifications {
    async fn precheck(&self, _: &Scheduler, _: &CommandContext) -> AppResult<Option<DomainError>> {
        Ok(None)
    }
    fn id(&self, ctx: &CommandContext, _: Uuid) -> Uuid {
        ctx.tenant.as_uuid()
    }
    fn decide_with(&self, s: &NotificationSettings, _: Uuid) -> DomainResult<Vec<SettingsEvent>> {
        Ok(s.configure(self.general.clone()))
    }
}

/// Adds a reminder rule (a new id when none is given), or replaces the one with its id.
#[derive(Debug, Clone, Serialize)]
pub struct SetReminderRule {
    pub id: Option<Uuid>,
    pub timing: Timing,
    pub service_ids: Vec<ServiceId>,
}
settings_command!(SetReminderRule, "setReminderRule", set_reminder_rule);

impl SetReminderRule {
    async fn precheck(
        &self,
        s: &Scheduler,
        ctx: &CommandContext,
    ) -> AppResult<Option<DomainError>> {
        for id in &self.service_ids {
            if s.service(ctx.tenant, *id).await?.is_none() {
                return Ok(Some(DomainError::ServiceNotFound(*id)));
            }
        }
        Ok(None)
    }
    fn id(&self, _: &CommandContext, new_id: Uuid) -> Uuid {
        self.id.unwrap_or(new_id)
    }
    fn decide_with(
        &self,
        s: &NotificationSettings,
        new_id: Uuid,
    ) -> DomainResult<Vec<SettingsEvent>> {
        s.set_rule(ReminderRule {
            id: self.id.unwrap_or(new_id),
            timing: self.timing,
            service_ids: self.service_ids.clone(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoveReminderRule {
    pub rule_id: Uuid,
}
settings_command!(
    RemoveReminderRule,
    "removeReminderRule",
    remove_reminder_rule
);

impl RemoveReminderRule {
    async fn precheck(&self, _: &Scheduler, _: &CommandContext) -> AppResult<Option<DomainError>> {
        Ok(None)
    }
    fn id(&self, _: &CommandContext, _: Uuid) -> Uuid {
        self.rule_id
    }
    fn decide_with(&self, s: &NotificationSettings, _: Uuid) -> DomainResult<Vec<SettingsEvent>> {
        s.remove_rule(self.rule_id)
    }
}

/// Sets the text for one kind, channel and language.
#[derive(Debug, Clone, Serialize)]
pub struct SetNotificationTemplate {
    pub template: Template,
}
settings_command!(
    SetNotificationTemplate,
    "setNotificationTemplate",
    set_notification_template
);

impl SetNotificationTemplate {
    async fn precheck(&self, _: &Scheduler, _: &CommandContext) -> AppResult<Option<DomainError>> {
        Ok(None)
    }
    fn id(&self, ctx: &CommandContext, _: Uuid) -> Uuid {
        ctx.tenant.as_uuid()
    }
    fn decide_with(&self, s: &NotificationSettings, _: Uuid) -> DomainResult<Vec<SettingsEvent>> {
        s.set_template(self.template.clone())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RemoveNotificationTemplate {
    pub kind: NotificationKind,
    pub channel: Channel,
    pub language: Language,
}
settings_command!(
    RemoveNotificationTemplate,
    "removeNotificationTemplate",
    remove_notification_template
);

impl RemoveNotificationTemplate {
    async fn precheck(&self, _: &Scheduler, _: &CommandContext) -> AppResult<Option<DomainError>> {
        Ok(None)
    }
    fn id(&self, ctx: &CommandContext, _: Uuid) -> Uuid {
        ctx.tenant.as_uuid()
    }
    fn decide_with(&self, s: &NotificationSettings, _: Uuid) -> DomainResult<Vec<SettingsEvent>> {
        s.remove_template(self.kind, self.channel, self.language.clone())
    }
}

impl Scheduler {
    async fn decide_settings(
        &self,
        ctx: &CommandContext,
        id: Uuid,
        decide: impl FnOnce(&NotificationSettings) -> DomainResult<Vec<SettingsEvent>>,
    ) -> AppResult<Decided> {
        let stream = settings_stream(ctx.tenant);
        let current = self
            .load(ctx.tenant, &self.notification_settings, &stream)
            .await?;
        let events = decide(&current.state)?;
        Ok(Decided {
            id,
            streams: vec![Pending::new(ctx.tenant, stream, current, events, |s| {
                &s.notification_settings
            })],
        })
    }

    /// A hospital's notification settings as they are now.
    pub async fn notification_settings(&self, tenant: TenantId) -> AppResult<NotificationSettings> {
        Ok(self
            .load(
                tenant,
                &self.notification_settings,
                &settings_stream(tenant),
            )
            .await?
            .state)
    }

    /// The contact data recorded for a patient, if any was.
    pub async fn patient_contact(
        &self,
        tenant: TenantId,
        id: PatientId,
    ) -> AppResult<Option<PatientContact>> {
        let p = self
            .load(
                tenant,
                &self.patients,
                &buktor_domain::booking::stream_id::<Patient>(id),
            )
            .await?;
        Ok(p.state.known.filter(|k| k.id == id).map(|k| k.contact))
    }
}
