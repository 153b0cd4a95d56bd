//! Sends SIU messages to the HIS over MLLP and reads its ACK.
//!
//! One TCP connection per message: connect (bounded by `connect_timeout`),
//! write `0x0B message 0x1C 0x0D`, read one framed answer (writing and
//! reading bounded by `ack_timeout`), close. The answer must be an ACK whose
//! MSA-1 accepts and whose MSA-2 echoes our MSH-10; everything else is an
//! [`Hl7Error`] that says whether to skip, retry or give up.
//!
//! Messages go out in original acknowledgment mode (MSH-15 and MSH-16 left
//! empty), so a receiver answers `AA`, `AE` or `AR`. A receiver that answers
//! in enhanced mode anyway is understood too, but a `CA` (commit accept)
//! only says it has *stored* the message, not that its application took
//! it: after a `CA` the client waits, on the same connection and for
//! another `ack_timeout`, for the application ACK (`AA`, `AE`, `AR`), and
//! only an `AA` is success. No application ACK in time is a timeout
//! (retried); `CE` and `CR` are rejections. If that application ACK asks
//! for an accept acknowledgment (its MSH-15 is `AL` or `SU`), the client
//! answers it with a `CA` before closing.
//!
//! Whatever the peer sends, reading is bounded: one frame of at most
//! [`MAX_ACK_BYTES`], two frames at most, each within `ack_timeout`, and
//! [`parse_ack`] reads any bytes without panicking.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hl7::{self, BuildError, Delimiters, Header};
use super::StoredMessage;

/// MLLP start block.
pub const START_BLOCK: u8 = 0x0B;
/// MLLP end block, followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// An ACK larger than this is not an ACK.
pub const MAX_ACK_BYTES: usize = 1024 * 1024;

/// The `[hl7]` section of the middleware's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Hl7Config {
    /// The HIS's MLLP listener.
    pub host: String,
    /// 2575 is the port IANA registered for HL7 over MLLP.
    pub port: u16,
    /// How long opening the TCP connection may take.
    #[serde(rename = "connect_timeout_ms", with = "millis")]
    pub connect_timeout: Duration,
    /// How long sending the message and receiving its ACK may take.
    #[serde(rename = "ack_timeout_ms", with = "millis")]
    pub ack_timeout: Duration,
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5; also the assigning authority of the patient id (PID-3) and of
    /// the HIS's external ids for practitioners and services.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-11: `P` production, `T` training, `D` debugging. A HIS's test
    /// interface usually refuses `P`.
    pub processing_id: String,
}

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            host: "127.0.0.1".into(),
            port: 2575,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            sending_application: "BUKTOR".into(),
            sending_facility: "BUKTOR".into(),
            receiving_application: "HIS".into(),
            receiving_facility: "HIS".into(),
            processing_id: "P".into(),
        }
    }
}

impl Hl7Config {
    /// The rules serde cannot express; call it at start so a bad section
    /// stops the middleware naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.trim().is_empty() {
            return Err("hl7.host must not be empty".into());
        }
        if self.port == 0 {
            return Err("hl7.port must not be 0".into());
        }
        if self.connect_timeout.is_zero() || self.ack_timeout.is_zero() {
            return Err("hl7.connect_timeout_ms and hl7.ack_timeout_ms must be at least 1".into());
        }
        if !matches!(self.processing_id.as_str(), "P" | "T" | "D") {
            return Err("hl7.processing_id must be P, T or D".into());
        }
        for (key, value) in [
            ("sending_application", &self.sending_application),
            ("receiving_application", &self.receiving_application),
        ] {
            if value.trim().is_empty() {
                return Err(format!("hl7.{key} must not be empty"));
            }
        }
        Ok(())
    }

    /// MSH-3 to MSH-6 and MSH-11.
    pub fn header(&self) -> Header {
        Header {
            sending_application: self.sending_application.clone(),
            sending_facility: self.sending_facility.clone(),
            receiving_application: self.receiving_application.clone(),
            receiving_facility: self.receiving_facility.clone(),
            processing_id: self.processing_id.clone(),
        }
    }
}

/// Durations as whole milliseconds, like the rest of the configuration's
/// integer `_secs`/`_ms` keys.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// MSA-1, HL7 table 0008.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    /// Commit error (enhanced mode).
    CE,
    /// Commit reject (enhanced mode).
    CR,
}

