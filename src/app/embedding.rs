//! The command that configures how a hospital embeds Buktor, and the read
//! the widget, the embedded pages and CORS ask on every request.
use buktor_domain::booking::stream_id;
use buktor_domain::embedding::{EmbeddingSettings, HoldMinutes, Origin};
use buktor_domain::{Role, TenantId};
use serde::Serialize;
use uuid::Uuid;

use super::{AppResult, CommandContext, CommandOutcome, Decided, Scheduler};

/// Replaces the allowed origins; the hold length and patient booking stay
/// as they are when not given.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigureEmbedding {
    pub allowed_origins: Vec<Origin>,
    pub hold_minutes: Option<HoldMinutes>,
    pub patient_booking: Option<bool>,
}

impl super::Command for ConfigureEmbedding {
    const NAME: &'static str = "configureEmbedding";
    fn allowed(role: Role) -> bool {
        role.can_configure()
    }
    fn contention_key(&self, ctx: &CommandContext) -> Option<String> {
        Some(embedding_stream(ctx.tenant))
    }
    async fn decide(&self, s: &Scheduler, ctx: &CommandContext, _: Uuid) -> AppResult<Decided> {
        s.decide_on(
            ctx,
            |s| &s.embedding_settings,
            embedding_stream(ctx.tenant),
            ctx.tenant.as_uuid(),
            |state| {
                state.configure(
                    self.allowed_origins.clone(),
                    self.hold_minutes,
                    self.patient_booking,
                )
            },
        )
        .await
    }
}

pub fn embedding_stream(tenant: TenantId) -> String {
    stream_id::<EmbeddingSettings>(tenant.as_uuid())
}

impl Scheduler {
    pub async fn configure_embedding(
        &self,
        ctx: &CommandContext,
        command: &ConfigureEmbedding,
    ) -> AppResult<CommandOutcome> {
        self.run(ctx, command).await
    }

    /// A hospital's embedding settings as they are now (one catch-up read of
    /// a stream that rarely changes, so every instance sees a change at once).
    pub async fn embedding_settings(&self, tenant: TenantId) -> AppResult<EmbeddingSettings> {
        Ok(self
            .load(tenant, &self.embedding_settings, &embedding_stream(tenant))
            .await?
            .state)
    }
}
