//! Embedding settings over GraphQL: which sites may frame Buktor's pages and
//! call the widget API, how long a widget hold lasts, and whether patients
//! book online (`docs/embedding.md`). Admins and the HIS change them,
//! auditors read them.
use async_graphql::{Context, InputObject, Object, Result, SimpleObject};
use buktor_domain::embedding::{EmbeddingSettings, HoldMinutes, Origin};
use buktor_domain::Role;

use super::notifications::require;
use super::{app_error, command_context, principal, scheduler};
use crate::app::{AppError, ConfigureEmbedding};

#[derive(SimpleObject)]
#[graphql(name = "EmbeddingSettings")]
pub struct EmbeddingSettingsGql {
    /// Origins (`scheme://host[:port]`) that may frame Buktor's pages and
    /// call the widget API from a browser.
    allowed_origins: Vec<String>,
    /// How long choosing a slot in the widget keeps it (minutes).
    hold_minutes: i32,
    /// Whether patients may book for themselves without signing in.
    patient_booking: bool,
}

impl From<EmbeddingSettings> for EmbeddingSettingsGql {
    fn from(s: EmbeddingSettings) -> Self {
        EmbeddingSettingsGql {
            allowed_origins: s.allowed_origins.into_iter().map(String::from).collect(),
            hold_minutes: i32::from(s.hold_minutes.get()),
            patient_booking: s.patient_booking,
        }
    }
}

#[derive(InputObject)]
pub struct EmbeddingInput {
    /// Replaces the whole list.
    allowed_origins: Vec<String>,
    /// 1 to 30; unchanged when left out.
    hold_minutes: Option<i32>,
    /// Unchanged when left out.
    patient_booking: Option<bool>,
}

#[derive(Default)]
pub struct EmbeddingQuery;

#[Object]
impl EmbeddingQuery {
    /// The caller's hospital's embedding settings.
    async fn embedding_settings(&self, ctx: &Context<'_>) -> Result<EmbeddingSettingsGql> {
        require(
            ctx,
            &[Role::Admin, Role::HisSystem, Role::Auditor],
            "read embedding settings",
        )?;
        let s = scheduler(ctx)
            .embedding_settings(principal(ctx).tenant_id())
            .await
            .map_err(app_error)?;
        Ok(s.into())
    }
}

#[derive(Default)]
pub struct EmbeddingMutation;

#[Object]
impl EmbeddingMutation {
    /// Sets which sites may embed Buktor, the widget's hold length and
    /// whether patients book online; answers with the settings now in force.
    async fn configure_embedding(
        &self,
        ctx: &Context<'_>,
        input: EmbeddingInput,
        idempotency_key: Option<String>,
    ) -> Result<EmbeddingSettingsGql> {
        let domain = |e| app_error(AppError::Domain(e));
        let cmd = ConfigureEmbedding {
            allowed_origins: input
                .allowed_origins
                .iter()
                .map(|o| Origin::parse(o.trim()))
                .collect::<Result<_, _>>()
                .map_err(domain)?,
            hold_minutes: input
                .hold_minutes
                .map(|m| HoldMinutes::parse(i64::from(m)))
                .transpose()
                .map_err(domain)?,
            patient_booking: input.patient_booking,
        };
        let c = command_context(ctx, idempotency_key)?;
        let s = scheduler(ctx);
        s.configure_embedding(&c, &cmd).await.map_err(app_error)?;
        Ok(s.embedding_settings(c.tenant)
            .await
            .map_err(app_error)?
            .into())
    }
}