impl AckCode {
    pub fn parse(code: &str) -> Option<AckCode> {
        Some(match code {
            "AA" => AckCode::AA,
            "AE" => AckCode::AE,
            "AR" => AckCode::AR,
            "CA" => AckCode::CA,
            "CE" => AckCode::CE,
            "CR" => AckCode::CR,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// `AA` or `CA`: accepted at its level (application or commit).
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }

    /// An enhanced-mode commit acknowledgment (`CA`, `CE`, `CR`): about
    /// storing the message, not about what the application made of it.
    pub fn is_commit(self) -> bool {
        matches!(self, AckCode::CA | AckCode::CE | AckCode::CR)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An accepting ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `AA` (from [`send`] always; [`check_ack`] also answers a `CA`).
    pub code: AckCode,
    /// Whether a `CA` (enhanced mode) came before this application ACK.
    pub committed_first: bool,
    /// MSA-2, equal to the control id sent.
    pub control_id: String,
    /// MSA-3 or the ERR segment's text, if the receiver said anything.
    pub text: Option<String>,
    /// The whole ACK as received, segments separated by `\r`, for the log.
    pub raw: String,
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Ack,
    /// The application ACK an enhanced-mode receiver owes after its `CA`.
    ApplicationAck,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connection",
            Phase::Ack => "ACK",
            Phase::ApplicationAck => "application ACK after the commit accept",
        })
    }
}

/// What to do with a message whose forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The message has no HL7 form: mark it skipped.
    Skip,
    /// Send it again later.
    Retry,
    /// The message itself is wrong: retrying cannot help.
    GiveUp,
}

#[derive(Debug, thiserror::Error)]
pub enum Hl7Error {
    /// The type has no SIU meaning (`schedule.changed`, …).
    #[error("`{event_type}` has no HL7 SIU meaning")]
    NotApplicable { event_type: String },
    /// The payload lacks what SIU requires: permanent.
    #[error("the payload cannot become an SIU message: {0}")]
    Malformed(String),
    /// MSA-1 was `AE`, `AR`, `CE` or `CR`. Retryable: a HIS rejects what it
    /// cannot take yet (an unknown patient, a locked record) as often as what
    /// it will never take, and an operator reads `text` in the log.
    #[error("the HL7 receiver answered {code}: {text}")]
    Rejected { code: AckCode, text: String },
    /// No connection, no ACK, or (after a `CA`) no application ACK in
    /// time. Retryable.
    #[error("no {phase} within {} ms", after.as_millis())]
    Timeout { phase: Phase, after: Duration },
    /// Connecting, writing or reading failed. Retryable.
    #[error("talking to the HL7 receiver failed")]
    Connection(#[source] io::Error),
    /// The answer is not a usable ACK: not framed, no MSA, an unknown MSA-1,
    /// or an MSA-2 that is not our control id. Retryable.
    #[error("the HL7 receiver's answer is not a usable ACK: {0}")]
    BadAck(String),
}

impl Hl7Error {
    pub fn disposition(&self) -> Disposition {
        match self {
            Hl7Error::NotApplicable { .. } => Disposition::Skip,
            Hl7Error::Malformed(_) => Disposition::GiveUp,
            Hl7Error::Rejected { .. }
            | Hl7Error::Timeout { .. }
            | Hl7Error::Connection(_)
            | Hl7Error::BadAck(_) => Disposition::Retry,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.disposition() == Disposition::Retry
    }
}

impl From<BuildError> for Hl7Error {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::NotApplicable { event_type } => Hl7Error::NotApplicable { event_type },
            BuildError::Malformed(detail) => Hl7Error::Malformed(detail),
        }
    }
}

/// Builds the SIU message for `message` and sends it to the configured
/// receiver. `Ok` only when the receiver accepted it.
pub async fn forward(config: &Hl7Config, message: &StoredMessage) -> Result<Ack, Hl7Error> {
    let siu = hl7::build(&config.header(), message)?;
    let result = send(config, &siu.text, &siu.control_id).await;
    match &result {
        Ok(ack) => tracing::debug!(
            webhook_id = %message.webhook_id,
            control_id = %siu.control_id,
            trigger = siu.trigger.code(),
            ack = %ack.code,
            "HL7 message accepted"
        ),
        Err(e) => tracing::debug!(
            webhook_id = %message.webhook_id,
            control_id = %siu.control_id,
            trigger = siu.trigger.code(),
            error = %e,
            "HL7 message not accepted"
        ),
    }
    result
}

