//! A webhook receiver for the tests: a small HTTP/1.1 server on 127.0.0.1
//! that plays a HIS endpoint.
//!
//! - It checks every request the way a HIS would, with the off-the-shelf
//!   `standardwebhooks` verifier and the endpoint's secrets, and notes every
//!   failure as a problem for the test to report ([`Receiver::assert_no_problems`]).
//! - It records each request: webhook-id, payload type, appointment id and
//!   version, when it came and what it was answered ([`Arrival`]).
//! - It answers as scripted, per request: a status (with `Retry-After`), after
//!   a pause, or never (the sender times out). It can be stopped (connections
//!   are then refused) and started again on the same port.
//! - It notes a webhook-id that arrives while a request with the same id is
//!   still being handled: a message must never be in flight twice at once.
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long every request is held before it is answered, so that a second
/// request with the same webhook-id arriving meanwhile is caught.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(15);
/// The longest an unanswered request is held open.
const HANG_LIMIT: Duration = Duration::from_secs(60);
const MAX_HEAD: usize = 64 * 1024;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Answer {
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
        /// How long to hold the request before answering (at least the
        /// receiver's own hold).
        hold: Duration,
    },
    /// Never answer: hold the request until the sender gives up.
    Hang,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn status(status: u16) -> Reply {
        Reply::Answer {
            status,
            retry_after: None,
            hold: Duration::ZERO,
        }
    }

    /// 429 Too Many Requests with `Retry-After: secs`.
    pub fn too_many(secs: u64) -> Reply {
        Reply::Answer {
            status: 429,
            retry_after: Some(secs),
            hold: Duration::ZERO,
        }
    }

    pub fn hang() -> Reply {
        Reply::Hang
    }

    /// The same answer, given after `hold`.
    pub fn after(self, hold: Duration) -> Reply {
        match self {
            Reply::Answer {
                status,
                retry_after,
                ..
            } => Reply::Answer {
                status,
                retry_after,
                hold,
            },
            Reply::Hang => Reply::Hang,
        }
    }
}

/// What the receiver knows of a request when it decides how to answer it.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub webhook_id: &'a str,
    pub event_type: &'a str,
    pub appointment_id: Option<&'a str>,
    pub appointment_version: Option<i64>,
    /// How many requests with this webhook-id came before this one.
    pub earlier: usize,
}

type Policy = Arc<dyn Fn(&Incoming<'_>) -> Reply + Send + Sync>;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub webhook_id: String,
    /// The payload's `type`.
    pub event_type: String,
    pub event_id: Option<String>,
    /// `data.event.position`.
    pub position: Option<String>,
    pub appointment_id: Option<String>,
    pub appointment_version: Option<i64>,
    pub arrived: Instant,
    /// The status it is (or was) answered with; `None` when it is left unanswered.
    pub status: Option<u16>,
    /// When the answer was written.
    pub answered: Option<Instant>,
    /// When handling ended: answered, or the sender hung up.
    pub ended: Option<Instant>,
    /// How many signatures `webhook-signature` carried.
    pub signatures: usize,
    /// Whether the `standardwebhooks` verifier accepts the request with each
    /// of the receiver's secrets, in the order they were set.
    pub verified: Vec<bool>,
    pub body: Value,
}

impl Arrival {
    /// Answered 2xx.
    pub fn succeeded(&self) -> bool {
        self.answered.is_some() && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

struct State {
    arrivals: Vec<Arrival>,
    /// Requests being handled, per webhook-id.
    in_flight: HashMap<String, usize>,
    problems: Vec<String>,
    script: VecDeque<Reply>,
    policy: Policy,
    secrets: Vec<String>,
    /// The accept loop and the open connections, ended by `stop`.
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    hold: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A scripted HIS endpoint on `127.0.0.1`. Dropping it stops it.
pub struct Receiver {
    shared: Arc<Shared>,
    port: u16,
}

impl Receiver {
    /// A receiver answering 200 to everything after [`DEFAULT_HOLD`].
    pub async fn start() -> Receiver {
        Receiver::start_holding(DEFAULT_HOLD).await
    }

    /// A receiver that holds every request at least `hold` before answering.
    pub async fn start_holding(hold: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the receiver");
        let port = listener.local_addr().expect("an address").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                arrivals: Vec::new(),
                in_flight: HashMap::new(),
                problems: Vec::new(),
                script: VecDeque::new(),
                policy: Arc::new(|_: &Incoming<'_>| Reply::ok()),
                secrets: Vec::new(),
                tasks: Vec::new(),
            }),
            hold,
        });
        let receiver = Receiver { shared, port };
        receiver.accept_on(listener);
        receiver
    }

