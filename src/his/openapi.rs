//! The OpenAPI 3.1 document of `/his/v1/`, generated from the handlers and
//! bodies (utoipa), and a small page that renders it. The document is also
//! checked in as `docs/his-openapi.json`; a test fails when the two drift.
//!
//! The document says exactly what the server takes: a request the schema
//! allows is never refused as malformed, and one it forbids always is
//! (schemathesis checks both, `tests/it/his_schemathesis.rs`). What JSON
//! Schema cannot say (an end after its start, the path's id equal to the
//! body's, a time the clock skips, the state of the store) is refused as a
//! rule, with its `code` and `field`, and listed in docs/his-api.md.
//!
//! utoipa derives the structure; `refine` adds what its attributes cannot
//! express: the shared text and time schemas, the version rule (`oneOf`),
//! the rules between fields of an exception or a forced booking
//! (`if`/`then`), the `Idempotency-Key` header, the answers every operation
//! shares, and the bulk records, which are checked record by record.
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::model;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Buktor HIS API",
        version = "1",
        description = "The inbound API for hospital information systems: practitioners, services, schedules, patients and appointments keyed by the HIS's own ids. Every write needs an Idempotency-Key header (a repeat answers as the first did) and the record's HIS version (version or lastModified); an older version arriving after a newer one is acknowledged as stale and changes nothing. Errors are RFC 9457 problem details with a stable code. Authenticate with a his-system API key as a bearer token.",
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
    security(("hisKey" = [])),
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

/// The schemas of the bodies' fields, shared by name (`components.schemas`)
/// and defined in `refine`. The server's checks are in `model`; these say
/// the same in JSON Schema.
pub mod schemas {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, Type};
    use utoipa::openapi::{RefOr, Schema};

    /// The longest e-mail address, as sent.
    pub const EMAIL_MAX: usize = 254;

    fn named(name: &str) -> RefOr<Schema> {
        Ref::from_schema_name(name).into()
    }

    /// `null` or the named schema: null, like an absent field, is no value.
    fn or_null(name: &str) -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(Ref::from_schema_name(name))
            .into()
    }

    pub fn his_id() -> RefOr<Schema> {
        named("HisId")
    }

    pub fn optional_his_id() -> RefOr<Schema> {
        or_null("HisId")
    }

    pub fn his_ids() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(Ref::from_schema_name("HisId"))
            .min_items(Some(1))
            .into()
    }

    pub fn name() -> RefOr<Schema> {
        named("Name")
    }

    pub fn optional_name() -> RefOr<Schema> {
        or_null("OptionalName")
    }

    pub fn reason() -> RefOr<Schema> {
        named("Reason")
    }

    pub fn optional_reason() -> RefOr<Schema> {
        or_null("OptionalReason")
    }

    pub fn phone() -> RefOr<Schema> {
        or_null("Phone")
    }

    pub fn email() -> RefOr<Schema> {
        or_null("Email")
    }

    pub fn language() -> RefOr<Schema> {
        or_null("Language")
    }

    pub fn time_of_day() -> RefOr<Schema> {
        named("TimeOfDay")
    }

    pub fn optional_time_of_day() -> RefOr<Schema> {
        or_null("TimeOfDay")
    }

    pub fn appointment_start() -> RefOr<Schema> {
        named("AppointmentStart")
    }
}

// Character classes in ECMA-262 syntax (what JSON Schema's `pattern`
// uses). White space is Unicode's White_Space, what Rust's `str::trim`
// removes; control characters are Unicode's Cc, what the domain refuses.
/// White space, which text may start and end with (it is trimmed).
const WS: &str = r"[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Neither white space nor a control character: how trimmed text begins and ends.
const EDGE: &str =
    r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Anything but a control character: the inside of trimmed text.
const INNER: &str = r"[^\u0000-\u001f\u007f-\u009f]";
/// Neither white space, a control character, `@` nor `.`: how a domain begins and ends.
const MAIL_EDGE: &str =
    r"[^@.\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";