/// Sends one already-built message and checks its ACK against `control_id`:
/// `Ok` only for an application accept (`AA`), directly or after a `CA`.
pub async fn send(config: &Hl7Config, text: &str, control_id: &str) -> Result<Ack, Hl7Error> {
    let address = (config.host.as_str(), config.port);
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| Hl7Error::Timeout {
            phase: Phase::Connect,
            after: config.connect_timeout,
        })?
        .map_err(Hl7Error::Connection)?;
    let mut conn = Connection::new(stream);
    let result = exchange(config, &mut conn, text, control_id).await;
    // The exchange is over; a failing close changes nothing.
    let _ = conn.stream.shutdown().await;
    result
}

async fn exchange(
    config: &Hl7Config,
    conn: &mut Connection,
    text: &str,
    control_id: &str,
) -> Result<Ack, Hl7Error> {
    let timeout = |phase| Hl7Error::Timeout {
        phase,
        after: config.ack_timeout,
    };
    let first = tokio::time::timeout(config.ack_timeout, async {
        conn.stream.write_all(&frame(text)).await?;
        conn.stream.flush().await?;
        conn.read_frame().await
    })
    .await
    .map_err(|_| timeout(Phase::Ack))?
    .map_err(io_error)?;
    let ack = check_ack(&String::from_utf8_lossy(&first), control_id)?;
    if ack.code != AckCode::CA {
        return Ok(ack);
    }
    // Enhanced mode: the CA says the message is stored; what the
    // application makes of it comes in a second ACK.
    let second = tokio::time::timeout(config.ack_timeout, conn.read_frame())
        .await
        .map_err(|_| timeout(Phase::ApplicationAck))?
        .map_err(io_error)?;
    let parsed = parse_ack(&second)?;
    if parsed.code.is_commit() {
        return Err(Hl7Error::BadAck(format!(
            "a second commit ACK ({}) where the application ACK was due",
            parsed.code
        )));
    }
    if matches!(parsed.accept_ack_type.as_str(), "AL" | "SU") {
        // The application ACK is a message of its own and asked for a
        // commit accept: we have it, whatever it says. Failing to send the
        // CA changes nothing here; the peer may send its ACK again.
        let commit = commit_accept(config, &parsed);
        let _ = tokio::time::timeout(config.ack_timeout, async {
            conn.stream.write_all(&frame(&commit)).await?;
            conn.stream.flush().await
        })
        .await;
    }
    let mut ack = check_parsed(parsed, control_id)?;
    ack.committed_first = true;
    Ok(ack)
}

fn io_error(e: io::Error) -> Hl7Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Hl7Error::BadAck(e.to_string())
    } else {
        Hl7Error::Connection(e)
    }
}

/// Our `CA` for an application ACK that asked for one.
fn commit_accept(config: &Hl7Config, ack: &ParsedAck) -> String {
    let d = Delimiters::STANDARD;
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|{}|{}|{}|{}|{now}||ACK^^ACK|{}|{}|{}\rMSA|CA|{}\r",
        d.escape(&config.sending_application),
        d.escape(&config.sending_facility),
        d.escape(&config.receiving_application),
        d.escape(&config.receiving_facility),
        hl7::control_id(&format!("commit:{}", ack.message_control_id)),
        d.escape(&config.processing_id),
        hl7::VERSION,
        d.escape(&ack.message_control_id),
    )
}

/// `0x0B message 0x1C 0x0D`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
    out
}

/// One connection and the bytes read past the last frame (a peer may send
/// its CA and its application ACK in one write).
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Reads one MLLP frame and returns what is inside. Bytes before the
    /// start block are dropped; `InvalidData` for a frame over
    /// [`MAX_ACK_BYTES`], `UnexpectedEof` when the peer closes first.
    async fn read_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(frame) = take_frame(&mut self.buffer)? {
                return Ok(frame);
            }
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the receiver closed the connection before a whole ACK",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Takes the first whole frame's content out of `buffer`, leaving what
/// follows it; drops noise before a start block. `Ok(None)` while the frame
/// is incomplete.
pub fn take_frame(buffer: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    let Some(start) = buffer.iter().position(|b| *b == START_BLOCK) else {
        buffer.clear();
        return Ok(None);
    };
    buffer.drain(..start);
    if let Some(end) = buffer[1..]
        .windows(2)
        .position(|w| w == [END_BLOCK, CARRIAGE_RETURN])
    {
        let frame = buffer[1..1 + end].to_vec();
        buffer.drain(..end + 3);
        return Ok(Some(frame));
    }
    if buffer.len() > MAX_ACK_BYTES + 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer is over 1 MiB without an MLLP end block",
        ));
    }
    Ok(None)
}

