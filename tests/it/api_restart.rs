//! What the server acknowledged survives it: a booking is there after a
//! SIGTERM or a `kill -9` and a new start on the same data, and a SIGTERM
//! in the middle of a burst of bookings lets in-flight requests finish
//! without leaving anything half-written.
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use crate::server::*;

/// Everything a client sees of a booking after the restart.
async fn assert_booked(server: &TestServer, h: &Hospital, id: &str, start: DateTime<Utc>) {
    let a = server
        .gql_ok(
            &h.admin,
            "query($id: ID!) { appointment(id: $id) { start status history { type } } }",
            json!({"id": id}),
        )
        .await;
    assert_eq!(
        a["appointment"],
        json!({"start": iso(start), "status": "BOOKED", "history": [{"type": "AppointmentBooked"}]}),
        "appointment {id} after the restart"
    );
    let again = server
        .gql_err(
            &h.admin,
            BOOK,
            json!({"input": book_input(&h.practitioner, &h.checkup, start, "HIS-2")}),
        )
        .await;
    assert_eq!(
        again, "SLOT_TAKEN",
        "the slot of {id} is free again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_still_there_after_sigterm_and_a_restart_on_the_embedded_store() {
    let deployment = Deployment::embedded();
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Persistent Hospital").await;
    let start = local(days_ahead(5), 9, 0);
    let id = book(&server, &h.admin, &h.practitioner, &h.checkup, start).await;

    let status = server.stop_sigterm().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the server with exit code 0"
    );
    server.restart().await;
    assert_booked(&server, &h, &id, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_is_still_there_after_kill_9_and_a_restart_on_the_embedded_store() {
    let deployment = Deployment::embedded();
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Resilient Hospital").await;
    let start = local(days_ahead(5), 9, 0);
    let id = book(&server, &h.admin, &h.practitioner, &h.checkup, start).await;

    // Killed right after the response: only what was durably committed is left.
    let status = server.kill9().await;
    assert_eq!(status.signal(), Some(9));
    server.restart().await;
    assert_booked(&server, &h, &id, start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_are_still_there_after_sigterm_and_after_kill_9_on_postgresql() {
    let deployment = Deployment::postgres().await;
    let mut server = deployment.start().await;
    let h = set_up_hospital(&deployment, &server, "Durable Hospital").await;
    let first_start = local(days_ahead(5), 9, 0);
    let first = book(&server, &h.admin, &h.practitioner, &h.checkup, first_start).await;

    let status = server.stop_sigterm().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the server with exit code 0"
    );
    server.restart().await;
    assert_booked(&server, &h, &first, first_start).await;

    let second_start = local(days_ahead(5), 9, 30);
    let second = book(&server, &h.admin, &h.practitioner, &h.checkup, second_start).await;
    assert_eq!(server.kill9().await.signal(), Some(9));
    server.restart().await;
    assert_booked(&server, &h, &first, first_start).await;
    assert_booked(&server, &h, &second, second_start).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_of_bookings_on_the_embedded_store_loses_no_acknowledged_booking() {
    sigterm_during_a_burst(Deployment::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_burst_of_bookings_on_postgresql_loses_no_acknowledged_booking() {
    sigterm_during_a_burst(Deployment::postgres().await).await;
}

/// How one request of the burst ended.
enum Outcome {
    Booked(String),
    /// A GraphQL error: the server answered but did not book.
    Refused(String),
    /// No answer (connection refused or closed): the server may not have seen it.
    NoAnswer(String),
}

const BURST: usize = 150;

async fn sigterm_during_a_burst(deployment: Deployment) {
    let mut server = deployment.start().await;
    let h = Arc::new(set_up_hospital(&deployment, &server, "Shutdown Hospital").await);
    // All at once, so that many are in flight when SIGTERM arrives; a
    // connection per request, so that none is sent on a connection the
    // stopping server closes.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // One request is sent in two halves around the SIGTERM.
    let slow_body = json!({"query": BOOK, "variables": {"input": book_input(&h.practitioner, &h.checkup, local(days_ahead(9), 9, 0), "HIS-SLOW")}}).to_string();
    let (sent_half, half_sent) = oneshot::channel();
    let (send_rest, rest) = oneshot::channel();
    let slow = tokio::spawn(half_sent_booking(
        server.addr,
        h.admin.clone(),
        slow_body,
        sent_half,
        rest,
    ));
    half_sent.await.expect("the first half is sent");
    // Let the server read the head and start on the request.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let first_booked = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for i in 0..BURST {
        // A day each: no request waits for another, so all reach the store together.
        let start = local(days_ahead(10 + i as u64), 9, 0);
        let (client, url, h, first_booked) = (
            client.clone(),
            server.url.clone(),
            h.clone(),
            first_booked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = json!({"query": BOOK, "variables": {"input": book_input(&h.practitioner, &h.checkup, start, &format!("HIS-{i}"))}});
            let sent = client
                .post(format!("{url}/graphql"))
                .bearer_auth(&h.admin)
                .json(&body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return Outcome::NoAnswer(e.to_string()),
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => return Outcome::NoAnswer(e.to_string()),
            };
            let v: serde_json::Value = match serde_json::from_str(&text) {
                Ok(v) if status == 200 => v,
                _ => return Outcome::Refused(format!("{status}: {text}")),
            };
            match v["data"]["bookAppointment"]["id"].as_str() {
                Some(id) => {
                    first_booked.notify_one();
                    Outcome::Booked(id.to_owned())
                }
                None => Outcome::Refused(text),
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), first_booked.notified())
        .await
        .expect("no booking of the burst succeeded");
    server.sigterm();
    // The half-sent request is certainly in flight: its server must wait for the rest.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_rest.send(()).expect("the slow request is waiting");
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("a request task"));
    }
    let slow = slow.await.expect("the slow request task");
    let status = server.wait_for_exit().await;
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the server with exit code 0"
    );
    let slow_id = match slow {
        Ok(id) => id,
        Err(e) => panic!("a request in flight at SIGTERM was not finished: {e}"),
    };

    let mut booked: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Booked(id) => Some(id.clone()),
            _ => None,
        })
        .chain([slow_id])
        .collect();
    booked.sort();
    let refused: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let unanswered: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::NoAnswer(error) => Some(error.as_str()),
            _ => None,
        })
        .collect();
    eprintln!(
        "burst of {BURST} and one half-sent: {} booked, {} refused, {} without an answer (first: {:?})",
        booked.len(),
        refused.len(),
        unanswered.len(),
        unanswered.first()
    );
    assert!(
        refused.is_empty(),
        "requests in flight failed during shutdown: {refused:?}"
    );

    server.restart().await;
    assert_eq!(
        deployment.booked_appointment_ids(&h.tenant).await,
        booked,
        "the store holds exactly the bookings that were acknowledged"
    );
    assert_eq!(
        deployment.count_events(&h.tenant, "SlotHeld").await,
        booked.len() as i64,
        "every booking holds its slot, and no hold is without its booking"
    );
    for id in &booked {
        let a = server
            .gql_ok(
                &h.admin,
                "query($id: ID!) { appointment(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        assert_eq!(a["appointment"]["status"], "BOOKED", "{id}");
    }
}

/// Sends a booking over a raw connection: the head and half the body, then
/// (after `sent_half` is signalled and `rest` arrives) the other half.
/// Returns the appointment id, or what went wrong.
async fn half_sent_booking(
    addr: std::net::SocketAddr,
    key: String,
    body: String,
    sent_half: oneshot::Sender<()>,
    rest: oneshot::Receiver<()>,
) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (first, second) = body.split_at(body.len() / 2);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("head: {e}"))?;
    stream
        .write_all(first.as_bytes())
        .await
        .map_err(|e| format!("first half: {e}"))?;
    let _ = sent_half.send(());
    rest.await.map_err(|e| format!("never released: {e}"))?;
    stream
        .write_all(second.as_bytes())
        .await
        .map_err(|e| format!("second half: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("response: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or(format!("no response: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answered {response}"));
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    v["data"]["bookAppointment"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("not booked: {body}"))
}
