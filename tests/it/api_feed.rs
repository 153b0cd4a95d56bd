//! The integrator feed over plain HTTP: `GET /events` pages and
//! `GET /events/stream` Server-Sent Events, on both stores.
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::*;

async fn get_json(server: &TestServer, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Books `n` appointments on `day` from 09:00 on; returns (id, position) of each.
async fn book_many(
    server: &TestServer,
    h: &Hospital,
    day: chrono::NaiveDate,
    from: u32,
    n: u32,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in from..from + n {
        let data = server
            .gql_ok(
                &h.admin,
                BOOK,
                json!({"input": book_input(&h.practitioner, &h.checkup, local(day, 9 + i / 4, (i % 4) * 15), "PAT-F")}),
            )
            .await;
        let b = &data["bookAppointment"];
        out.push((
            b["id"].as_str().unwrap().to_owned(),
            b["position"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// Reads Server-Sent Events until `n` events arrived; returns their (id, type, appointment id).
async fn read_sse(
    response: &mut reqwest::Response,
    buffer: &mut String,
    n: usize,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            if frame.starts_with(':') {
                continue; // a keep-alive comment
            }
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {frame:?}"))
                    .trim()
                    .to_owned()
            };
            let data: Value = serde_json::from_str(&field("data:")).unwrap();
            assert_eq!(data["position"], json!(field("id:")), "{frame}");
            out.push((
                field("id:"),
                field("event:"),
                data["data"]["appointment_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            ));
            if out.len() == n {
                return out;
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
            .await
            .expect("an event within 10 s")
            .expect("the stream stays open")
            .expect("the stream does not end");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    out
}

async fn pages_and_streams(deployment: Deployment) {
    let server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Feed Hospital").await;
    let key = h.admin.as_str();
    let day = days_ahead(5);
    let first = book_many(&server, &h, day, 0, 6).await;
    server.settle(key).await;

    // Pages of two appointment bookings, chained by `next`, cover them once, in order.
    let mut after = "0.0".to_owned();
    let mut seen = Vec::new();
    loop {
        let (status, page) = get_json(
            &server,
            Some(key),
            &format!("/events?after={after}&limit=2&types=AppointmentBooked"),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["type"], "AppointmentBooked");
            assert_eq!(e["actor"]["role"], "admin");
            seen.push(e["data"]["appointment_id"].as_str().unwrap().to_owned());
        }
        after = page["next"].as_str().unwrap().to_owned();
        if page["has_more"] != json!(true) {
            break;
        }
    }
    let ids: Vec<String> = first.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, ids);
    // Unfiltered, the whole log: the schedule and services first.
    let (_, all) = get_json(&server, Some(key), "/events?limit=1000").await;
    let types: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types[0], "PractitionerRegistered");
    assert_eq!(
        types.iter().filter(|t| **t == "AppointmentBooked").count(),
        6
    );

    // Bad requests: typed problems; no key: 401.
    for path in [
        "/events?after=yesterday",
        "/events?limit=0",
        "/events?limit=5000",
    ] {
        let (status, body) = get_json(&server, Some(key), path).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_INPUT")),
            "{path}: {body}"
        );
    }
    let (status, body) = get_json(&server, None, "/events").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    // Another hospital's feed holds none of these.
    let other = set_up_hospital(&deployment, &server, "Other Feed Hospital").await;
    let (_, theirs) = get_json(
        &server,
        Some(&other.admin),
        "/events?limit=1000&types=AppointmentBooked",
    )
    .await;
    assert_eq!(theirs["events"], json!([]));

    // The stream: from the third booking on, the stored ones, then live ones.
    let client = reqwest::Client::new();
    let mut response = client
        .get(format!(
            "{}/events/stream?after={}&types=AppointmentBooked",
            server.url, first[2].1
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let stored = read_sse(&mut response, &mut buffer, 3).await;
    assert_eq!(
        stored.iter().map(|(_, _, a)| a.clone()).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    let live = book_many(&server, &h, day, 6, 3).await;
    let streamed = read_sse(&mut response, &mut buffer, 3).await;
    assert_eq!(
        streamed
            .iter()
            .map(|(_, _, a)| a.clone())
            .collect::<Vec<_>>(),
        live.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()
    );
    drop(response);

    // Reconnecting with Last-Event-ID resumes right after it: nothing
    // missed, nothing repeated, even for what was booked while away.
    let last_id = streamed[0].0.clone();
    let away = book_many(&server, &h, day, 9, 2).await;
    let mut response = client
        .get(format!(
            "{}/events/stream?types=AppointmentBooked",
            server.url
        ))
        .bearer_auth(key)
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let resumed = read_sse(&mut response, &mut String::new(), 4).await;
    let mut expected: Vec<String> = live[1..].iter().map(|(id, _)| id.clone()).collect();
    expected.extend(away.iter().map(|(id, _)| id.clone()));
    assert_eq!(
        resumed
            .iter()
            .map(|(_, _, a)| a.clone())
            .collect::<Vec<_>>(),
        expected
    );
    let positions: Vec<&String> = resumed.iter().map(|(id, _, _)| id).collect();
    let mut sorted = positions.clone();
    sorted.sort_by_key(|p| {
        let (tx, seq) = p.split_once('.').unwrap();
        (tx.parse::<i64>().unwrap(), seq.parse::<i64>().unwrap())
    });
    assert_eq!(positions, sorted, "in position order");

    // Another hospital's stream sees none of this hospital's bookings.
    let mut theirs = client
        .get(format!(
            "{}/events/stream?after=0.0&types=AppointmentBooked",
            server.url
        ))
        .bearer_auth(&other.admin)
        .send()
        .await
        .unwrap();
    book_many(&server, &other, day, 0, 1).await;
    let only = read_sse(&mut theirs, &mut String::new(), 1).await;
    assert!(!ids.contains(&only[0].2) && !expected.contains(&only[0].2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_pages_and_streams_on_postgresql() {
    pages_and_streams(Deployment::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_feed_pages_and_streams_on_the_embedded_store() {
    pages_and_streams(Deployment::embedded()).await;
}