/// An ACK as read, before it is held against the message sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAck {
    /// MSA-1.
    pub code: AckCode,
    /// MSA-2, unescaped: the control id acknowledged.
    pub control_id: String,
    /// MSA-3 or the ERR segment's text.
    pub text: Option<String>,
    /// The ACK's own MSH-10.
    pub message_control_id: String,
    /// The ACK's MSH-15 (accept acknowledgment type), empty if none.
    pub accept_ack_type: String,
    /// The segments as received, separated by `\r`.
    pub raw: String,
}

/// Parses an ACK: the bytes inside one MLLP frame. Any bytes give an answer
/// and never a panic (the fuzz target's contract): over [`MAX_ACK_BYTES`],
/// no MSH first, no delimiters, no MSA or an MSA-1 outside HL7 table 0008
/// is [`Hl7Error::BadAck`]. Not UTF-8 is read lossily.
pub fn parse_ack(bytes: &[u8]) -> Result<ParsedAck, Hl7Error> {
    if bytes.len() > MAX_ACK_BYTES {
        return Err(Hl7Error::BadAck(format!(
            "{} bytes is over the {MAX_ACK_BYTES} an ACK may have",
            bytes.len()
        )));
    }
    let raw = String::from_utf8_lossy(bytes);
    let segments: Vec<&str> = raw
        .split(['\r', '\n'])
        .filter(|s| !s.trim().is_empty())
        .collect();
    let msh = segments
        .first()
        .filter(|s| s.starts_with("MSH"))
        .ok_or_else(|| Hl7Error::BadAck("it does not start with MSH".into()))?;
    let d = Delimiters::from_msh(msh)
        .ok_or_else(|| Hl7Error::BadAck("its MSH declares no delimiters".into()))?;
    let fields_of = |name: &str| -> Option<Vec<&str>> {
        segments
            .iter()
            .find(|s| s.split(d.field).next() == Some(name))
            .map(|s| s.split(d.field).collect())
    };
    let field = |fields: &[&str], n: usize| fields.get(n).copied().unwrap_or("").trim().to_string();
    // In MSH the field separator is MSH-1 itself, so MSH-n is split n-1.
    let msh_fields: Vec<&str> = msh.split(d.field).collect();
    let msa = fields_of("MSA").ok_or_else(|| Hl7Error::BadAck("it has no MSA segment".into()))?;
    let code_text = field(&msa, 1);
    let code = AckCode::parse(&code_text).ok_or_else(|| {
        Hl7Error::BadAck(format!("MSA-1 `{code_text}` is not an acknowledgment code"))
    })?;
    Ok(ParsedAck {
        code,
        control_id: d.unescape(&field(&msa, 2)),
        text: ack_text(&msa, fields_of("ERR").as_deref(), &d),
        message_control_id: d.unescape(&field(&msh_fields, 9)),
        accept_ack_type: field(&msh_fields, 14),
        raw: segments.join("\r"),
    })
}

/// Checks an ACK's text (without framing) against the control id sent:
/// `Ok` for an `AA` or a `CA` echoing it ([`send`] then waits for the
/// application ACK), `Rejected` for `AE`, `AR`, `CE`, `CR`.
pub fn check_ack(raw: &str, control_id: &str) -> Result<Ack, Hl7Error> {
    check_parsed(parse_ack(raw.as_bytes())?, control_id)
}

fn check_parsed(ack: ParsedAck, control_id: &str) -> Result<Ack, Hl7Error> {
    if !ack.code.is_accept() {
        return Err(Hl7Error::Rejected {
            code: ack.code,
            text: ack.text.unwrap_or_else(|| "(no text)".into()),
        });
    }
    if ack.control_id != control_id {
        return Err(Hl7Error::BadAck(format!(
            "MSA-2 `{}` is not the control id sent, `{control_id}`",
            ack.control_id
        )));
    }
    Ok(Ack {
        code: ack.code,
        committed_first: false,
        control_id: ack.control_id,
        text: ack.text,
        raw: ack.raw,
    })
}

