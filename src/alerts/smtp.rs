//! A small SMTP submission client (RFC 5321) over tokio: `EHLO`, `STARTTLS` (RFC 3207, rustls
//! on the ring provider, certificates checked against the platform's roots or a configured CA
//! file), `AUTH PLAIN` or `AUTH LOGIN` (RFC 4954), `MAIL FROM`, `RCPT TO`, `DATA` with
//! dot-stuffing, `QUIT`. One plain-text message per connection.
//!
//! Written here rather than taken from `lettre`: cashloop sends one kind of message (plain
//! text, a few recipients) and already has tokio and rustls on ring; `lettre` would add its
//! own address parser, MIME builder and TLS feature matrix (its rustls feature defaults to
//! the aws-lc-rs provider, which this workspace avoids) for ~300 lines of protocol.
//!
//! Secrets: the password is only ever written to the socket, base64-encoded inside `AUTH`;
//! errors carry the server's reply and the stage, never what was sent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain TCP, then `STARTTLS` before anything else; refusing servers fail.
    StartTls,
    /// Plain TCP throughout (a local relay). Credentials are refused by the configuration
    /// unless the host is a loopback address.
    Plain,
}

/// Where and how to send.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<Arc<zeroize::Zeroizing<String>>>,
    pub from: String,
    pub to: Vec<String>,
    /// The name given in `EHLO`.
    pub helo_name: String,
    pub timeout: Duration,
    /// The TLS client configuration for `STARTTLS`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// A send that failed: at which step, and what the server said (or the I/O error).
#[derive(Debug, thiserror::Error)]
#[error("smtp {stage}: {message}")]
pub struct SmtpError {
    pub stage: &'static str,
    pub message: String,
    /// A 4xx reply or a connection problem: worth trying again later.
    pub transient: bool,
}

fn io_err(stage: &'static str, e: impl fmt::Display) -> SmtpError {
    SmtpError {
        stage,
        message: e.to_string(),
        transient: true,
    }
}

/// A plain-text message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
    /// `Message-ID` left part (unique per alert notice).
    pub id: String,
}

/// The whole message as sent after `DATA` (headers and body, CRLF line ends, not yet
/// dot-stuffed).
pub fn render(
    settings: &SmtpSettings,
    message: &Message,
    date: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = String::new();
    let header = |out: &mut String, name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&header_value(value));
        out.push_str("\r\n");
    };
    header(&mut out, "From", &settings.from);
    header(&mut out, "To", &settings.to.join(", "));
    header(&mut out, "Subject", &encode_word(&message.subject));
    header(&mut out, "Date", &date.to_rfc2822());
    let domain = settings
        .from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .unwrap_or("cashloop.invalid");
    header(
        &mut out,
        "Message-ID",
        &format!("<{}@{}>", message.id, domain),
    );
    header(&mut out, "MIME-Version", "1.0");
    header(&mut out, "Content-Type", "text/plain; charset=utf-8");
    header(&mut out, "Content-Transfer-Encoding", "8bit");
    header(&mut out, "Auto-Submitted", "auto-generated");
    out.push_str("\r\n");
    for line in message.body.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// A header value on one line: CR and LF (header injection) become spaces.
fn header_value(v: &str) -> String {
    v.chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect()
}

/// RFC 2047 `=?utf-8?B?…?=` when the text is not plain ASCII.
fn encode_word(s: &str) -> String {
    if s.is_ascii() {
        return s.to_owned();
    }
    format!("=?utf-8?B?{}?=", B64.encode(s.as_bytes()))
}

/// Dot-stuffing (RFC 5321 §4.5.2) and the terminating `.` line.
fn dot_stuff(data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 8);
    for line in data.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    stream: BufReader<Box<dyn Io>>,
}

/// A reply: its code and its text lines.
struct Reply {
    code: u16,
    text: String,
}

