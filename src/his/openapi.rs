//! The OpenAPI 3.1 document of `/his/v1/`, generated from the handlers and
//! bodies (utoipa), and a small page that renders it. The document is also
//! checked in as `docs/his-openapi.json`; a test fails when the two drift.
use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::model;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Buktor HIS API",
        version = "1",
        description = "The inbound API for hospital information systems: practitioners, services, schedules, patients and appointments keyed by the HIS's own ids. Every write needs an Idempotency-Key header and the record's HIS version (version or lastModified); an older version arriving after a newer one is acknowledged as stale and changes nothing. Errors are RFC 9457 problem details with a stable code. Authenticate with a his-system API key as a bearer token.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        super::put_practitioner,
        super::put_schedule,
        super::put_service,
        super::put_patient,
        super::put_appointment,
        super::get_appointment,
        super::cancel_appointment,
        super::check_in,
        super::complete,
        super::no_show,
        super::bulk,
    ),
    components(schemas(
        model::PractitionerBody,
        model::ServiceBody,
        model::ScheduleBody,
        model::WeeklyRuleBody,
        model::ExceptionBody,
        model::ExceptionKindBody,
        model::Day,
        model::PatientBody,
        model::ChannelBody,
        model::AppointmentBody,
        model::AppointmentPatient,
        model::CancelBody,
        model::CancelledByBody,
        model::StepBody,
        model::WriteResult,
        model::Outcome,
        model::ProblemBody,
        model::AppointmentView,
        model::BulkBody,
        model::BulkResult,
        model::BulkSummary,
    )),
    modifiers(&HisKey),
    tags(
        (name = "practitioners"), (name = "schedules"), (name = "services"),
        (name = "patients"), (name = "appointments"),
        (name = "bulk", description = "Initial load and nightly reconciliation"),
    )
)]
pub struct HisApi;

struct HisKey;

impl Modify for HisKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "hisKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A his-system API key (`buktor api-key create --role his-system`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, pretty-printed as it is checked in.
pub fn document_json() -> String {
    let mut text = HisApi::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document_json())
}

/// A self-contained page (no CDN: hospital networks are often closed)
/// listing every operation with its parameters, bodies and answers.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "content-security-policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ))
        .body(DOCS_PAGE)
}

const DOCS_PAGE: &str = include_str!("docs.html");