/// Neither white space, a control character nor `@`.
const MAIL_CHAR: &str =
    r"[^@\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// Text with at least one character that is not white space, and no
/// control character between its first and last such character.
fn text_pattern() -> String {
    format!("^{WS}*{EDGE}(?:{INNER}*{EDGE})?{WS}*$")
}

/// The same, or only white space (no value).
fn optional_text_pattern() -> String {
    format!("^{WS}*(?:{EDGE}(?:{INNER}*{EDGE})?)?{WS}*$")
}

/// Matches what the server takes as an `Idempotency-Key` (with `maxLength` 200):
/// visible ASCII, spaces and tabs inside.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[\\t -~]*[!-~][\\t -~]*$";

const TIME_PATTERN: &str = "^(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?$";

fn text_schemas() -> Value {
    let text = text_pattern();
    let optional = optional_text_pattern();
    let blank_is_none = "Blank (only white space) is the same as absent.";
    let rules = "Surrounding white space is trimmed; no control characters inside.";
    json!({
        "HisId": {
            "type": "string", "maxLength": 100, "pattern": text,
            "description": format!("An id in the HIS: 1 to 100 characters. {rules}"),
            "examples": ["DOC-1"],
        },
        "Name": {
            "type": "string", "maxLength": 200, "pattern": text,
            "description": format!("1 to 200 characters. {rules}"),
            "examples": ["Dr. Ada Jansen"],
        },
        "OptionalName": {
            "type": "string", "maxLength": 200, "pattern": optional,
            "description": format!("Up to 200 characters. {rules} {blank_is_none}"),
            "examples": ["Cardiology"],
        },
        "Reason": {
            "type": "string", "maxLength": 500, "pattern": text,
            "description": format!("1 to 500 characters. {rules}"),
            "examples": ["Patient called to cancel"],
        },
        "OptionalReason": {
            "type": "string", "maxLength": 500, "pattern": optional,
            "description": format!("Up to 500 characters. {rules} {blank_is_none}"),
            "examples": ["Bring the referral letter"],
        },
        "Phone": {
            "type": "string",
            "pattern": format!(r"^{WS}*(?:[ ()-]*\+(?:[ ()-]*[0-9]){{8,15}}[ ()-]*)?{WS}*$"),
            "description": format!("International form (E.164): `+` and 8 to 15 digits; spaces, `-`, `(` and `)` are ignored. {blank_is_none}"),
            "examples": ["+31 20 123 4567"],
        },
        "Email": {
            "type": "string", "maxLength": schemas::EMAIL_MAX,
            "pattern": format!(r"^{WS}*(?:{MAIL_CHAR}+@{MAIL_EDGE}{MAIL_CHAR}*\.{MAIL_CHAR}*{MAIL_EDGE})?{WS}*$"),
            "description": format!("An e-mail address, checked for shape only: one `@`, a domain with a dot inside, no spaces. {blank_is_none}"),
            "examples": ["ada@example.org"],
        },
        "Language": {
            "type": "string",
            "pattern": format!("^{WS}*(?:[A-Za-z]{{2,3}}(?:-[A-Za-z0-9]{{1,8}})*)?{WS}*$"),
            "description": format!("What the patient reads, a language tag such as `nl`, `en` or `pt-BR`. {blank_is_none}"),
            "examples": ["nl"],
        },
        "TimeOfDay": {
            "type": "string", "pattern": TIME_PATTERN,
            "description": "A wall-clock time in the hospital's time zone, HH:MM or HH:MM:SS (24 hours).",
            "examples": ["08:00"],
        },
        "AppointmentStart": {
            "description": "RFC 3339 with an offset, or the hospital's local wall-clock time without one (YYYY-MM-DDTHH:MM[:SS]); a local time that the clock skips or shows twice (DST changes) is refused: give the offset.",
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "pattern": "^(?:19|20|21)[0-9]{2}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-9]))T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?$"},
            ],
            "examples": ["2026-12-01T09:20:00+01:00", "2026-12-01T09:20"],
        },
    })
}