impl Conn {
    async fn reply(&mut self, stage: &'static str) -> Result<Reply, SmtpError> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .stream
                .read_line(&mut line)
                .await
                .map_err(|e| io_err(stage, e))?;
            if n == 0 {
                return Err(io_err(stage, "connection closed by the server"));
            }
            if line.len() > 2_048 {
                return Err(io_err(stage, "reply line too long"));
            }
            let l = line.trim_end();
            let code: u16 = l
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| io_err(stage, format!("not an SMTP reply: {:?}", cut(l))))?;
            text.push_str(l.get(4..).unwrap_or(""));
            text.push('\n');
            if text.len() > 8_192 {
                return Err(io_err(stage, "reply too long"));
            }
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.trim_end().to_owned(),
                });
            }
        }
    }

    async fn write(&mut self, stage: &'static str, data: &[u8]) -> Result<(), SmtpError> {
        let s = self.stream.get_mut();
        s.write_all(data).await.map_err(|e| io_err(stage, e))?;
        s.flush().await.map_err(|e| io_err(stage, e))
    }

    /// Sends `line` (CRLF added) and expects a reply in `want`.
    async fn command(
        &mut self,
        stage: &'static str,
        line: &str,
        want: &[u16],
    ) -> Result<Reply, SmtpError> {
        self.write(stage, format!("{line}\r\n").as_bytes()).await?;
        self.expect(stage, want).await
    }

    async fn expect(&mut self, stage: &'static str, want: &[u16]) -> Result<Reply, SmtpError> {
        let r = self.reply(stage).await?;
        if want.contains(&r.code) {
            Ok(r)
        } else {
            Err(SmtpError {
                stage,
                message: format!(
                    "server answered {} {}",
                    r.code,
                    cut(&r.text.replace('\n', " "))
                ),
                transient: (400..500).contains(&r.code),
            })
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(300).collect()
}

/// An address for `MAIL FROM` / `RCPT TO`: the part in `<…>` if any.
fn bare_address(a: &str) -> &str {
    match (a.find('<'), a.rfind('>')) {
        (Some(i), Some(j)) if i < j => &a[i + 1..j],
        _ => a.trim(),
    }
}

/// Sends `message` to every `to` address, within `settings.timeout`.
pub async fn send(settings: &SmtpSettings, message: &Message) -> Result<(), SmtpError> {
    match tokio::time::timeout(settings.timeout, send_inner(settings, message)).await {
        Ok(r) => r,
        Err(_) => Err(io_err(
            "timeout",
            format!("no complete exchange within {:?}", settings.timeout),
        )),
    }
}

async fn send_inner(settings: &SmtpSettings, message: &Message) -> Result<(), SmtpError> {
    let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| {
            io_err(
                "connect",
                format!("{}:{}: {e}", settings.host, settings.port),
            )
        })?;
    let mut conn = Conn {
        stream: BufReader::new(Box::new(tcp)),
    };
    conn.expect("greeting", &[220]).await?;
    let ehlo = format!("EHLO {}", settings.helo_name);
    let mut caps = conn.command("ehlo", &ehlo, &[250]).await?;
    if settings.security == Security::StartTls {
        if !has_cap(&caps.text, "STARTTLS") {
            return Err(SmtpError {
                stage: "starttls",
                message: "the server does not offer STARTTLS".into(),
                transient: false,
            });
        }
        conn.command("starttls", "STARTTLS", &[220]).await?;
        // Anything the server sent before the handshake would be read as if it came over
        // TLS (the STARTTLS injection attack): refuse it.
        if !conn.stream.buffer().is_empty() {
            return Err(io_err("starttls", "data received before the TLS handshake"));
        }
        let tls = settings.tls.clone().ok_or_else(|| SmtpError {
            stage: "starttls",
            message: "no TLS configuration".into(),
            transient: false,
        })?;
        let name = rustls::pki_types::ServerName::try_from(settings.host.clone())
            .map_err(|e| io_err("starttls", format!("server name: {e}")))?;
        let plain = conn.stream.into_inner();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, plain)
            .await
            .map_err(|e| SmtpError {
                stage: "starttls",
                message: format!("TLS handshake: {e}"),
                transient: false,
            })?;
        conn = Conn {
            stream: BufReader::new(Box::new(stream)),
        };
        caps = conn.command("ehlo", &ehlo, &[250]).await?;
    }
    if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
        let auth = auth_mechanisms(&caps.text);
        if auth.iter().any(|m| m == "PLAIN") {
            let token = zeroize::Zeroizing::new(format!("\0{user}\0{}", password.as_str()));
            let line =
                zeroize::Zeroizing::new(format!("AUTH PLAIN {}\r\n", B64.encode(token.as_bytes())));
            conn.write("auth", line.as_bytes()).await?;
            conn.expect("auth", &[235]).await?;
        } else if auth.iter().any(|m| m == "LOGIN") {
            conn.command("auth", "AUTH LOGIN", &[334]).await?;
            conn.command("auth", &B64.encode(user.as_bytes()), &[334])
                .await?;
            let line = zeroize::Zeroizing::new(format!("{}\r\n", B64.encode(password.as_bytes())));
            conn.write("auth", line.as_bytes()).await?;
            conn.expect("auth", &[235]).await?;
        } else {
            return Err(SmtpError {
                stage: "auth",
                message: format!("no supported AUTH mechanism offered ({})", auth.join(" ")),
                transient: false,
            });
        }
    }
    conn.command(
        "mail",
        &format!(
            "MAIL FROM:<{}>",
            bare_address(&header_value(&settings.from))
        ),
        &[250],
    )
    .await?;
    for to in &settings.to {
        conn.command(
            "rcpt",
            &format!("RCPT TO:<{}>", bare_address(&header_value(to))),
            &[250, 251],
        )
        .await?;
    }
    conn.command("data", "DATA", &[354]).await?;
    let data = dot_stuff(&render(settings, message, chrono::Utc::now()));
    conn.write("data", data.as_bytes()).await?;
    conn.expect("data", &[250]).await?;
    // The message is accepted; a failed QUIT changes nothing.
    let _ = conn.command("quit", "QUIT", &[221]).await;
    Ok(())
}

