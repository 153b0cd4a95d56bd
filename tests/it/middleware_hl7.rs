//! The middleware's HL7 v2 output: SIU messages built from the webhook
//! fixtures in `tests/fixtures/webhooks/` are read back by an off-the-shelf
//! HL7 v2 parser (`hl7-2`, strict, with the SIU_S12 grammar of HL7 2.5), and
//! sent over MLLP to a test peer on 127.0.0.1 that ACKs, NAKs or stays
//! silent as told. No database is involved.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buktor::middleware::hl7::{self, Delimiters};
use buktor::middleware::mllp::{self, AckCode, Disposition, Hl7Config, Hl7Error};
use buktor::middleware::StoredMessage;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// --- fixtures ----------------------------------------------------------------

fn fixture(event_type: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/webhooks/{event_type}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A stored message as the middleware's receiver keeps it.
fn stored(payload: Value) -> StoredMessage {
    let event_type = payload["type"].as_str().expect("a type").to_string();
    // Buktor's webhook ids are `msg_` and 32 hex digits.
    let event_id = payload["data"]["event"]["id"]
        .as_str()
        .expect("an event id");
    let webhook_id = format!("msg_{}", event_id.replace('-', ""));
    StoredMessage {
        webhook_id,
        appointment_id: payload["data"]["appointment"]["id"]
            .as_str()
            .map(String::from),
        appointment_version: payload["data"]["appointment"]["version"].as_i64(),
        event_type,
        payload,
        received_at: "2026-11-25T09:14:04Z".parse().unwrap(),
    }
}

const APPOINTMENT_TYPES: [(&str, &str, &str); 6] = [
    ("appointment.booked", "S12", "Booked"),
    ("appointment.rescheduled", "S13", "Booked"),
    ("appointment.checked_in", "S14", "Started"),
    ("appointment.completed", "S14", "Complete"),
    ("appointment.cancelled", "S15", "Cancelled"),
    ("appointment.no_show", "S26", "Noshow"),
];

fn config(port: u16) -> Hl7Config {
    Hl7Config {
        host: "127.0.0.1".into(),
        port,
        connect_timeout: Duration::from_millis(1000),
        ack_timeout: Duration::from_millis(1000),
        sending_application: "BUKTOR".into(),
        sending_facility: "DEMO-HOSPITAL".into(),
        receiving_application: "HIS".into(),
        receiving_facility: "ADT-GW".into(),
        processing_id: "T".into(),
    }
}

// --- the off-the-shelf parser --------------------------------------------------

/// HL7 2.5 chapter 10 as `hl7-2` schema JSON: the scheduling segments and the
/// SIU_S12 grammar (which S13 to S26 share), over the crate's bundled 2.5
/// tables for MSH, PID and the data types.
const SIU_DICTIONARY: &str = r#"{
  "inherits": "2.5",
  "types": {
    "RPT": ["CWE", "ID", "NM", "NM", "NM", "NM", "NM", "ST", "ID", "ID", "NM", "ID"]
  },
  "segments": {
    "SCH": ["EI", "EI", "NM", "EI", "CE", "CE", "CE", "CE", "NM", "CE", "TQ", "XCN", "XTN",
            "XAD", "PL", "XCN", "XTN", "XAD", "PL", "XCN", "XTN", "PL", "EI", "EI", "CE", "EI", "EI"],
    "TQ1": ["SI", "CQ", "RPT", "TM", "CQ", "CQ", "TS", "TS", "CWE", "TX", "TX", "ID", "CQ", "NM"],
    "RGS": ["SI", "ID", "CE"],
    "AIS": ["SI", "ID", "CE", "TS", "NM", "CE", "NM", "CE", "IS", "CE", "CE", "CE"],
    "AIP": ["SI", "ID", "XCN", "CE", "CE", "TS", "NM", "CE", "NM", "CE", "IS", "CE"]
  },
  "structures": {
    "SIU_S12": [
      {"segment": "MSH", "required": true, "repeats": false},
      {"segment": "SFT", "required": false, "repeats": true},
      {"segment": "SCH", "required": true, "repeats": false},
      {"segment": "TQ1", "required": false, "repeats": true},
      {"segment": "NTE", "required": false, "repeats": true},
      {"group": "PATIENT", "required": false, "repeats": true, "items": [
        {"segment": "PID", "required": true, "repeats": false},
        {"segment": "PD1", "required": false, "repeats": false},
        {"segment": "PV1", "required": false, "repeats": false},
        {"segment": "PV2", "required": false, "repeats": false},
        {"segment": "OBX", "required": false, "repeats": true},
        {"segment": "DG1", "required": false, "repeats": true}
      ]},
      {"group": "RESOURCES", "required": true, "repeats": true, "items": [
        {"segment": "RGS", "required": true, "repeats": false},
        {"group": "SERVICE", "required": false, "repeats": true, "items": [
          {"segment": "AIS", "required": true, "repeats": false},
          {"segment": "NTE", "required": false, "repeats": true}
        ]},
        {"group": "GENERAL_RESOURCE", "required": false, "repeats": true, "items": [
          {"segment": "AIG", "required": true, "repeats": false},
          {"segment": "NTE", "required": false, "repeats": true}
        ]},
        {"group": "LOCATION_RESOURCE", "required": false, "repeats": true, "items": [
          {"segment": "AIL", "required": true, "repeats": false},
          {"segment": "NTE", "required": false, "repeats": true}
        ]},
        {"group": "PERSONNEL_RESOURCE", "required": false, "repeats": true, "items": [
          {"segment": "AIP", "required": true, "repeats": false},
          {"segment": "NTE", "required": false, "repeats": true}
        ]}
      ]}
    ]
  }
}"#;