/// The bodies that carry the record's HIS version.
const VERSIONED: [&str; 7] = [
    "PractitionerBody",
    "ServiceBody",
    "ScheduleBody",
    "PatientBody",
    "AppointmentBody",
    "CancelBody",
    "StepBody",
];

/// The bodies a bulk request carries, and the records they become there.
const BULK_RECORDS: [&str; 8] = [
    "PractitionerBody",
    "ServiceBody",
    "ScheduleBody",
    "WeeklyRuleBody",
    "ExceptionBody",
    "PatientBody",
    "AppointmentBody",
    "AppointmentPatient",
];

/// Text schemas that bulk records take as any string (checked per record).
const CHECKED_PER_RECORD: [&str; 9] = [
    "HisId",
    "Name",
    "OptionalName",
    "Reason",
    "OptionalReason",
    "Phone",
    "Email",
    "Language",
    "AppointmentStart",
];

fn bulk_name(body: &str) -> String {
    format!("Bulk{}", body.trim_end_matches("Body"))
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn response_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// The answers the operations share: (status, component name, description).
const ANSWERS: [(&str, &str, &str); 10] = [
    ("400", "BadRequest", "The request is malformed: MALFORMED_BODY (not JSON, or not the schema's shape or types), IDEMPOTENCY_KEY_REQUIRED, INVALID_IDEMPOTENCY_KEY, BAD_BODY."),
    ("401", "Unauthenticated", "UNAUTHENTICATED: no key, or a key that is unknown or revoked."),
    ("403", "Forbidden", "FORBIDDEN: the key's role is not his-system."),
    ("404", "NotFound", "A record it names is unknown: UNKNOWN_PRACTITIONER, UNKNOWN_SERVICE, UNKNOWN_APPOINTMENT."),
    ("409", "Conflict", "The request conflicts with what Buktor has: IDEMPOTENCY_KEY_REUSED (the key came with another request), VERSION_KIND_CHANGED, SLOT_TAKEN, INVALID_TRANSITION, APPOINTMENT_ALREADY_EXISTS, CONCURRENCY_CONFLICT."),
    ("413", "TooLarge", "BODY_TOO_LARGE, or TOO_MANY_RECORDS in one bulk request."),
    ("422", "Unprocessable", "Well-formed but refused: INVALID_INPUT (with the `field` at fault: a value the schema describes, or a rule between fields it cannot say, such as an end before its start) or a booking rule (IN_THE_PAST, INSIDE_MINIMUM_NOTICE, BEYOND_BOOKING_WINDOW, OUTSIDE_AVAILABILITY, PRACTITIONER_INACTIVE, SERVICE_INACTIVE, SERVICE_NOT_OFFERED, CHECK_IN_TOO_EARLY, NOT_STARTED_YET, …)."),
    ("429", "RateLimited", "RATE_LIMITED: the key's request budget is spent; retry after the reset."),
    ("500", "Internal", "INTERNAL: a bug in Buktor; a retry does not help."),
    ("503", "StoreUnavailable", "STORE_UNAVAILABLE: the store could not be reached; retry with the same Idempotency-Key."),
];

/// Which shared answers an operation can give.
fn answers_of(method: &str, path: &str) -> &'static [&'static str] {
    match (method, path) {
        ("get", _) => &["400", "401", "403", "404", "422", "429", "500", "503"],
        ("post", "/his/v1/bulk") => &["400", "401", "403", "413", "429", "500", "503"],
        ("put", "/his/v1/practitioners/{hisId}" | "/his/v1/patients/{hisId}") => &[
            "400", "401", "403", "409", "413", "422", "429", "500", "503",
        ],
        _ => &[
            "400", "401", "403", "404", "409", "413", "422", "429", "500", "503",
        ],
    }
}

