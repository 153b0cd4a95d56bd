//! An SMTP sink for the tests: a small SMTP server on 127.0.0.1 (a random
//! port) that accepts every message and keeps it, decoded enough to assert
//! on (headers, and the body undone from quoted-printable or base64).
//! Plain SMTP only (no TLS): the server under test is configured with
//! `smtp_tls = none`. `AUTH PLAIN` is offered and accepts any credentials
//! (kept, so a test can check they were sent).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use mailparse::MailHeaderMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One message as it arrived.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// Header names lowercased, values unfolded (and `=?utf-8?b?…?=` decoded).
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The message exactly as sent in DATA (dot-stuffing undone), CRLFs kept.
    pub raw: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn subject(&self) -> &str {
        self.header("subject").unwrap_or_default()
    }
}

pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    /// The argument of every `AUTH PLAIN` received (base64 of `\0user\0password`).
    auths: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let port = listener.local_addr().expect("an address").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let auths = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let mails = mails.clone();
            let auths = auths.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let mails = mails.clone();
                    let auths = auths.clone();
                    tokio::spawn(async move {
                        let _ = session(stream, mails, auths).await;
                    });
                }
            }
        });
        SmtpSink {
            port,
            mails,
            auths,
            task,
        }
    }

    /// The `AUTH PLAIN` arguments received so far.
    pub fn auths(&self) -> Vec<String> {
        self.auths.lock().unwrap().clone()
    }

    /// The environment that points a server at this sink.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("BUKTOR_NOTIFICATIONS__SMTP_HOST".into(), "127.0.0.1".into()),
            (
                "BUKTOR_NOTIFICATIONS__SMTP_PORT".into(),
                self.port.to_string(),
            ),
            ("BUKTOR_NOTIFICATIONS__SMTP_TLS".into(), "none".into()),
        ]
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// Mails to `to`.
    pub fn mails_to(&self, to: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    /// Waits until `done` holds for the mails so far, or panics after `within`.
    pub async fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&[Mail]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let mails = self.mails();
            if done(&mails) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "SMTP sink: {what} did not happen within {within:?}; got {} mails: {:#?}",
                    mails.len(),
                    mails
                        .iter()
                        .map(|m| (&m.to, m.subject()))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn session(
    stream: TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    auths: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 buktor-test-sink ESMTP\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-buktor-test-sink\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n"
        } else if upper.starts_with("AUTH PLAIN ") {
            auths.lock().unwrap().push(command[11..].trim().to_owned());
            b"235 2.7.0 accepted\r\n"
        } else if upper.starts_with("HELO") {
            b"250 buktor-test-sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&command[8..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Undo dot-stuffing.
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            mails.lock().unwrap().push(parse(&from, &to, &data));
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
}

fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(a, _)| a)
        .unwrap_or(arg);
    inner.trim().to_owned()
}

fn parse(from: &str, to: &[String], raw: &str) -> Mail {
    let data = raw.replace("\r\n", "\n");
    let (head, body) = data.split_once("\n\n").unwrap_or((&data, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    for h in headers.iter_mut() {
        h.1 = decode_words(&h.1);
    }
    let encoding = headers
        .iter()
        .find(|(n, _)| n == "content-transfer-encoding")
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap_or_default(),
            )
            .into_owned()
        }
        "quoted-printable" => quoted_printable(body),
        _ => body.to_owned(),
    };
    Mail {
        from: from.to_owned(),
        to: to.to_vec(),
        headers,
        body: body.replace("\r\n", "\n"),
        raw: raw.to_owned(),
    }
}

fn quoted_printable(text: &str) -> String {
    let joined = text.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes RFC 2047 `=?utf-8?b?…?=` words (what lettre writes for non-ASCII subjects).
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    for word in value.split_whitespace() {
        let lower = word.to_ascii_lowercase();
        let decoded = lower
            .strip_prefix("=?utf-8?b?")
            .and_then(|_| word.get(10..word.len().saturating_sub(2)))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        match decoded {
            Some(d) => out.push_str(&d),
            None => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(word);
            }
        }
    }
    out
}