    fn accept_on(&self, listener: TcpListener) {
        let shared = self.shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = tokio::spawn(serve(stream, shared.clone()));
                let mut state = shared.lock();
                state.tasks.retain(|t| !t.is_finished());
                state.tasks.push(connection);
            }
        });
        self.shared.lock().tasks.push(accept);
    }

    /// The URL to register as the endpoint's.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/his/webhooks", self.port)
    }

    /// The secrets requests are verified with (`whsec_…`); each arrival
    /// records which of them verify it. A request none verifies is a problem.
    pub fn set_secrets(&self, secrets: &[&str]) {
        self.shared.lock().secrets = secrets.iter().map(|s| s.to_string()).collect();
    }

    /// How requests are answered from now on (after the scripted replies).
    pub fn set_policy(&self, policy: impl Fn(&Incoming<'_>) -> Reply + Send + Sync + 'static) {
        self.shared.lock().policy = Arc::new(policy);
    }

    /// Answers the next requests with these, one each, before the policy.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().script.extend(replies);
    }

    /// Closes the port and every open connection; once this returns, new
    /// connections are refused.
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut self.shared.lock().tasks);
        for t in &tasks {
            t.abort();
        }
        // A task is dropped, and its socket closed, only when it is polled
        // again after the abort: wait for that.
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Listens again on the same port after [`Receiver::stop`].
    pub async fn restart(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver: port {} not free yet: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot listen on port {} again: {e}", self.port),
            }
        };
        self.accept_on(listener);
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.lock().arrivals.clone()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight.values().sum()
    }

    /// Everything that was wrong with what arrived: bad signatures, missing
    /// headers, a webhook-id in flight twice at once.
    pub fn problems(&self) -> Vec<String> {
        self.shared.lock().problems.clone()
    }

    pub fn assert_no_problems(&self) {
        let problems = self.problems();
        assert!(
            problems.is_empty(),
            "the receiver saw {} problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }

    /// Polls the arrivals until `done` holds; panics after `within`,
    /// describing what was waited for and what arrived.
    pub async fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Arrival]) -> bool,
    ) -> Vec<Arrival> {
        let deadline = Instant::now() + within;
        loop {
            let arrivals = self.arrivals();
            if done(&arrivals) {
                return arrivals;
            }
            if Instant::now() > deadline {
                panic!(
                    "the receiver did not see {what} within {within:?}; it saw {} request(s):\n{}\nproblems: {:?}",
                    arrivals.len(),
                    summary(&arrivals),
                    self.problems()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for t in std::mem::take(&mut self.shared.lock().tasks) {
            t.abort();
        }
    }
}

/// One line per arrival, for failure messages.
pub fn summary(arrivals: &[Arrival]) -> String {
    let start = arrivals.first().map(|a| a.arrived);
    arrivals
        .iter()
        .map(|a| {
            format!(
                "  +{:>6}ms {} {} {}@v{} -> {:?}",
                start.map_or(0, |s| a.arrived.duration_since(s).as_millis()),
                a.webhook_id,
                a.event_type,
                a.appointment_id.as_deref().unwrap_or("-"),
                a.appointment_version.unwrap_or(0),
                a.status
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes a webhook-id from the in-flight set when its request ends,
/// however it ends (answered, the sender hung up, the receiver stopped).
struct InFlight {
    shared: Arc<Shared>,
    id: String,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(n) = state.in_flight.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                state.in_flight.remove(&self.id);
            }
        }
        if let Some(a) = state.arrivals.get_mut(self.index) {
            a.ended.get_or_insert_with(Instant::now);
        }
    }
}

struct Request {
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request; `None` when the peer closed the connection.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buffer.len() > MAX_HEAD {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let method = lines
        .next()?
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buffer.drain(..head_end);
    while buffer.len() < length {
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = buffer.drain(..length).collect();
    Some(Request {
        method,
        headers,
        body,
    })
}

/// Waits `d`, or until the peer closes the connection; `true` if it closed.
async fn closed_within(stream: &mut TcpStream, buffer: &mut Vec<u8>, d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        let mut chunk = [0u8; 1024];
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return false,
            read = stream.read(&mut chunk) => match read {
                Ok(0) | Err(_) => return true,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            },
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        408 => "Request Timeout",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buffer).await {
        let (reply, guard) = admit(&shared, &request);
        let Some(guard) = guard else {
            // Not a webhook: refuse it and move on.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            continue;
        };
        match reply {
            Reply::Hang => {
                closed_within(&mut stream, &mut buffer, HANG_LIMIT).await;
                return;
            }
            Reply::Answer {
                status,
                retry_after,
                hold,
            } => {
                if closed_within(&mut stream, &mut buffer, hold.max(shared.hold)).await {
                    return;
                }
                let body = format!("answered {status}");
                let mut response = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                if let Some(secs) = retry_after {
                    response.push_str(&format!("retry-after: {secs}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(&body);
                {
                    let mut state = shared.lock();
                    if let Some(a) = state.arrivals.get_mut(guard.index) {
                        a.answered = Some(Instant::now());
                    }
                }
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                drop(guard);
            }
        }
    }
}

/// Checks and records a request and decides its answer. No guard when it is
/// not a webhook at all.
fn admit(shared: &Arc<Shared>, request: &Request) -> (Reply, Option<InFlight>) {
    let mut state = shared.lock();
    let Some(webhook_id) = request.header("webhook-id").map(str::to_owned) else {
        state
            .problems
            .push(format!("a {} request without webhook-id", request.method));
        return (Reply::status(400), None);
    };
    let mut problems = Vec::new();
    if request.method != "POST" {
        problems.push(format!("{webhook_id}: method {}", request.method));
    }
    let id_ok = webhook_id.len() == 36
        && webhook_id.starts_with("msg_")
        && webhook_id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if !id_ok {
        problems.push(format!("{webhook_id}: not msg_ and 32 hex digits"));
    }
    if request.header("content-type") != Some("application/json") {
        problems.push(format!(
            "{webhook_id}: content-type {:?}",
            request.header("content-type")
        ));
    }
    if request.header("user-agent") != Some("Buktor-Webhooks/1") {
        problems.push(format!(
            "{webhook_id}: user-agent {:?}",
            request.header("user-agent")
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    let verified: Vec<bool> = state
        .secrets
        .iter()
        .map(|secret| {
            standardwebhooks::Webhook::new(secret)
                .expect("a whsec_ secret")
                .verify(&request.body, &headers)
                .is_ok()
        })
        .collect();
    if !verified.iter().any(|v| *v) {
        problems.push(format!(
            "{webhook_id}: no secret of the receiver ({}) verifies its signature",
            state.secrets.len()
        ));
    }
    let signatures = request
        .header("webhook-signature")
        .map_or(0, |s| s.split(' ').filter(|p| p.starts_with("v1,")).count());
    let body: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{webhook_id}: the body is not JSON: {e}"));
            Value::Null
        }
    };
    let event_type = body["type"].as_str().unwrap_or_default().to_owned();
    let appointment = &body["data"]["appointment"];
    let appointment_id = appointment["id"].as_str().map(str::to_owned);
    let appointment_version = appointment["version"].as_i64();
    let earlier = state
        .arrivals
        .iter()
        .filter(|a| a.webhook_id == webhook_id)
        .count();
    let in_flight = state.in_flight.entry(webhook_id.clone()).or_default();
    *in_flight += 1;
    if *in_flight > 1 {
        problems.push(format!(
            "{webhook_id} ({event_type} {appointment_id:?} v{appointment_version:?}) arrived \
             while a request with the same webhook-id was still in flight"
        ));
    }
    let reply = match state.script.pop_front() {
        Some(r) => r,
        None => (state.policy)(&Incoming {
            webhook_id: &webhook_id,
            event_type: &event_type,
            appointment_id: appointment_id.as_deref(),
            appointment_version,
            earlier,
        }),
    };
    let status = match &reply {
        Reply::Answer { status, .. } => Some(*status),
        Reply::Hang => None,
    };
    state.problems.extend(problems);
    let index = state.arrivals.len();
    state.arrivals.push(Arrival {
        webhook_id: webhook_id.clone(),
        event_type,
        event_id: body["data"]["event"]["id"].as_str().map(str::to_owned),
        position: body["data"]["event"]["position"]
            .as_str()
            .map(str::to_owned),
        appointment_id,
        appointment_version,
        arrived: Instant::now(),
        status,
        answered: None,
        ended: None,
        signatures,
        verified,
        body,
    });
    drop(state);
    (
        reply,
        Some(InFlight {
            shared: shared.clone(),
            id: webhook_id,
            index,
        }),
    )
}