fn problem_response(description: &str, status: &str) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": schema_ref("ProblemBody")}},
    });
    let headers = match status {
        "401" => json!({"WWW-Authenticate": {
            "description": "How to authenticate: `Bearer realm=\"buktor\"`.",
            "schema": {"type": "string"},
        }}),
        "429" => json!({
            "Retry-After": {"description": "Seconds until the budget is renewed.", "schema": {"type": "integer"}},
            "RateLimit-Limit": {"description": "Requests per window.", "schema": {"type": "integer"}},
            "RateLimit-Remaining": {"description": "Requests left in this window.", "schema": {"type": "integer"}},
            "RateLimit-Reset": {"description": "Seconds until the window ends.", "schema": {"type": "integer"}},
        }),
        _ => return response,
    };
    response["headers"] = headers;
    response
}

/// What a bulk request takes of a record: its shape and types (a record of
/// another shape makes the whole body malformed), not the rules on its
/// values, which refuse that record alone.
fn loosened(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let name = target.rsplit('/').next().unwrap_or_default();
                if CHECKED_PER_RECORD.contains(&name) {
                    return json!({"type": "string"});
                }
                if BULK_RECORDS.contains(&name) {
                    return schema_ref(&bulk_name(name));
                }
                return schema.clone();
            }
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    // Rules between fields and on values: checked per record.
                    "oneOf" if map.contains_key("properties") => {}
                    "if" | "then" | "else" | "minItems" | "maxItems" | "minimum" | "maximum"
                    | "pattern" | "minLength" | "maxLength" => {}
                    _ => {
                        out.insert(key.clone(), loosened(value));
                    }
                }
            }
            // The body's numbers are whole 64-bit numbers, whatever the record.
            if map.get("format").and_then(Value::as_str) == Some("int64") {
                out.insert("minimum".into(), json!(-INTEGER_MAX));
                out.insert("maximum".into(), json!(INTEGER_MAX));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(loosened).collect()),
        other => other.clone(),
    }
}

/// The largest integer a body may carry, and the negative of the smallest
/// (`model::wire::integer`).
pub const INTEGER_MAX: i64 = i64::MAX;

/// Sets the bounds of every `int64` number to a signed 64-bit integer's,
/// where the field has none of its own: what the server can read.
fn bound_integers(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str) == Some("int64") {
                map.entry("minimum").or_insert(json!(-INTEGER_MAX));
                map.entry("maximum").or_insert(json!(INTEGER_MAX));
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The years Buktor accepts (`buktor_domain::time`), 1900 to 2199, as the
/// start of every date and date-time.
const YEARS_PATTERN: &str = "^(?:19|20|21)[0-9]{2}-";

/// Bounds every `date` and `date-time` to the years Buktor accepts.
fn bound_years(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if matches!(
                map.get("format").and_then(Value::as_str),
                Some("date" | "date-time")
            ) {
                map.entry("pattern").or_insert(json!(YEARS_PATTERN));
            }
            map.values_mut().for_each(bound_years);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_years),
        _ => {}
    }
}