/// Checks a message as a strict mail gateway would, with an off-the-shelf
/// RFC 5322 / MIME parser (mailparse) rather than the sink's own reading,
/// and answers its decoded text body. Beyond parsing, it holds the message
/// to what that parser tolerates but the RFCs require:
/// - RFC 5322 §2.1.1, §2.2: CRLF line ends only, lines of at most 998
///   characters, header fields of US-ASCII (non-ASCII as RFC 2047 words);
/// - RFC 5322 §3.6: exactly one `Date` and one `From`, at most one
///   `Message-ID`, `Subject`, `To`;
/// - RFC 2045 §4: a message with any `Content-*` header says
///   `MIME-Version: 1.0`; §6.1: a known transfer encoding, and a `7bit`
///   body is ASCII;
/// - the text is `text/plain` in UTF-8.
pub fn check_strictly(raw: &str) -> Result<String, String> {
    for (i, line) in raw.split_inclusive('\n').enumerate() {
        let Some(content) = line.strip_suffix("\r\n") else {
            return Err(format!("line {} does not end with CRLF: {line:?}", i + 1));
        };
        if content.contains(['\r', '\n']) {
            return Err(format!("line {} has a bare CR or LF", i + 1));
        }
        if content.len() > 998 {
            return Err(format!("line {} is longer than 998 characters", i + 1));
        }
    }
    let mail = mailparse::parse_mail(raw.as_bytes()).map_err(|e| format!("mailparse: {e}"))?;
    let header_end = raw
        .find("\r\n\r\n")
        .ok_or("no empty line after the header")?;
    if !raw[..header_end].is_ascii() {
        return Err("the header has raw non-ASCII characters".into());
    }
    let count = |name: &str| mail.headers.get_all_headers(name).len();
    for (name, min, max) in [
        ("Date", 1, 1),
        ("From", 1, 1),
        ("Message-ID", 0, 1),
        ("Subject", 0, 1),
        ("To", 0, 1),
        ("MIME-Version", 0, 1),
        ("Content-Type", 0, 1),
        ("Content-Transfer-Encoding", 0, 1),
    ] {
        let n = count(name);
        if n < min || n > max {
            return Err(format!(
                "{n} {name} header fields (RFC 5322 §3.6 / RFC 2045)"
            ));
        }
    }
    let has_mime_headers = mail
        .headers
        .iter()
        .any(|h| h.get_key().to_ascii_lowercase().starts_with("content-"));
    let version = mail.headers.get_first_value("MIME-Version");
    if has_mime_headers || version.is_some() {
        // A comment may follow the version (RFC 2045 §4).
        let v = version.ok_or("Content-* headers without MIME-Version (RFC 2045 §4)")?;
        let bare: String = v
            .split('(')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if bare != "1.0" {
            return Err(format!("MIME-Version is {v:?}, not 1.0"));
        }
    }
    let encoding = mail
        .headers
        .get_first_value("Content-Transfer-Encoding")
        .unwrap_or_else(|| "7bit".into())
        .trim()
        .to_ascii_lowercase();
    let body_start = header_end + 4;
    match encoding.as_str() {
        "7bit" if !raw[body_start..].is_ascii() => {
            return Err("a 7bit body with non-ASCII bytes".into())
        }
        "7bit" | "8bit" | "binary" | "quoted-printable" | "base64" => {}
        other => return Err(format!("unknown Content-Transfer-Encoding {other:?}")),
    }
    if mail.ctype.mimetype != "text/plain" || !mail.ctype.charset.eq_ignore_ascii_case("utf-8") {
        return Err(format!(
            "content type {} charset {}, not text/plain in UTF-8",
            mail.ctype.mimetype, mail.ctype.charset
        ));
    }
    mail.get_body()
        .map_err(|e| format!("the body cannot be decoded: {e}"))
}