/// Whether an EHLO reply (its lines joined by `\n`) lists the extension `cap`.
fn has_cap(ehlo_text: &str, cap: &str) -> bool {
    ehlo_text.lines().skip(1).any(|l| {
        l.split([' ', '='])
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case(cap))
    })
}

/// The SASL mechanisms of an EHLO reply's `AUTH` line (upper case).
fn auth_mechanisms(ehlo_text: &str) -> Vec<String> {
    ehlo_text
        .lines()
        .skip(1)
        .find_map(|l| {
            let (k, rest) = l.split_at(l.find([' ', '=']).unwrap_or(l.len()));
            k.eq_ignore_ascii_case("AUTH").then(|| {
                rest.split([' ', '='])
                    .filter(|m| !m.is_empty())
                    .map(str::to_ascii_uppercase)
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The TLS client configuration: the platform's roots, or only the certificates in
/// `ca_pem` (a private relay's CA).
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match ca_pem {
        Some(pem) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not PEM: {e}"))?;
                roots.add(cert).map_err(|e| e.to_string())?;
                n += 1;
            }
            if n == 0 {
                return Err("no certificate found".into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| e.to_string())?
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_headers() {
        assert_eq!(dot_stuff("a\r\n.b\r\n"), "a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff("a"), "a\r\n.\r\n");
        assert_eq!(header_value("x\r\nBcc: y"), "x  Bcc: y");
        assert_eq!(encode_word("ok"), "ok");
        assert!(encode_word("déjà").starts_with("=?utf-8?B?"));
        assert_eq!(bare_address("Ops <ops@example.com>"), "ops@example.com");
        assert_eq!(bare_address(" ops@example.com "), "ops@example.com");
        let ehlo = "sink greets you\nPIPELINING\nAUTH LOGIN PLAIN\nSTARTTLS";
        assert!(has_cap(ehlo, "starttls"));
        assert!(!has_cap(ehlo, "greets"));
        assert_eq!(auth_mechanisms(ehlo), vec!["LOGIN", "PLAIN"]);
        assert_eq!(auth_mechanisms("x\nAUTH=LOGIN"), vec!["LOGIN"]);
        assert!(auth_mechanisms("x\n8BITMIME").is_empty());
    }
}
