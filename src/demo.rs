//! The demo hospital: seeded on a fresh embedded store (and on PostgreSQL
//! only with `--demo`), so a newcomer can book within a minute of `cargo run`.
use buktor_domain::practitioner::PractitionerDetails;
use buktor_domain::schedule::WeeklyRule;
use buktor_domain::service::ServiceDetails;
use buktor_domain::values::Name;
use buktor_domain::{Actor, Role, Source, TenantId};
use chrono::{NaiveDate, NaiveTime, Utc, Weekday};
use uuid::Uuid;

use crate::app::{
    AppResult, CommandContext, ConfigureEmbedding, DefineService, RegisterPractitioner, Scheduler,
    SetWeeklyRules,
};
use crate::auth::generate_api_key;
use crate::store::{StoreResult, TenantRecord};

pub const DEMO_TENANT_NAME: &str = "Demo Hospital";

/// What the seed made: the tenant and an admin key to print once.
pub struct Seeded {
    pub tenant: TenantRecord,
    pub admin_key: String,
}

/// Creates a tenant with an admin key. Used by the CLI and the demo seed.
pub async fn create_tenant(
    scheduler: &Scheduler,
    name: &str,
    time_zone: chrono_tz::Tz,
) -> StoreResult<TenantRecord> {
    let tenant = TenantRecord {
        id: TenantId::new(),
        name: name.to_owned(),
        time_zone,
        created_at: Utc::now(),
    };
    scheduler.store().create_tenant(&tenant).await?;
    Ok(tenant)
}

pub async fn seed(scheduler: &Scheduler) -> AppResult<Seeded> {
    let tenant = create_tenant(scheduler, DEMO_TENANT_NAME, chrono_tz::Europe::Amsterdam).await?;
    let key = generate_api_key(tenant.id, Role::Admin, "demo admin");
    scheduler.store().create_api_key(&key.record).await?;
    let ctx = CommandContext {
        tenant: tenant.id,
        time_zone: tenant.time_zone,
        actor: Actor {
            id: "system:demo-seed".into(),
            role: Role::Admin,
        },
        source: Source::System,
        remote_addr: None,
        correlation_id: Uuid::now_v7(),
        idempotency_key: None,
    };
    let name = |s: &str| Name::parse("name", s);
    let mut practitioners = Vec::new();
    for (who, specialty, department) in [
        ("Dr. Amira Haddad", "Cardiology", "Heart Centre"),
        ("Dr. Lucas de Vries", "Dermatology", "Outpatient Clinic B"),
        ("Dr. Mei Tanaka", "General Practice", "Outpatient Clinic A"),
    ] {
        let outcome = scheduler
            .register_practitioner(
                &ctx,
                &RegisterPractitioner {
                    id: None,
                    details: PractitionerDetails {
                        name: name(who)?,
                        specialty: name(specialty)?,
                        department: Some(name(department)?),
                        location: Some(name("Main building")?),
                        external_id: None,
                    },
                },
            )
            .await?;
        practitioners.push(outcome.id.into());
    }
    let today = Utc::now().with_timezone(&tenant.time_zone).date_naive();
    let weekdays = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
    ];
    let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
    let from = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap_or(today);
    for p in &practitioners {
        scheduler
            .set_weekly_rules(
                &ctx,
                &SetWeeklyRules {
                    practitioner_id: *p,
                    rules: vec![
                        WeeklyRule::parse(weekdays, hm(8, 0), hm(12, 0), 15, from, None)?,
                        WeeklyRule::parse(weekdays, hm(13, 0), hm(17, 0), 15, from, None)?,
                    ],
                },
            )
            .await?;
    }
    for (service, minutes, capacity, who) in [
        ("General consultation", 15, 1, practitioners.clone()),
        ("Follow-up visit", 30, 1, practitioners.clone()),
        (
            "Cardiac rehabilitation group",
            60,
            8,
            vec![practitioners[0]],
        ),
    ] {
        scheduler
            .define_service(
                &ctx,
                &DefineService {
                    id: None,
                    details: ServiceDetails::parse(service, minutes, 0, 5, capacity, who, 60, 90)?,
                },
            )
            .await?;
    }
    // A demo is for trying the widget: its patients may book online, from
    // Buktor's own pages (no other site is allowed).
    scheduler
        .configure_embedding(
            &ctx,
            &ConfigureEmbedding {
                allowed_origins: Vec::new(),
                hold_minutes: None,
                patient_booking: Some(true),
            },
        )
        .await?;
    Ok(Seeded {
        tenant,
        admin_key: key.token,
    })
}
