//! `buktor endpoint …`: the same endpoint management as the GraphQL
//! mutations, for operators on the server's machine.
use buktor_domain::TenantId;
use clap::Subcommand;
use uuid::Uuid;

use super::endpoints::{self, EndpointChanges};
use crate::store::webhooks::{AttemptFilter, MessageFilter, MessageState, ReplayFrom};
use crate::store::{Position, Store};

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Create an endpoint; prints its id and its signing secret (shown only now).
    Create {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "")]
        description: String,
        /// A payload type to receive (repeat for several); none = all.
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// Only events about this practitioner (repeatable).
        #[arg(long = "practitioner")]
        practitioners: Vec<Uuid>,
        /// Only events about practitioners of this department (repeatable).
        #[arg(long = "department")]
        departments: Vec<String>,
        #[arg(long)]
        rate_limit_per_second: Option<u32>,
        #[arg(long)]
        max_attempts: Option<u32>,
        #[arg(long)]
        disable_on_dead_letter: bool,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List a hospital's endpoints with their message counts.
    List {
        #[arg(long)]
        tenant: TenantId,
    },
    /// Enable or disable an endpoint, or change its URL.
    Update {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: Uuid,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// A new signing secret (printed once); the old one keeps signing during the overlap.
    RotateSecret {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: Uuid,
        /// Minutes both secrets sign (default: the server's rotation_overlap_secs).
        #[arg(long)]
        overlap_minutes: Option<i64>,
    },
    /// The delivery log of an endpoint: every attempt, oldest first.
    Deliveries {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: Uuid,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The dead-lettered messages of an endpoint.
    Dead {
        #[arg(long)]
        tenant: TenantId,
        #[arg(long)]
        id: Uuid,
    },
    /// Send a dead-lettered message again, or every message of an endpoint from a point on.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["message", "from_position", "from_time"])))]
    Replay {
        #[arg(long)]
        tenant: TenantId,
        /// One dead-lettered message (its webhook-id).
        #[arg(long)]
        message: Option<String>,
        /// The endpoint whose messages to send again (with --from-position or --from-time).
        #[arg(long, required_unless_present = "message")]
        id: Option<Uuid>,
        #[arg(long)]
        from_position: Option<Position>,
        #[arg(long)]
        from_time: Option<chrono::DateTime<chrono::Utc>>,
    },
}

pub async fn run(
    store: &dyn Store,
    config: &crate::config::Webhooks,
    command: EndpointCommand,
) -> anyhow::Result<()> {
    let webhooks = store.webhooks();
    match command {
        EndpointCommand::Create {
            tenant,
            url,
            description,
            event_types,
            practitioners,
            departments,
            rate_limit_per_second,
            max_attempts,
            disable_on_dead_letter,
            disabled,
        } => {
            if store.tenant(tenant).await?.is_none() {
                anyhow::bail!("no tenant {tenant}");
            }
            let record = endpoints::create(
                webhooks,
                tenant,
                EndpointChanges {
                    url: Some(url),
                    description: Some(description),
                    event_types: Some(event_types),
                    practitioner_ids: Some(practitioners),
                    departments: Some(departments),
                    enabled: Some(!disabled),
                    rate_limit_per_second: Some(rate_limit_per_second),
                    max_attempts: Some(max_attempts),
                    disable_on_dead_letter: Some(disable_on_dead_letter),
                },
            )
            .await?;
            println!("endpoint {}", record.id);
            println!("secret   {}  (shown only now)", record.secret.expose());
        }
        EndpointCommand::List { tenant } => {
            for e in webhooks.endpoints(Some(tenant)).await? {
                let c = webhooks.message_counts(tenant, e.id).await?;
                let types = if e.spec.event_types.is_empty() {
                    "all types".to_owned()
                } else {
                    e.spec.event_types.join(",")
                };
                println!(
                    "{}\t{}\t{}\t{}\tpending {} queued {} delivered {} dead {}{}",
                    e.id,
                    if e.spec.enabled {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    e.spec.url,
                    types,
                    c.pending,
                    c.queued,
                    c.delivered,
                    c.dead,
                    e.disabled_reason
                        .map(|r| format!("\t({r})"))
                        .unwrap_or_default()
                );
            }
        }
        EndpointCommand::Update {
            tenant,
            id,
            url,
            enable,
            disable,
        } => {
            let enabled = match (enable, disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            let e = endpoints::update(
                webhooks,
                tenant,
                id,
                EndpointChanges {
                    url,
                    enabled,
                    ..Default::default()
                },
            )
            .await?;
            println!(
                "{}\t{}\t{}",
                e.id,
                if e.spec.enabled {
                    "enabled"
                } else {
                    "disabled"
                },
                e.spec.url
            );
        }
        EndpointCommand::RotateSecret {
            tenant,
            id,
            overlap_minutes,
        } => {
            // Checked: an overlap beyond what a Duration holds is refused
            // like any other overlap over 30 days, not a panic.
            let overlap = match overlap_minutes {
                Some(m) => chrono::Duration::try_minutes(m),
                None => i64::try_from(config.rotation_overlap_secs)
                    .ok()
                    .and_then(chrono::Duration::try_seconds),
            }
            .ok_or_else(|| anyhow::anyhow!("the overlap must be from 0 to 30 days"))?;
            let e = endpoints::rotate_secret(webhooks, tenant, id, overlap).await?;
            println!("secret   {}  (shown only now)", e.secret.expose());
            if let Some((_, until)) = e.previous_secret {
                println!("the previous secret also signs until {until}");
            }
        }
        EndpointCommand::Deliveries { tenant, id, limit } => {
            let attempts = webhooks
                .attempts(
                    tenant,
                    &AttemptFilter {
                        endpoint_id: Some(id),
                        limit,
                        ..Default::default()
                    },
                )
                .await?;
            for a in attempts {
                println!(
                    "{}\t{}\t#{}\t{}\t{} ms\t{}\t{}",
                    a.started_at.to_rfc3339(),
                    a.message_id,
                    a.attempt,
                    a.status_code.map_or("-".to_owned(), |c| c.to_string()),
                    a.latency_ms,
                    a.outcome,
                    a.error.unwrap_or_default()
                );
            }
        }
        EndpointCommand::Dead { tenant, id } => {
            let dead = webhooks
                .messages(
                    tenant,
                    &MessageFilter {
                        endpoint_id: Some(id),
                        state: Some(MessageState::Dead),
                        limit: 10_000,
                        ..Default::default()
                    },
                )
                .await?;
            for m in dead {
                println!(
                    "{}\t{}\t{}\t{} attempts\t{}",
                    m.id,
                    m.position,
                    m.event_type,
                    m.attempts,
                    m.last_error.unwrap_or_default()
                );
            }
        }
        EndpointCommand::Replay {
            tenant,
            message,
            id,
            from_position,
            from_time,
        } => match (message, id, from_position, from_time) {
            (Some(message), _, _, _) => {
                if !webhooks.replay_message(tenant, &message).await? {
                    anyhow::bail!("message {message} is not a dead message of tenant {tenant}");
                }
                println!("{message} will be sent again");
            }
            (None, Some(id), Some(p), None) => {
                replay(store, tenant, id, ReplayFrom::Position(p)).await?
            }
            (None, Some(id), None, Some(t)) => {
                replay(store, tenant, id, ReplayFrom::Time(t)).await?
            }
            _ => {
                anyhow::bail!("give --message, or --id with one of --from-position and --from-time")
            }
        },
    }
    Ok(())
}

async fn replay(
    store: &dyn Store,
    tenant: TenantId,
    id: Uuid,
    from: ReplayFrom,
) -> anyhow::Result<()> {
    endpoints::get(store.webhooks(), tenant, id).await?;
    let n = store.webhooks().replay_endpoint(tenant, id, from).await?;
    println!("{n} messages will be sent again");
    Ok(())
}