/// The fields HL7 2.5 marks required in the segments Buktor sends (the
/// parser checks structure and formats, not optionality).
const REQUIRED: [&str; 13] = [
    "MSH-7", "MSH-9", "MSH-10", "MSH-11", "MSH-12", "SCH-6", "SCH-16", "SCH-20", "PID-3", "PID-5",
    "RGS-1", "AIS-3", "AIP-1",
];

/// Parses strictly with `hl7-2`: a structure or format error fails, and so
/// does any warning (an undefined segment, field or component).
fn parse_strictly(text: &str) -> Result<hl7_2::Message, String> {
    let dictionary =
        hl7_2::Dictionary::from_json(SIU_DICTIONARY, "siu-2.5").expect("the dictionary loads");
    let options = hl7_2::Options::new()
        .with_dictionary(Arc::new(dictionary))
        .strict();
    let message = hl7_2::parse_with_options(text, &options).map_err(|e| e.to_string())?;
    let diagnostics = message.validate();
    if !diagnostics.is_empty() {
        return Err(diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    if message.layout().is_none() {
        return Err("the segments do not fit SIU_S12".into());
    }
    Ok(message)
}

fn get(message: &hl7_2::Message, path: &str) -> String {
    message
        .get(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .unwrap_or_default()
}

// --- the MLLP test peer --------------------------------------------------------

#[derive(Debug, Clone)]
enum Answer {
    /// An ACK with this MSA-1, echoing the message's MSH-10.
    Ack(&'static str, &'static str),
    /// An AA for some other control id.
    AckFor(&'static str),
    /// Read the message, then never answer (the connection stays open).
    Silence,
    /// Enhanced mode: an ACK with each of these MSA-1 codes in turn, all
    /// echoing the message's control id, `apart` ms between them (0: in one
    /// write); then the connection stays open. The last one asks for a
    /// commit accept (MSH-15 `AL`).
    Enhanced(&'static [&'static str], u64),
    /// These bytes, then the connection is closed.
    Raw(&'static [u8]),
    /// Noise without a start block, a chunk every 20 ms, until the client goes.
    Noise,
}

/// A tokio TCP server speaking MLLP on 127.0.0.1:0. It answers every message
/// as told and records what it received, frame bytes included.
struct Peer {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Peer {
    async fn start(answer: Answer) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new(answer));
        let received = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let answer = answer.clone();
            let received = received.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, answer.clone(), received.clone()));
                }
            }
        });
        Peer {
            port,
            answer,
            received,
            task,
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// The frames received so far, whole (start block to end block).
    fn frames(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// The messages received so far, without framing.
    fn messages(&self) -> Vec<String> {
        self.frames()
            .iter()
            .map(|f| String::from_utf8(f[1..f.len() - 2].to_vec()).unwrap())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    answer: Arc<Mutex<Answer>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let Some(end) = buffer.windows(2).position(|w| w == [0x1c, 0x0d]) else {
            continue;
        };
        let frame: Vec<u8> = buffer.drain(..end + 2).collect();
        received.lock().unwrap().push(frame.clone());
        let text = String::from_utf8_lossy(&frame[1..frame.len() - 2]).to_string();
        let msh: Vec<String> = text
            .split('\r')
            .next()
            .unwrap_or("")
            .split('|')
            .map(String::from)
            .collect();
        if msh.get(8).is_some_and(|t| t.starts_with("ACK")) {
            // The client's commit accept of our application ACK: kept, not answered.
            continue;
        }
        let control_id = msh.get(9).cloned().unwrap_or_default();
        let current = answer.lock().unwrap().clone();
        let ack = match current {
            Answer::Ack(code, text) => ack(code, &control_id, text),
            Answer::AckFor(other) => ack("AA", other, ""),
            Answer::Silence => {
                // Hold the connection open without a word until the client gives up.
                let _ = stream.read(&mut chunk).await;
                return;
            }
            Answer::Enhanced(codes, apart) => {
                let mut all = Vec::new();
                for (i, code) in codes.iter().enumerate() {
                    let mut a = ack(code, &control_id, "");
                    if i + 1 == codes.len() {
                        // MSH-15 AL: asks the client for a commit accept.
                        a = a.replacen("|T|2.5\r", "|T|2.5|||AL|NE\r", 1);
                    }
                    let framed = framed(&a);
                    if apart == 0 {
                        all.extend(framed);
                        continue;
                    }
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(apart)).await;
                    }
                    if stream.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                if !all.is_empty() && stream.write_all(&all).await.is_err() {
                    return;
                }
                continue;
            }
            Answer::Raw(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Answer::Noise => loop {
                if stream.write_all(&[b'x'; 512]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            },
        };
        if stream.write_all(&framed(&ack)).await.is_err() {
            return;
        }
    }
}

fn framed(text: &str) -> Vec<u8> {
    let mut framed = vec![0x0b];
    framed.extend_from_slice(text.as_bytes());
    framed.extend_from_slice(&[0x1c, 0x0d]);
    framed
}

fn ack(code: &str, control_id: &str, text: &str) -> String {
    let mut ack = format!(
        "MSH|^~\\&|HIS|ADT-GW|BUKTOR|DEMO-HOSPITAL|20261125101404+0100||ACK^S12^ACK|ACK-{control_id}|T|2.5\r\
         MSA|{code}|{control_id}|{text}\r"
    );
    if code != "AA" {
        ack.push_str("ERR|||207^Application internal error^HL70357|E\r");
    }
    ack
}

// --- building ------------------------------------------------------------------

#[test]
fn every_appointment_type_becomes_an_siu_message_a_standard_parser_accepts() {
    for (event_type, trigger, status) in APPOINTMENT_TYPES {
        let message = stored(fixture(event_type));
        let siu = hl7::build(&config(2575).header(), &message).unwrap();
        let parsed = parse_strictly(&siu.text)
            .unwrap_or_else(|e| panic!("{event_type}: {e}\n{}", siu.text.replace('\r', "\n")));
        assert_eq!(get(&parsed, "MSH-9"), format!("SIU^{trigger}^SIU_S12"));
        assert_eq!(get(&parsed, "MSH-10"), hl7::control_id(&message.webhook_id));
        assert_eq!(get(&parsed, "MSH-11"), "T");
        assert_eq!(get(&parsed, "MSH-12"), "2.5");
        assert_eq!(get(&parsed, "SCH-25.1"), status, "{event_type}");
        assert_eq!(get(&parsed, "SCH-25.3"), "HL70278");
        assert_eq!(get(&parsed, "AIP-12.1"), status);
        for path in REQUIRED {
            assert!(
                !get(&parsed, path).is_empty(),
                "{event_type}: {path} is empty"
            );
        }
    }
}

#[test]
fn a_booking_carries_the_ids_names_and_local_times_with_their_offset() {
    let siu = hl7::build(
        &config(2575).header(),
        &stored(fixture("appointment.booked")),
    )
    .unwrap();
    let m = parse_strictly(&siu.text).unwrap();
    let appointment = "01937a2c-4e10-7f8a-b3c1-5d2e9f6a0b17";
    for (path, expected) in [
        ("MSH-3", "BUKTOR"),
        ("MSH-4", "DEMO-HOSPITAL"),
        ("MSH-5", "HIS"),
        ("MSH-6", "ADT-GW"),
        // The body's timestamp, 14:02:11Z, in Amsterdam (winter time).
        ("MSH-7", "20261120150211+0100"),
        ("SCH-1.1", appointment),
        ("SCH-2.1", appointment),
        ("SCH-2.2", "BUKTOR"),
        ("SCH-6.1", "BOOKED"),
        ("SCH-7.1", "CARD-CONS"),
        ("SCH-7.2", "Consultation"),
        ("SCH-7.4", "01936f0e-9b33-7d22-b105-7c8e3d0f2b03"),
        ("SCH-9", "20"),
        ("SCH-10.1", "min"),
        ("SCH-11.4", "20261126090000+0100"),
        ("SCH-11.5", "20261126092000+0100"),
        ("SCH-20.1", "his-epic"),
        ("TQ1-7", "20261126090000+0100"),
        ("TQ1-8", "20261126092000+0100"),
        ("NTE-3", "Please bring your referral letter"),
        ("PID-3.1", "P-1001"),
        ("PID-3.4", "HIS"),
        ("PID-3.5", "MR"),
        ("PID-5.1", "Ada Jansen"),
        ("PID-13[1].1", "+31612345678"),
        ("PID-13[2].4", "ada.jansen@example.org"),
        ("RGS-2", "A"),
        ("AIS-3.1", "CARD-CONS"),
        ("AIS-4", "20261126090000+0100"),
        ("AIS-7", "20"),
        ("AIP-3.1", "HIS-DOC-17"),
        ("AIP-3.2", "Dr. Visser"),
        ("AIP-3.9", "HIS"),
        ("AIP-4.2", "Cardiology"),
        ("AIP-6", "20261126090000+0100"),
        ("AIP-9", "20"),
    ] {
        assert_eq!(get(&m, path), expected, "{path}");
    }
}

#[test]
fn a_reschedule_cancellation_and_no_show_say_what_happened() {
    let header = config(2575).header();
    let moved = parse_strictly(
        &hl7::build(&header, &stored(fixture("appointment.rescheduled")))
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(get(&moved, "SCH-6.1"), "RESCHEDULED");
    assert_eq!(
        get(&moved, "SCH-6.2"),
        "Rescheduled from 20261126090000+0100"
    );
    assert_eq!(get(&moved, "TQ1-7"), "20261127133000+0100");
    assert_eq!(get(&moved, "RGS-2"), "U");

    let cancelled = parse_strictly(
        &hl7::build(&header, &stored(fixture("appointment.cancelled")))
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(get(&cancelled, "SCH-6.1"), "CANCELLED_BY_PATIENT");
    // The reason's `&` is escaped on the wire and read back by the parser.
    assert_eq!(get(&cancelled, "SCH-6.2"), "Patient is ill (fever & cough)");
    // A service without an external id is coded with Buktor's id.
    assert_eq!(
        get(&cancelled, "AIS-3.1"),
        "01936f0e-9b33-7d22-b105-7c8e3d0f2b03"
    );
    assert_eq!(get(&cancelled, "AIS-3.3"), "99BUKTOR");

    let checked_in = parse_strictly(
        &hl7::build(&header, &stored(fixture("appointment.checked_in")))
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(get(&checked_in, "SCH-6.1"), "CHECKED_IN");
    let no_show = parse_strictly(
        &hl7::build(&header, &stored(fixture("appointment.no_show")))
            .unwrap()
            .text,
    )
    .unwrap();
    assert_eq!(get(&no_show, "SCH-6.1"), "NO_SHOW");
    assert_eq!(get(&no_show, "PID-13"), "", "no phone, no email");
}

#[test]
fn every_delimiter_in_the_data_round_trips_through_the_parser() {
    let nasty = r"Jansen|de Vries^Jr~Zoë & \Ünal";
    let mut body = fixture("appointment.cancelled");
    let a = &mut body["data"]["appointment"];
    a["patient"]["name"] = json!(nasty);
    a["practitioner"]["name"] = json!(nasty);
    a["cancellation"]["reason"] = json!(nasty);
    a["note"] = json!("first line\nMSH|^~\\&|evil");
    body["data"]["event"]["actor"]["id"] = json!("desk|1");
    let siu = hl7::build(&config(2575).header(), &stored(body)).unwrap();
    assert_eq!(
        siu.text.matches('\r').count(),
        siu.text.split_terminator('\r').count(),
        "every segment ends in \\r"
    );
    let m = parse_strictly(&siu.text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.segments().count(), 8, "no segment was injected");
    assert_eq!(get(&m, "PID-5.1"), nasty);
    assert_eq!(get(&m, "AIP-3.2"), nasty);
    assert_eq!(get(&m, "SCH-6.2"), nasty);
    assert_eq!(get(&m, "SCH-16.1"), "desk|1");
    // FT keeps the line break as \.br\; the parser leaves formatting to the
    // reader, our own unescape turns it back into a newline.
    let raw_note = siu
        .text
        .split('\r')
        .find(|s| s.starts_with("NTE|"))
        .unwrap()
        .split('|')
        .nth(3)
        .unwrap()
        .to_string();
    assert_eq!(raw_note, r"first line\.br\MSH\F\\S\\R\\E\\T\\F\evil");
    assert_eq!(
        Delimiters::STANDARD.unescape(&raw_note),
        "first line\nMSH|^~\\&|evil"
    );
}

#[test]
fn the_parser_is_a_real_check_it_refuses_what_is_not_siu() {
    let siu = hl7::build(
        &config(2575).header(),
        &stored(fixture("appointment.booked")),
    )
    .unwrap();
    parse_strictly(&siu.text).unwrap();
    let segments: Vec<&str> = siu.text.split_terminator('\r').collect();
    let without = |name: &str| -> String {
        segments
            .iter()
            .filter(|s| !s.starts_with(name))
            .map(|s| format!("{s}\r"))
            .collect()
    };
    let pid_first: String = {
        let mut s = segments.clone();
        let pid = s.iter().position(|x| x.starts_with("PID")).unwrap();
        let moved = s.remove(pid);
        s.insert(1, moved);
        s.iter().map(|x| format!("{x}\r")).collect()
    };
    let with_unknown = siu.text.replacen("\rSCH|", "\rXYZ|1\rSCH|", 1);
    for (broken, why, said) in [
        (without("SCH"), "no SCH", "requires a SCH segment"),
        (
            without("RGS"),
            "AIS and AIP without RGS",
            "requires the RESOURCES group",
        ),
        (pid_first, "PID before SCH", "do not fit structure SIU_S12"),
        (
            siu.text.replace("20261126090000+0100", "26-11-2026 09:00"),
            "a start that is not a DTM",
            "is not a valid DTM value",
        ),
        (
            with_unknown,
            "an unknown segment",
            "do not fit structure SIU_S12",
        ),
    ] {
        match parse_strictly(&broken) {
            Ok(_) => panic!("accepted: {why}"),
            Err(e) => assert!(e.contains(said), "{why}: {e}"),
        }
    }
}

#[test]
fn retries_build_the_same_message_and_types_without_siu_meaning_are_not_applicable() {
    let header = config(2575).header();
    let message = stored(fixture("appointment.completed"));
    assert_eq!(
        hl7::build(&header, &message).unwrap(),
        hl7::build(&header, &message).unwrap()
    );
    let schedule = stored(fixture("schedule.changed"));
    assert_eq!(
        hl7::build(&header, &schedule),
        Err(hl7::BuildError::NotApplicable {
            event_type: "schedule.changed".into()
        })
    );
}

// --- sending -------------------------------------------------------------------

#[tokio::test]
async fn an_aa_is_ok_and_the_peer_received_one_framed_siu_message() {
    let peer = Peer::start(Answer::Ack("AA", "Message accepted")).await;
    let message = stored(fixture("appointment.booked"));
    let ack = mllp::forward(&config(peer.port), &message).await.unwrap();
    assert_eq!(ack.code, AckCode::AA);
    assert_eq!(ack.control_id, hl7::control_id(&message.webhook_id));
    assert_eq!(ack.text.as_deref(), Some("Message accepted"));

    let frames = peer.frames();
    assert_eq!(frames.len(), 1);
    let frame = &frames[0];
    assert_eq!(frame[0], 0x0b);
    assert_eq!(&frame[frame.len() - 2..], &[0x1c, 0x0d]);
    let received = &peer.messages()[0];
    parse_strictly(received).unwrap();
    assert!(received.starts_with("MSH|^~\\&|BUKTOR|DEMO-HOSPITAL|HIS|ADT-GW|"));
}

#[tokio::test]
async fn a_retry_of_the_same_message_carries_the_same_control_id() {
    let peer = Peer::start(Answer::Ack("AE", "Patient locked")).await;
    let message = stored(fixture("appointment.rescheduled"));
    let config = config(peer.port);
    assert!(mllp::forward(&config, &message).await.is_err());
    peer.answer(Answer::Ack("AA", ""));
    mllp::forward(&config, &message).await.unwrap();
    let messages = peer.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0], messages[1],
        "the retry is byte for byte the same"
    );
}

#[tokio::test]
async fn ae_and_ar_are_rejected_with_the_receivers_text_and_retryable() {
    let peer = Peer::start(Answer::Ack("AE", "Unknown patient P-1001")).await;
    let config = config(peer.port);
    let message = stored(fixture("appointment.cancelled"));
    for (code, text, expected) in [
        ("AE", "Unknown patient P-1001", AckCode::AE),
        ("AR", "", AckCode::AR),
    ] {
        peer.answer(Answer::Ack(code, text));
        match mllp::forward(&config, &message).await {
            Err(e @ Hl7Error::Rejected { .. }) => {
                assert_eq!(e.disposition(), Disposition::Retry);
                let Hl7Error::Rejected { code, text: said } = e else {
                    unreachable!()
                };
                assert_eq!(code, expected);
                // Without MSA-3 the text comes from ERR-3.
                let want = if text.is_empty() {
                    "Application internal error"
                } else {
                    text
                };
                assert_eq!(said, want);
            }
            other => panic!("{code}: expected Rejected, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_silent_receiver_times_out_within_the_ack_timeout() {
    let peer = Peer::start(Answer::Silence).await;
    let mut config = config(peer.port);
    config.ack_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = mllp::forward(&config, &stored(fixture("appointment.no_show"))).await;
    let took = started.elapsed();
    match result {
        Err(e @ Hl7Error::Timeout { .. }) => assert!(e.is_retryable()),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(peer.messages().len(), 1, "the message was delivered");
}

#[tokio::test]
async fn a_refused_connection_is_a_retryable_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    match mllp::forward(&config(port), &stored(fixture("appointment.booked"))).await {
        Err(e @ Hl7Error::Connection(_)) => assert!(e.is_retryable()),
        other => panic!("expected Connection, got {other:?}"),
    }
}

#[tokio::test]
async fn an_ack_for_another_message_is_not_taken_as_success() {
    let peer = Peer::start(Answer::AckFor("SOMEONEELSES")).await;
    match mllp::forward(&config(peer.port), &stored(fixture("appointment.booked"))).await {
        Err(e @ Hl7Error::BadAck(_)) => {
            assert!(e.to_string().contains("SOMEONEELSES"), "{e}");
            assert!(e.is_retryable());
        }
        other => panic!("expected BadAck, got {other:?}"),
    }
}

#[tokio::test]
async fn nothing_is_sent_for_types_without_siu_meaning_or_malformed_bodies() {
    let peer = Peer::start(Answer::Ack("AA", "")).await;
    let config = config(peer.port);
    match mllp::forward(&config, &stored(fixture("schedule.changed"))).await {
        Err(e @ Hl7Error::NotApplicable { .. }) => {
            assert_eq!(e.disposition(), Disposition::Skip)
        }
        other => panic!("expected NotApplicable, got {other:?}"),
    }
    let mut body = fixture("appointment.booked");
    body["data"]["appointment"]["patient"]
        .as_object_mut()
        .unwrap()
        .remove("hisPatientId");
    match mllp::forward(&config, &stored(body)).await {
        Err(e @ Hl7Error::Malformed(_)) => {
            assert!(e.to_string().contains("hisPatientId"), "{e}");
            assert_eq!(e.disposition(), Disposition::GiveUp);
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(peer.frames().is_empty());
}

// --- enhanced mode and hostile peers ----------------------------------------------

/// Sends the booking to a peer answering `answer`, within an ACK timeout of 300 ms.
async fn send_to(answer: Answer) -> (Peer, Result<mllp::Ack, Hl7Error>, Duration) {
    let peer = Peer::start(answer).await;
    let mut config = config(peer.port);
    config.ack_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = mllp::forward(&config, &stored(fixture("appointment.booked"))).await;
    (peer, result, started.elapsed())
}

/// Enhanced mode: a `CA` only says the peer stored the message. The client
/// waits for the application ACK on the same connection, whether it comes
/// in the same write or later (within the ACK timeout), and answers it with
/// a commit accept because the ACK asked for one (MSH-15 `AL`).
#[tokio::test]
async fn after_a_commit_accept_only_the_application_accept_is_success() {
    for apart in [0, 150] {
        let (peer, result, _) = send_to(Answer::Enhanced(&["CA", "AA"], apart)).await;
        let ack = result.unwrap_or_else(|e| panic!("apart {apart}: {e:?}"));
        assert_eq!(ack.code, AckCode::AA);
        assert!(ack.committed_first);
        // Our commit accept of the application ACK reaches the peer.
        let deadline = Instant::now() + Duration::from_secs(2);
        while peer.messages().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let messages = peer.messages();
        assert_eq!(messages.len(), 2, "{messages:?}");
        let control_id = hl7::control_id(&stored(fixture("appointment.booked")).webhook_id);
        assert!(
            messages[1].contains(&format!("\rMSA|CA|ACK-{control_id}\r")),
            "{:?}",
            messages[1]
        );
    }
}

#[tokio::test]
async fn a_commit_accept_then_an_application_error_is_a_rejection() {
    for (codes, expected) in [
        (&["CA", "AE"][..], AckCode::AE),
        (&["CA", "AR"][..], AckCode::AR),
        (&["CE"][..], AckCode::CE),
        (&["CR"][..], AckCode::CR),
    ] {
        let codes: &'static [&'static str] = Box::leak(codes.to_vec().into_boxed_slice());
        let (_peer, result, _) = send_to(Answer::Enhanced(codes, 50)).await;
        match result {
            Err(e @ Hl7Error::Rejected { .. }) => {
                assert!(e.is_retryable());
                let Hl7Error::Rejected { code, .. } = e else {
                    unreachable!()
                };
                assert_eq!(code, expected, "{codes:?}");
            }
            other => panic!("{codes:?}: expected Rejected, got {other:?}"),
        }
    }
}

/// A `CA` and then nothing: not a success but a timeout after the ACK
/// timeout, so the scheduler retries; a second commit ACK is no answer either.
#[tokio::test]
async fn a_commit_accept_without_an_application_ack_times_out_and_is_retried() {
    let (peer, result, took) = send_to(Answer::Enhanced(&["CA"], 0)).await;
    match result {
        Err(
            e @ Hl7Error::Timeout {
                phase: mllp::Phase::ApplicationAck,
                ..
            },
        ) => assert_eq!(e.disposition(), Disposition::Retry),
        other => panic!("expected an application-ACK timeout, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(2000), "{took:?}");
    assert_eq!(peer.messages().len(), 1);

    let (_peer, result, _) = send_to(Answer::Enhanced(&["CA", "CA"], 0)).await;
    assert!(matches!(result, Err(Hl7Error::BadAck(_))), "{result:?}");
}

/// Whatever a peer sends, the client answers with a retryable error in
/// bounded time and memory: garbage and a close, an unframed flood, a frame
/// over 1 MiB, bytes that are not UTF-8.
#[tokio::test]
async fn a_hostile_peer_gets_a_retryable_error_in_bounded_time() {
    static HUGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let huge: &'static [u8] = HUGE.get_or_init(|| {
        let mut b = vec![0x0b];
        b.extend(std::iter::repeat_n(b'A', mllp::MAX_ACK_BYTES + 10));
        b
    });
    for answer in [
        Answer::Raw(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        Answer::Raw(b"\x0b\xff\xfe\x00MSH\x1c\x0d"),
        Answer::Raw(b"\x0bMSH|^~\\&|\rMSA|ZZ|x\x1c\x0d"),
        Answer::Raw(huge),
        Answer::Noise,
    ] {
        let label = match &answer {
            Answer::Raw(b) => String::from_utf8_lossy(&b[..b.len().min(20)]).into_owned(),
            other => format!("{other:?}"),
        };
        let (_peer, result, took) = send_to(answer).await;
        let e = result.expect_err(&label);
        assert!(e.is_retryable(), "{label}: {e:?}");
        assert!(took < Duration::from_millis(2000), "{label}: {took:?}");
    }
}

// --- from the real server ---------------------------------------------------------

/// End to end: the HIS creates an appointment through /his/v1 and then moves
/// it to another practitioner. The webhook payloads carry its `hisId` and
/// the previous practitioner as a whole; the SIU messages built from them
/// (read back by hl7-2) carry the HIS's id in SCH-1 placer appointment id
/// and Buktor's in SCH-2 filler id, and the S13 deletes the old
/// practitioner (AIP `D`) and adds the new one (AIP `A`). A booking made in
/// Buktor has `hisId: null` and Buktor's id in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_his_appointment_moved_to_another_practitioner_reaches_hl7_with_both_ids_and_d_then_a() {
    use crate::server::{book_input, days_ahead, local, Deployment, ServerOptions, BOOK};
    use crate::support::receiver::Receiver;

    let deployment = Deployment::embedded();
    let server = deployment
        .start_with(ServerOptions {
            env: vec![("BUKTOR_WEBHOOKS__POLL_MS".into(), "50".into())],
            ..Default::default()
        })
        .await;
    let (tenant, admin) = deployment.tenant_with_admin("HL7 Ids Hospital").await;
    let his_key = deployment.create_api_key(&tenant, "his-system").await;
    let receiver = Receiver::start().await;
    let created = server
        .gql_ok(
            &admin,
            "mutation($input: WebhookEndpointInput!) {
                createWebhookEndpoint(input: $input) { secret endpoint { id } } }",
            json!({"input": {"url": receiver.url(), "description": "HL7 gateway"}}),
        )
        .await;
    let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap();
    receiver.set_secrets(&[secret]);

    let client = reqwest::Client::new();
    let his = |method: reqwest::Method, path: &str, key: &str, body: Value| {
        client
            .request(method, format!("{}/his/v1{path}", server.url))
            .bearer_auth(&his_key)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let day = days_ahead(3);
    let schedule = |doc: &str| {
        json!({"practitionerId": doc, "version": 1, "weeklyRules": [{
            "weekdays": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
            "start": "08:00", "end": "16:00", "gridMinutes": 20, "effectiveFrom": "2020-01-01"}]})
    };
    let master = his(
        reqwest::Method::POST,
        "/bulk",
        "master",
        json!({
            "practitioners": [
                {"hisId": "DOC-1", "version": 1, "name": "Dr. Ada Lovelace", "specialty": "Cardiology", "department": "Heart"},
                {"hisId": "DOC-2", "version": 1, "name": "Dr. Grace Hopper", "specialty": "Cardiology", "department": "Heart"},
            ],
            "services": [{"hisId": "SVC-CARD", "version": 1, "name": "Consultation", "durationMinutes": 20, "practitionerIds": ["DOC-1", "DOC-2"]}],
            "schedules": [schedule("DOC-1"), schedule("DOC-2")],
        }),
    )
    .await
    .unwrap();
    assert_eq!(master.status(), 200);
    let master: Value = master.json().await.unwrap();
    let id_of = |kind: &str, his_id: &str| -> String {
        master["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == kind && r["hisId"] == his_id)
            .unwrap_or_else(|| panic!("no {kind} {his_id} in {master}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (version, doc, hour) in [(1, "DOC-1", 9), (2, "DOC-2", 10)] {
        let res = his(
            reqwest::Method::PUT,
            "/appointments/APT-7",
            &format!("apt-{version}"),
            json!({"version": version, "practitionerId": doc, "serviceId": "SVC-CARD",
                "start": local(day, hour, 0).to_rfc3339(),
                "patient": {"hisId": "PAT-7", "name": "Ada Jansen"}}),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
    // And one booked in Buktor itself, on a practitioner the HIS sent.
    let service = id_of("service", "SVC-CARD");
    let own = server
        .gql_ok(
            &admin,
            BOOK,
            json!({"input": book_input(&id_of("practitioner", "DOC-1"), &service, local(day, 11, 0), "P-OWN")}),
        )
        .await["bookAppointment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let arrivals = receiver
        .wait_until(
            "the booking, the move and Buktor's own booking",
            Duration::from_secs(30),
            |a| {
                a.iter()
                    .filter(|a| a.event_type.starts_with("appointment.") && a.succeeded())
                    .count()
                    >= 3
            },
        )
        .await;
    let body_of = |event_type: &str, his_id: Option<&str>| -> Value {
        arrivals
            .iter()
            .find(|a| {
                a.event_type == event_type
                    && a.body["data"]["appointment"]["hisId"].as_str() == his_id
            })
            .unwrap_or_else(|| panic!("no {event_type} for {his_id:?}"))
            .body
            .clone()
    };
    let booked = body_of("appointment.booked", Some("APT-7"));
    let moved = body_of("appointment.rescheduled", Some("APT-7"));
    let buktors = body_of("appointment.booked", None);
    let buktor_id = booked["data"]["appointment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(moved["data"]["appointment"]["id"], buktor_id.as_str());
    let previous = &moved["data"]["appointment"]["previous"];
    assert_eq!(
        previous["practitionerId"],
        id_of("practitioner", "DOC-1").as_str()
    );
    assert_eq!(previous["practitioner"]["externalId"], "DOC-1");
    assert_eq!(previous["practitioner"]["name"], "Dr. Ada Lovelace");
    assert_eq!(
        moved["data"]["appointment"]["practitioner"]["externalId"],
        "DOC-2"
    );
    assert_eq!(buktors["data"]["appointment"]["id"], own.as_str());

    let header = config(2575).header();
    let siu = |body: &Value| {
        let text = hl7::build(&header, &stored(body.clone())).unwrap().text;
        parse_strictly(&text).unwrap_or_else(|e| panic!("{e}\n{}", text.replace('\r', "\n")))
    };
    for body in [&booked, &moved] {
        let m = siu(body);
        assert_eq!(get(&m, "SCH-1.1"), "APT-7", "the HIS's own id");
        assert_eq!(get(&m, "SCH-1.2"), "HIS");
        assert_eq!(get(&m, "SCH-2.1"), buktor_id);
        assert_eq!(get(&m, "SCH-2.2"), "BUKTOR");
    }
    let m = siu(&moved);
    assert_eq!(get(&m, "MSH-9"), "SIU^S13^SIU_S12");
    let text = hl7::build(&header, &stored(moved.clone())).unwrap().text;
    let aips: Vec<&str> = text.split('\r').filter(|s| s.starts_with("AIP|")).collect();
    assert_eq!(aips.len(), 2, "{text}");
    assert!(
        aips[0].starts_with("AIP|1|D|DOC-1^Dr. Ada Lovelace^"),
        "{}",
        aips[0]
    );
    assert!(
        aips[1].starts_with("AIP|2|A|DOC-2^Dr. Grace Hopper^"),
        "{}",
        aips[1]
    );
    let old_start = hl7::dtm(&local(day, 9, 0).with_timezone(&chrono_tz::Europe::Amsterdam));
    assert_eq!(aips[0].split('|').nth(6), Some(old_start.as_str()));
    let m = siu(&buktors);
    assert_eq!(get(&m, "SCH-1.1"), own);
    assert_eq!(get(&m, "SCH-2.1"), own);
}