/// MSA-3 (text message), else ERR-8 (user message), ERR-3.2 (error code
/// text) or, from a 2.4 receiver, ERR-1.4.2.
fn ack_text(msa: &[&str], err: Option<&[&str]>, d: &Delimiters) -> Option<String> {
    let component = |value: &str, n: usize| -> String {
        value.split(d.component).nth(n).unwrap_or("").to_string()
    };
    let mut candidates = vec![msa.get(3).map(|s| s.to_string()).unwrap_or_default()];
    if let Some(err) = err {
        let get = |n: usize| err.get(n).copied().unwrap_or("");
        candidates.push(get(8).to_string());
        candidates.push(component(get(3), 1));
        let eld = get(1);
        candidates.push(
            eld.split(d.component)
                .nth(3)
                .unwrap_or("")
                .split(d.subcomponent)
                .nth(1)
                .unwrap_or("")
                .to_string(),
        );
    }
    candidates
        .into_iter()
        .map(|c| d.unescape(c.trim()))
        .find(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "ABCDEF0123456789ABCD";

    #[test]
    fn frame_wraps_the_message_in_start_and_end_blocks() {
        assert_eq!(frame("MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d".to_vec());
    }

    #[test]
    fn an_aa_echoing_the_control_id_is_accepted() {
        let ack = check_ack(
            &format!("MSH|^~\\&|HIS|H|BUKTOR|B|20261125101403+0100||ACK^S12^ACK|1|P|2.5\rMSA|AA|{CID}|Thanks\r"),
            CID,
        )
        .unwrap();
        assert_eq!(ack.code, AckCode::AA);
        assert_eq!(ack.text.as_deref(), Some("Thanks"));
    }

    #[test]
    fn a_ca_counts_as_accepted() {
        let ack = check_ack(&format!("MSH|^~\\&|HIS\rMSA|CA|{CID}\r"), CID).unwrap();
        assert_eq!(ack.code, AckCode::CA);
        assert_eq!(ack.text, None);
    }

    #[test]
    fn an_ae_is_rejected_with_its_text_and_retryable() {
        let e = check_ack(
            &format!("MSH|^~\\&|HIS\rMSA|AE|{CID}|Unknown patient P\\S\\1\r"),
            CID,
        )
        .unwrap_err();
        match &e {
            Hl7Error::Rejected { code, text } => {
                assert_eq!(*code, AckCode::AE);
                assert_eq!(text, "Unknown patient P^1");
            }
            other => panic!("expected Rejected, got {other:?}"),
        }
        assert!(e.is_retryable());
    }

    #[test]
    fn a_reject_without_msa_text_takes_the_err_segments_text() {
        for err in [
            "ERR|||207^Application internal error^HL70357|E||||Database locked",
            "ERR|||207^Application internal error^HL70357|E",
            "ERR|SCH^1^1^207&Application internal error&HL70357",
        ] {
            let e = check_ack(&format!("MSH|^~\\&|HIS\rMSA|AR|{CID}\r{err}\r"), CID).unwrap_err();
            let Hl7Error::Rejected { code, text } = e else {
                panic!("expected Rejected for {err}");
            };
            assert_eq!(code, AckCode::AR);
            let expected = if err.contains("Database locked") {
                "Database locked"
            } else {
                "Application internal error"
            };
            assert_eq!(text, expected, "{err}");
        }
    }

    #[test]
    fn an_aa_for_another_control_id_is_a_bad_ack() {
        let e = check_ack("MSH|^~\\&|HIS\rMSA|AA|SOMETHINGELSE\r", CID).unwrap_err();
        assert!(matches!(e, Hl7Error::BadAck(_)), "{e:?}");
        assert!(e.is_retryable());
    }

    #[test]
    fn answers_that_are_not_acks_are_bad_acks() {
        for raw in [
            "",
            "hello",
            "MSH|^~\\&|HIS\r",
            &format!("MSH|^~\\&|HIS\rMSA|OK|{CID}\r"),
        ] {
            assert!(
                matches!(check_ack(raw, CID), Err(Hl7Error::BadAck(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn an_ack_with_other_delimiters_is_read_with_them() {
        let ack = check_ack(&format!("MSH#*~\\&#HIS\rMSA#AA#{CID}#ok\r"), CID).unwrap();
        assert_eq!(ack.text.as_deref(), Some("ok"));
    }

    #[test]
    fn parse_ack_reads_the_acks_own_header_and_never_panics_on_garbage() {
        let ack = parse_ack(
            format!("MSH|^~\\&|HIS|H|BUKTOR|B|20261125||ACK^S12^ACK|HIS-77|P|2.5|||AL|NE\rMSA|AA|{CID}\r")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(ack.message_control_id, "HIS-77");
        assert_eq!(ack.accept_ack_type, "AL");
        assert_eq!(ack.control_id, CID);
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff, 0xfe, 0x00],
            b"MSH".to_vec(),
            b"MSH|".to_vec(),
            b"MSH|^~\\&".to_vec(),
            b"MSH\r\r\rMSA".to_vec(),
            b"MSH|^~\\&|\rMSA|AA|\\X\\|\\Xzz\\\\".to_vec(),
            "MSH\u{1F600}^~\\&\u{1F600}\rMSA\u{1F600}CA\u{1F600}x"
                .as_bytes()
                .to_vec(),
            b"MSH|||||||||||||||||||||\rMSA|||||||\rERR|||||||||||".to_vec(),
            b"MSH|^~\\&\rERR|^^^&&&\rMSA|AE".to_vec(),
            vec![b'|'; 10_000],
        ];
        let mut big = b"MSH|^~\\&|\rMSA|AA|".to_vec();
        big.resize(MAX_ACK_BYTES + 1, b'x');
        inputs.push(big);
        for bytes in inputs {
            // Any answer but a panic will do; an MSA-1 must be a table 0008 code.
            if let Ok(ack) = parse_ack(&bytes) {
                assert!(AckCode::parse(ack.code.as_str()).is_some());
            }
        }
        assert!(matches!(
            parse_ack(&vec![b'M'; MAX_ACK_BYTES + 1]),
            Err(Hl7Error::BadAck(_))
        ));
    }

    #[test]
    fn frames_are_taken_one_at_a_time_past_noise_and_bounded() {
        let mut buffer = b"noise".to_vec();
        buffer.extend(frame("ONE"));
        buffer.extend(frame("TWO"));
        buffer.extend(b"\x0bTHR");
        assert_eq!(take_frame(&mut buffer).unwrap(), Some(b"ONE".to_vec()));
        assert_eq!(take_frame(&mut buffer).unwrap(), Some(b"TWO".to_vec()));
        assert_eq!(take_frame(&mut buffer).unwrap(), None, "incomplete");
        assert_eq!(buffer, b"\x0bTHR");
        let mut noise = vec![b'x'; 5000];
        assert_eq!(take_frame(&mut noise).unwrap(), None);
        assert!(noise.is_empty(), "noise without a start block is dropped");
        let mut endless = vec![START_BLOCK];
        endless.resize(MAX_ACK_BYTES + 10, b'x');
        assert_eq!(
            take_frame(&mut endless).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut empty = frame("");
        assert_eq!(take_frame(&mut empty).unwrap(), Some(vec![]));
    }

    #[test]
    fn dispositions_say_what_to_do() {
        assert_eq!(
            Hl7Error::NotApplicable {
                event_type: "schedule.changed".into()
            }
            .disposition(),
            Disposition::Skip
        );
        assert_eq!(
            Hl7Error::Malformed("x".into()).disposition(),
            Disposition::GiveUp
        );
        assert_eq!(
            Hl7Error::Timeout {
                phase: Phase::Ack,
                after: Duration::from_millis(5)
            }
            .disposition(),
            Disposition::Retry
        );
        assert_eq!(
            Hl7Error::Connection(io::ErrorKind::ConnectionRefused.into()).disposition(),
            Disposition::Retry
        );
    }

    #[test]
    fn the_config_reads_milliseconds_and_fills_defaults() {
        let config: Hl7Config = toml::from_str(
            "host = \"his.internal\"\nconnect_timeout_ms = 250\nack_timeout_ms = 1500\nprocessing_id = \"T\"\n",
        )
        .unwrap();
        assert_eq!(config.host, "his.internal");
        assert_eq!(config.port, 2575);
        assert_eq!(config.connect_timeout, Duration::from_millis(250));
        assert_eq!(config.ack_timeout, Duration::from_millis(1500));
        assert_eq!(config.sending_application, "BUKTOR");
        config.validate().unwrap();
        let again: Hl7Config = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn the_config_refuses_what_cannot_work() {
        assert!(toml::from_str::<Hl7Config>("connect_timeout = 5").is_err());
        for bad in [
            Hl7Config {
                port: 0,
                ..Hl7Config::default()
            },
            Hl7Config {
                ack_timeout: Duration::ZERO,
                ..Hl7Config::default()
            },
            Hl7Config {
                processing_id: "X".into(),
                ..Hl7Config::default()
            },
            Hl7Config {
                host: " ".into(),
                ..Hl7Config::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        Hl7Config::default().validate().unwrap();
    }
}
