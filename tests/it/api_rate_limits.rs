//! Rate limits over HTTP on every surface: each 429 says when to retry
//! (`Retry-After`) and carries the `RateLimit-*` headers, whatever the
//! surface's body format (problem details, FHIR OperationOutcome), and the
//! widget exposes them to a cross-site page.
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::*;

const ORIGIN: &str = "http://his.example.org:8443";
/// One request per key per window: the second is always refused.
const WINDOW_SECS: u64 = 60;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Answer {
    let mut request = client.request(method, url).timeout(Duration::from_secs(30));
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .expect("the request reaches the server");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A stream's first answer is not read to its end: only its head matters.
    let body = if headers
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    {
        String::new()
    } else {
        response.text().await.expect("a body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends the same request twice: the first is admitted, the second must be
/// a complete 429 for `surface`.
async fn second_is_refused(
    surface: &str,
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    headers: &[(&str, String)],
    body: Option<Value>,
) -> Answer {
    let first = send(client, method.clone(), url.clone(), headers, body.clone()).await;
    assert_ne!(first.status, 429, "{surface}: the first request is refused");
    let refused = send(client, method, url, headers, body).await;
    assert_eq!(refused.status, 429, "{surface}: {}", refused.body);
    let retry_after: u64 = refused
        .header("retry-after")
        .unwrap_or_else(|| panic!("{surface}: no Retry-After"))
        .parse()
        .unwrap_or_else(|e| panic!("{surface}: Retry-After is not seconds: {e}"));
    assert!(
        (1..=WINDOW_SECS).contains(&retry_after),
        "{surface}: Retry-After {retry_after}"
    );
    assert_eq!(refused.header("ratelimit-limit"), Some("1"), "{surface}");
    assert_eq!(
        refused.header("ratelimit-remaining"),
        Some("0"),
        "{surface}"
    );
    let reset: u64 = refused
        .header("ratelimit-reset")
        .unwrap_or_else(|| panic!("{surface}: no RateLimit-Reset"))
        .parse()
        .unwrap();
    assert_eq!(reset, retry_after, "{surface}: RateLimit-Reset");
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_surface_answers_a_rate_limited_request_with_retry_after_and_ratelimit_headers() {
    let deployment = Deployment::embedded();
    let server = deployment
        .start_with(ServerOptions {
            rate_limit: (1, WINDOW_SECS),
            ..Default::default()
        })
        .await;
    let (tenant, setup) = deployment.tenant_with_admin("Throttled Everywhere").await;
    let set = server
        .gql(
            &setup,
            "mutation($i: EmbeddingInput!) { configureEmbedding(input: $i) { patientBooking } }",
            json!({"i": {"allowedOrigins": [ORIGIN], "patientBooking": true}}),
        )
        .await;
    assert_eq!(data(&set)["configureEmbedding"]["patientBooking"], true);
    let client = reqwest::Client::new();
    let base = &server.url;
    let bearer = |key: &str| vec![("authorization", format!("Bearer {key}"))];
    let get = reqwest::Method::GET;

    let key = deployment.create_api_key(&tenant, "staff").await;
    let r = second_is_refused(
        "GraphQL",
        &client,
        reqwest::Method::POST,
        format!("{base}/graphql"),
        &bearer(&key),
        Some(json!({"query": "{ me { role } }"})),
    )
    .await;
    assert!(r.body.contains("RATE_LIMITED"), "{}", r.body);

    let key = deployment.create_api_key(&tenant, "staff").await;
    let r = second_is_refused(
        "/events",
        &client,
        get.clone(),
        format!("{base}/events"),
        &bearer(&key),
        None,
    )
    .await;
    assert!(r.body.contains("RATE_LIMITED"), "{}", r.body);

    let key = deployment.create_api_key(&tenant, "staff").await;
    second_is_refused(
        "/events/stream",
        &client,
        get.clone(),
        format!("{base}/events/stream"),
        &bearer(&key),
        None,
    )
    .await;

    let key = deployment.create_api_key(&tenant, "staff").await;
    let r = second_is_refused(
        "FHIR",
        &client,
        get.clone(),
        format!("{base}/fhir/r4/Practitioner"),
        &bearer(&key),
        None,
    )
    .await;
    let outcome: Value = serde_json::from_str(&r.body).expect("an OperationOutcome");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "throttled");

    let key = deployment.create_api_key(&tenant, "his-system").await;
    let r = second_is_refused(
        "/his/v1",
        &client,
        get.clone(),
        format!("{base}/his/v1/appointments/A-1"),
        &bearer(&key),
        None,
    )
    .await;
    assert!(r.body.contains("RATE_LIMITED"), "{}", r.body);

    let key = deployment.create_api_key(&tenant, "admin").await;
    let r = second_is_refused(
        "/embed/v1/tokens",
        &client,
        reqwest::Method::POST,
        format!("{base}/embed/v1/tokens"),
        &bearer(&key),
        Some(json!({"user": "u-1", "name": "U", "role": "staff"})),
    )
    .await;
    assert!(r.body.contains("RATE_LIMITED"), "{}", r.body);

    // A staff session in the widget counts against its user.
    let key = deployment.create_api_key(&tenant, "admin").await;
    let token = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/embed/v1/tokens"),
        &bearer(&key),
        Some(json!({"user": "u-2", "name": "U", "role": "staff"})),
    )
    .await;
    assert_eq!(token.status, 201, "{}", token.body);
    let token: Value = serde_json::from_str(&token.body).unwrap();
    let session = send(
        &client,
        reqwest::Method::POST,
        format!("{base}/embed/v1/session"),
        &[],
        Some(json!({"token": token["token"]})),
    )
    .await;
    assert_eq!(session.status, 200, "{}", session.body);
    let session: Value = serde_json::from_str(&session.body).unwrap();
    let mut headers = bearer(session["session"].as_str().unwrap());
    headers.push(("origin", ORIGIN.to_owned()));
    let slots = format!(
        "{base}/widget/v1/{tenant}/slots?service=00000000-0000-0000-0000-000000000000&from=2030-01-01&to=2030-01-01"
    );
    let r = second_is_refused(
        "widget (staff session)",
        &client,
        get.clone(),
        slots.clone(),
        &headers,
        None,
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));

    // The anonymous widget counts against the caller's address, and a page
    // on the hospital's site may read the headers.
    let r = second_is_refused(
        "widget (anonymous patient)",
        &client,
        get,
        slots,
        &[("origin", ORIGIN.to_owned())],
        None,
    )
    .await;
    assert!(r.body.contains("RATE_LIMITED"), "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    let exposed = r
        .header("access-control-expose-headers")
        .expect("Access-Control-Expose-Headers")
        .to_ascii_lowercase();
    for name in [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
    ] {
        assert!(exposed.contains(name), "{name} is not exposed: {exposed}");
    }
}