/// What utoipa's attributes cannot say; see the module's documentation.
fn refine(doc: &mut Value) {
    bound_integers(doc);
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("utoipa writes components.schemas");
    if let Value::Object(text) = text_schemas() {
        schemas.extend(text);
    }
    for body in VERSIONED {
        let schema = &mut schemas[body];
        schema["oneOf"] = json!([
            {"required": ["version"], "properties": {"version": {"type": "integer"}}},
            {"required": ["lastModified"], "properties": {"lastModified": {"type": "string"}}},
        ]);
        let about = "Give exactly one of `version` (a number that grows with every change) and `lastModified` (a time that does).";
        schema["description"] = match schema["description"].as_str() {
            Some(d) => json!(format!("{d} {about}")),
            None => json!(about),
        };
    }
    // An extra session needs its hours and grid; leave is the whole day or
    // from `start` to `end`.
    schemas["ExceptionBody"]["if"] = json!({
        "required": ["kind"], "properties": {"kind": {"const": "extra-session"}},
    });
    schemas["ExceptionBody"]["then"] = json!({
        "required": ["start", "end", "gridMinutes"],
        "properties": {
            "start": schema_ref("TimeOfDay"),
            "end": schema_ref("TimeOfDay"),
            "gridMinutes": {"type": "integer", "minimum": 5, "maximum": 240},
        },
    });
    schemas["ExceptionBody"]["else"] = json!({
        "anyOf": [
            {"required": ["start", "end"], "properties": {"start": schema_ref("TimeOfDay"), "end": schema_ref("TimeOfDay")}},
            {"properties": {"start": {"type": "null"}, "end": {"type": "null"}}},
        ],
    });
    // `force` needs a `forceReason`, which is only meaningful with it.
    schemas["AppointmentBody"]["if"] = json!({
        "required": ["force"], "properties": {"force": {"const": true}},
    });
    schemas["AppointmentBody"]["then"] = json!({
        "required": ["forceReason"], "properties": {"forceReason": schema_ref("Reason")},
    });
    schemas["AppointmentBody"]["else"] = json!({
        "properties": {"forceReason": {"anyOf": [
            {"type": "null"},
            {"type": "string", "maxLength": 500, "pattern": format!("^{WS}*$")},
        ]}},
    });
    // Within the accepted years (also in bulk records: the shape of a date).
    for schema in schemas.values_mut() {
        bound_years(schema);
    }
    // Bulk records: shape and types only.
    for body in BULK_RECORDS {
        let mut record = loosened(&schemas[body]);
        let about = format!(
            "A record as in the single-record operation ({body}); a bulk request checks each record's values and rules alone, so a record that breaks one fails alone (outcome `failed`, with its problem). `hisId` (`practitionerId` for schedules) is required here."
        );
        record["description"] = json!(about);
        schemas.insert(bulk_name(body), record);
    }
    let bulk_body = loosened(&schemas["BulkBody"]);
    schemas.insert("BulkBody".into(), bulk_body);

    let components = doc["components"].as_object_mut().expect("components");
    let responses: Map<String, Value> = ANSWERS
        .iter()
        .map(|(status, name, description)| {
            ((*name).to_owned(), problem_response(description, status))
        })
        .collect();
    components.insert("responses".into(), Value::Object(responses));
    let key_header = json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": true,
        "description": "Names this write: a repeat with the same key answers as the first did, without writing again; the same key with another request is refused (409 IDEMPOTENCY_KEY_REUSED). 1 to 200 visible ASCII characters, for example a UUID.",
        "schema": {"type": "string", "maxLength": 200, "pattern": IDEMPOTENCY_KEY_PATTERN, "examples": ["0b9e3c1e-8f0d-4d6e-9a53-2c1f4f7e1a10"]},
    });
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let Value::Object(item) = item else { continue };
        for (method, operation) in item.iter_mut() {
            for param in operation["parameters"].as_array_mut().into_iter().flatten() {
                if param["name"] == "hisId" {
                    // A path takes no control characters at all, not even
                    // the white space a body's id may be surrounded by.
                    param["schema"] = json!({"allOf": [
                        schema_ref("HisId"),
                        {"pattern": format!("^{INNER}*$")},
                    ]});
                }
            }
            if method != "get" {
                let params = operation["parameters"].as_array_mut();
                match params {
                    Some(params) => params.push(key_header.clone()),
                    None => operation["parameters"] = json!([key_header.clone()]),
                }
            }
            let responses = operation["responses"]
                .as_object_mut()
                .expect("every operation answers");
            for status in answers_of(method, path) {
                let (_, name, _) = ANSWERS
                    .iter()
                    .find(|(s, _, _)| s == status)
                    .expect("a shared answer");
                responses
                    .entry(*status)
                    .or_insert_with(|| response_ref(name));
            }
            sort_statuses(responses);
        }
    }
}

fn sort_statuses(responses: &mut Map<String, Value>) {
    let mut entries: Vec<(String, Value)> = std::mem::take(responses).into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    responses.extend(entries);
}

/// The document, pretty-printed as it is checked in.
pub fn document_json() -> String {
    let mut doc = serde_json::to_value(HisApi::openapi()).expect("the document is JSON");
    refine(&mut doc);
    let mut text = serde_json::to_string_pretty(&doc).expect("the document is JSON");
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
