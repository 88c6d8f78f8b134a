//! Alerts: rules evaluated against the database, notices sent by SMTP to a local sink (a
//! tokio server speaking EHLO, STARTTLS with a self-signed certificate, AUTH PLAIN / LOGIN,
//! MAIL, RCPT, DATA) and as Salesforce custom notifications to the simulator; deduplication,
//! the rate limit and the once-only claim across two evaluators, on SQLite and PostgreSQL.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use cashloop::alerts::{Alerter, Report};
use sync::jobs::{JobError, Jobs, NewJob};
use sync::salesforce::simulator::{SIM_NOTIFICATION_TYPE_ID, Simulator, SimulatorConfig};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::*;

const SMTP_USER: &str = "alerts";
const SMTP_PASSWORD: &str = "sink-Pa55word-q81x";
const RECIPIENT: &str = "0055g00000HumanAAA";
const CARD: &str = "4111 1111 1111 1111";

/// One message the sink accepted.
#[derive(Clone, Debug)]
struct Captured {
    from: String,
    rcpt: Vec<String>,
    data: String,
    tls: bool,
    user: Option<String>,
}

impl Captured {
    fn subject(&self) -> String {
        self.data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned()
    }
}

struct SinkState {
    messages: Mutex<Vec<Captured>>,
    /// The next sessions answer `451` to `MAIL FROM`, one each.
    fail_next: AtomicU32,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Offer `AUTH LOGIN` only (not PLAIN).
    login_only: std::sync::atomic::AtomicBool,
}

/// A local SMTP server that captures what it is sent.
#[derive(Clone)]
struct Sink {
    addr: SocketAddr,
    state: Arc<SinkState>,
    /// The CA file clients must trust (the sink's self-signed certificate).
    ca_file: Option<std::path::PathBuf>,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Sink {
    /// Listens on 127.0.0.1:0; with `dir`, offers STARTTLS with a certificate written there.
    async fn start(dir: Option<&std::path::Path>) -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tls, ca_file) = match dir {
            Some(d) => {
                let cert = test_cert(d);
                let settings = cashloop::tls::TlsSettings::load(&cert.cert_file, &cert.key_file)
                    .expect("sink certificate");
                (
                    Some(tokio_rustls::TlsAcceptor::from(settings.server_config)),
                    Some(cert.cert_file),
                )
            }
            None => (None, None),
        };
        let state = Arc::new(SinkState {
            messages: Mutex::new(Vec::new()),
            fail_next: AtomicU32::new(0),
            tls,
            login_only: std::sync::atomic::AtomicBool::new(false),
        });
        let s = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(session(s.clone(), tcp));
            }
        });
        Sink {
            addr,
            state,
            ca_file,
        }
    }

    fn messages(&self) -> Vec<Captured> {
        self.state.messages.lock().unwrap().clone()
    }

    fn fail_next(&self, n: u32) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }
}

async fn read_line(io: &mut BufReader<Box<dyn Io>>) -> Option<String> {
    let mut line = String::new();
    match io.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

async fn say(io: &mut BufReader<Box<dyn Io>>, text: &str) {
    let _ = io.get_mut().write_all(text.as_bytes()).await;
    let _ = io.get_mut().flush().await;
}

fn check_login(state: &SinkState, user: &str, pass: &str) -> bool {
    let _ = state;
    user == SMTP_USER && pass == SMTP_PASSWORD
}

async fn session(state: Arc<SinkState>, tcp: tokio::net::TcpStream) {
    let mut io: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tcp));
    let mut tls = false;
    let mut user: Option<String> = None;
    let mut from = String::new();
    let mut rcpt = Vec::new();
    say(&mut io, "220 sink.test ESMTP ready\r\n").await;
    while let Some(line) = read_line(&mut io).await {
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO ") {
            let mut reply = String::from("250-sink.test greets you\r\n");
            if state.tls.is_some() && !tls {
                reply.push_str("250-STARTTLS\r\n");
            }
            if state.login_only.load(Ordering::SeqCst) {
                reply.push_str("250-AUTH LOGIN\r\n250 8BITMIME\r\n");
            } else {
                reply.push_str("250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n");
            }
            say(&mut io, &reply).await;
        } else if upper == "STARTTLS" {
            let Some(acceptor) = state.tls.clone().filter(|_| !tls) else {
                say(&mut io, "502 5.5.1 not now\r\n").await;
                continue;
            };
            say(&mut io, "220 2.0.0 go ahead\r\n").await;
            let Ok(stream) = acceptor.accept(io.into_inner()).await else {
                return;
            };
            io = BufReader::new(Box::new(stream));
            tls = true;
        } else if let Some(token) = cmd.strip_prefix("AUTH PLAIN ") {
            let decoded = B64.decode(token.trim()).unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if parts.len() == 3 && check_login(&state, &parts[1], &parts[2]) {
                user = Some(parts[1].clone());
                say(&mut io, "235 2.7.0 accepted\r\n").await;
            } else {
                say(&mut io, "535 5.7.8 authentication credentials invalid\r\n").await;
            }
        } else if upper == "AUTH LOGIN" {
            say(&mut io, "334 VXNlcm5hbWU6\r\n").await;
            let u = read_line(&mut io).await.unwrap_or_default();
            say(&mut io, "334 UGFzc3dvcmQ6\r\n").await;
            let p = read_line(&mut io).await.unwrap_or_default();
            let u = String::from_utf8_lossy(&B64.decode(u.trim()).unwrap_or_default()).into_owned();
            let p = String::from_utf8_lossy(&B64.decode(p.trim()).unwrap_or_default()).into_owned();
            if check_login(&state, &u, &p) {
                user = Some(u);
                say(&mut io, "235 2.7.0 accepted\r\n").await;
            } else {
                say(&mut io, "535 5.7.8 authentication credentials invalid\r\n").await;
            }
        } else if let Some(a) = upper.strip_prefix("MAIL FROM:") {
            let _ = a;
            let failing = state
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                say(&mut io, "451 4.3.0 mailbox temporarily unavailable\r\n").await;
            } else {
                from = cmd["MAIL FROM:".len()..].to_owned();
                say(&mut io, "250 2.1.0 ok\r\n").await;
            }
        } else if upper.starts_with("RCPT TO:") {
            rcpt.push(cmd["RCPT TO:".len()..].to_owned());
            say(&mut io, "250 2.1.5 ok\r\n").await;
        } else if upper == "DATA" {
            say(&mut io, "354 end with <CRLF>.<CRLF>\r\n").await;
            let mut data = String::new();
            while let Some(l) = read_line(&mut io).await {
                if l == ".\r\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            state.messages.lock().unwrap().push(Captured {
                from: std::mem::take(&mut from),
                rcpt: std::mem::take(&mut rcpt),
                data,
                tls,
                user: user.clone(),
            });
            say(&mut io, "250 2.0.0 queued\r\n").await;
        } else if upper == "QUIT" {
            say(&mut io, "221 2.0.0 bye\r\n").await;
            return;
        } else {
            say(&mut io, "502 5.5.2 unknown command\r\n").await;
        }
    }
}

/// The Salesforce simulator, with the org's default notification type.
async fn simulator() -> Simulator {
    Simulator::start(SimulatorConfig::default()).await
}

/// `[sync.salesforce]` (client credentials against the simulator) and `[alerts]` with both
/// channels; `smtp_extra` and `rules` are appended to their sections.
fn alerts_toml(
    db_url: &str,
    dir: &std::path::Path,
    sink: &Sink,
    sim: &Simulator,
    password: &str,
    rules: &str,
) -> String {
    let secret = dir.join("sf-secret");
    std::fs::write(&secret, &sim.config().client_secret).unwrap();
    let pass = dir.join(format!("smtp-pass-{}", password.len()));
    std::fs::write(&pass, password).unwrap();
    let (security, ca) = match &sink.ca_file {
        Some(f) => (
            "starttls",
            format!("ca_file = {:?}\n", f.display().to_string()),
        ),
        None => ("plain", String::new()),
    };
    format!(
        r#"database_url = "{db_url}"
[sync.salesforce]
login_url = "{login}"
auth = {{ kind = "client_credentials", client_id = "{cid}", client_secret = {{ file = {secret:?} }} }}
[alerts]
interval_s = 1
notify_resolved = true
[alerts.smtp]
host = "127.0.0.1"
port = {port}
security = "{security}"
username = "{SMTP_USER}"
password = {{ file = {pass:?} }}
from = "cashloop alerts <alerts@cashloop.test>"
to = ["ops@example.com", "Finance <finance@example.com>"]
timeout_ms = 5000
{ca}[alerts.salesforce]
notification_type_id = "{SIM_NOTIFICATION_TYPE_ID}"
recipient_ids = ["{RECIPIENT}"]
{rules}"#,
        login = sim.base_url(),
        cid = sim.config().client_id,
        secret = secret.display().to_string(),
        port = sink.addr.port(),
        pass = pass.display().to_string(),
    )
}

fn parse(toml: &str) -> Config {
    let fig = Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml));
    Config::from_figment(fig).expect("alerts test config")
}

fn alerter(db: &db::Db, config: &Config, instance: &str) -> Alerter {
    Alerter::new(
        db.clone(),
        config.alerts.clone().expect("[alerts]"),
        config.sync.salesforce.as_ref().map(|s| s.client.clone()),
    )
    .with_instance(instance)
}

/// A job that failed permanently (the error queue); its id.
async fn dead_job(db: &db::Db, kind: &str, error: &str) -> i64 {
    let jobs = Jobs::new(db.clone());
    let id = jobs
        .enqueue(NewJob::new(kind, json!({"n": 1})))
        .await
        .unwrap()
        .unwrap();
    for job in jobs
        .claim("test-worker", &[kind], 100, Duration::from_secs(60))
        .await
        .unwrap()
    {
        jobs.fail(&job, &JobError::Permanent(error.to_owned()))
            .await
            .unwrap();
    }
    assert_eq!(jobs.get(id).await.unwrap().status, "dead");
    id
}

const JOB_DEAD_RULE: &str = "[[alerts.rules]]\nkind = \"job_dead\"\n";

db::both_backends!(
    a_dead_job_sends_one_email_and_one_notification,
    |t| async move {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start(Some(dir.path())).await;
        let sim = simulator().await;
        let rules = format!(
            "{JOB_DEAD_RULE}[[alerts.rules]]\nkind = \"error_queue\"\nthreshold = 5\n[[alerts.rules]]\nkind = \"reconcile_exceptions\"\n"
        );
        let config = parse(&alerts_toml(
            &t.url,
            dir.path(),
            &sink,
            &sim,
            SMTP_PASSWORD,
            &rules,
        ));
        let a = alerter(&t.db, &config, "node-a");

        // Nothing wrong: nothing sent.
        assert_eq!(a.evaluate_once().await, Report::default());

        let id = dead_job(
            &t.db,
            "intacct.push_invoice",
            &format!("processor said: card {CARD} declined (INVALID_FIELD)"),
        )
        .await;
        let r = a.evaluate_once().await;
        assert_eq!(
            (r.firing, r.sent, r.failed, r.suppressed),
            (1, 1, 0, 0),
            "{r:?}"
        );

        let mail = sink.messages();
        assert_eq!(mail.len(), 1);
        let m = &mail[0];
        assert!(m.tls, "sent after STARTTLS");
        assert_eq!(m.user.as_deref(), Some(SMTP_USER));
        assert_eq!(m.from, "<alerts@cashloop.test>");
        assert_eq!(m.rcpt, vec!["<ops@example.com>", "<finance@example.com>"]);
        assert_eq!(
            m.subject(),
            format!("[cashloop] Sync job {id} (intacct.push_invoice) is dead")
        );
        assert!(
            m.data
                .contains("To: ops@example.com, Finance <finance@example.com>\r\n"),
            "{}",
            m.data
        );
        assert!(
            m.data.contains(&format!(
                "job {id} (intacct.push_invoice), 1 attempt(s), permanent error"
            )),
            "{}",
            m.data
        );
        assert!(
            m.data.contains(&format!("cashloop sync retry {id}")),
            "{}",
            m.data
        );
        assert!(
            m.data.contains("Rule: job_dead (job_dead), subject: job:"),
            "{}",
            m.data
        );
        assert!(m.data.contains("card [redacted] declined"), "{}", m.data);
        assert!(
            !m.data.contains("4111"),
            "no card number in an alert: {}",
            m.data
        );
        assert!(!m.data.contains(SMTP_PASSWORD));

        let notes = sim.notifications();
        assert_eq!(notes.len(), 1);
        let n = &notes[0];
        assert_eq!(n.custom_notif_type_id, SIM_NOTIFICATION_TYPE_ID);
        assert_eq!(n.recipient_ids, vec![RECIPIENT]);
        assert_eq!(
            n.title,
            format!("cashloop: Sync job {id} (intacct.push_invoice) is dead")
        );
        assert!(
            n.body.contains("card [redacted] declined") && !n.body.contains("4111"),
            "{}",
            n.body
        );
        assert!(n.body.chars().count() <= 750);
        assert_eq!(n.target_id.as_deref(), Some("000000000000000AAA"));

        // The same condition on the next evaluations: nothing new (deduplicated).
        for _ in 0..2 {
            let r = a.evaluate_once().await;
            assert_eq!((r.firing, r.sent, r.failed), (1, 0, 0), "{r:?}");
        }
        assert_eq!(sink.messages().len(), 1);
        assert_eq!(sim.notifications().len(), 1);

        // Resolved by an operator: the alert clears, with a "resolved" notice.
        Jobs::new(t.db.clone())
            .resolve(id, "ops", "fixed by hand")
            .await
            .unwrap();
        let r = a.evaluate_once().await;
        assert_eq!((r.firing, r.sent, r.resolved), (0, 0, 1), "{r:?}");
        let mail = sink.messages();
        assert_eq!(mail.len(), 2);
        assert_eq!(
            mail[1].subject(),
            format!("[cashloop] Resolved: Sync job {id} (intacct.push_invoice) is dead")
        );
        assert_eq!(sim.notifications().len(), 2);
        assert_eq!(a.evaluate_once().await, Report::default());

        // Six dead jobs cross the error-queue threshold: one notice for the queue, one per job.
        for _ in 0..6 {
            dead_job(&t.db, "salesforce.pull", "INVALID_FIELD: No such column").await;
        }
        let r = a.evaluate_once().await;
        assert_eq!((r.firing, r.sent), (7, 7), "{r:?}");
        let mail = sink.messages();
        let queue: Vec<&Captured> = mail
            .iter()
            .filter(|m| m.subject() == "[cashloop] Error queue: 6 dead sync jobs")
            .collect();
        assert_eq!(
            queue.len(),
            1,
            "{:?}",
            mail.iter().map(Captured::subject).collect::<Vec<_>>()
        );
        assert!(
            queue[0]
                .data
                .contains("6 sync jobs are in the error queue (threshold 5)")
        );
        assert_eq!(a.evaluate_once().await.sent, 0);
    }
);

db::both_backends!(the_rate_limit_holds, |t| async move {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    let sim = simulator().await;
    let rules = "[[alerts.rules]]\nkind = \"job_dead\"\nmax_per_hour = 2\n";
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        rules,
    ));
    let a = alerter(&t.db, &config, "node-a");
    for _ in 0..4 {
        dead_job(&t.db, "q2c.invoice", "REQUIRED_FIELD_MISSING").await;
    }
    let r = a.evaluate_once().await;
    assert_eq!((r.firing, r.sent, r.suppressed), (4, 2, 2), "{r:?}");
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(sim.notifications().len(), 2);
    // Suppressed notices are not sent later, and a new condition within the hour is
    // suppressed too.
    dead_job(&t.db, "q2c.invoice", "REQUIRED_FIELD_MISSING").await;
    let r = a.evaluate_once().await;
    assert_eq!((r.firing, r.sent, r.suppressed), (5, 0, 1), "{r:?}");
    assert_eq!(a.evaluate_once().await.suppressed, 0);
    assert_eq!(sink.messages().len(), 2);
    assert_eq!(sim.notifications().len(), 2);
    // A second process shares the limit (it lives in the database).
    let b = alerter(&t.db, &config, "node-b");
    dead_job(&t.db, "q2c.invoice", "REQUIRED_FIELD_MISSING").await;
    let r = b.evaluate_once().await;
    assert_eq!((r.sent, r.suppressed), (0, 1), "{r:?}");
    assert_eq!(sink.messages().len(), 2);
});

db::both_backends!(two_evaluators_on_one_database_send_once, |t| async move {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    let sim = simulator().await;
    let rules = format!("{JOB_DEAD_RULE}[[alerts.rules]]\nkind = \"error_queue\"\nthreshold = 1\n");
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        &rules,
    ));
    // Two "processes": separate pools on the same database.
    let other = db::Db::connect(&t.url, &db::DbOptions::default())
        .await
        .unwrap();
    let a = alerter(&t.db, &config, "node-a");
    let b = alerter(&other, &config, "node-b");
    let mut want = 0;
    for round in 0..3 {
        for _ in 0..3 {
            dead_job(&t.db, "salesforce.push", "DUPLICATE_VALUE").await;
        }
        // Three new jobs, plus the queue alert on the first round.
        want += if round == 0 { 4 } else { 3 };
        for _ in 0..2 {
            let (ra, rb) = tokio::join!(a.evaluate_once(), b.evaluate_once());
            assert_eq!(ra.failed + rb.failed, 0, "{ra:?} {rb:?}");
        }
        let mail = sink.messages();
        assert_eq!(mail.len(), want, "round {round}");
        let subjects: std::collections::BTreeSet<String> =
            mail.iter().map(Captured::subject).collect();
        assert_eq!(subjects.len(), want, "no subject twice: {subjects:?}");
        assert_eq!(sim.notifications().len(), want, "round {round}");
    }
    let senders = db::testing::table_text(&t.db, "alert_log", "id").await;
    assert_eq!(senders.matches("sent").count(), want, "{senders}");
    other.close().await;
});

/// Logs written while the guard lives on this thread (the test runs on one thread).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn smtp_failure_is_retried_next_interval_and_logged_without_the_password() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    let sim = simulator().await;
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        JOB_DEAD_RULE,
    ));
    let a = alerter(&t.db, &config, "node-a");
    let id = dead_job(&t.db, "intacct.push_payment", "invalid customer").await;

    // The relay refuses for now: the email fails, the Salesforce notification goes out.
    sink.fail_next(1);
    let r = a.evaluate_once().await;
    assert_eq!((r.sent, r.failed), (0, 1), "{r:?}");
    assert!(sink.messages().is_empty());
    assert_eq!(sim.notifications().len(), 1);
    let text = logs.text();
    assert!(text.contains("alert delivery failed"), "{text}");
    assert!(text.contains("smtp mail: server answered 451"), "{text}");
    let state = testing::table_text(&t.db, "alert_state", "subject").await;
    assert!(state.contains("451"), "{state}");

    // The next interval retries the email only.
    let r = a.evaluate_once().await;
    assert_eq!((r.sent, r.failed), (1, 0), "{r:?}");
    let mail = sink.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].subject().contains(&format!("Sync job {id}")));
    assert_eq!(
        sim.notifications().len(),
        1,
        "the notification is not sent twice"
    );
    assert_eq!(a.evaluate_once().await.sent, 0);

    // A wrong password: refused at AUTH, logged and stored without the password.
    let wrong = "Wr0ng-pa55-zz9";
    let bad = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        wrong,
        JOB_DEAD_RULE,
    ));
    let b = alerter(&t.db, &bad, "node-b");
    dead_job(&t.db, "intacct.push_payment", "invalid customer").await;
    let r = b.evaluate_once().await;
    assert_eq!(r.failed, 1, "{r:?}");
    let text = logs.text();
    assert!(text.contains("smtp auth: server answered 535"), "{text}");
    let state = testing::table_text(&t.db, "alert_state", "subject").await
        + &testing::table_text(&t.db, "alert_log", "id").await;
    for secret in [SMTP_PASSWORD, wrong] {
        assert!(!text.contains(secret), "password in the logs: {text}");
        assert!(!state.contains(secret), "password in the database: {state}");
        let token = B64.encode(format!("\0{SMTP_USER}\0{secret}"));
        assert!(!text.contains(&token) && !state.contains(&token));
    }
    // Debug output of the configuration hides the password too.
    assert!(!format!("{bad:?}").contains(wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_when_plain_is_not_offered() {
    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    sink.state.login_only.store(true, Ordering::SeqCst);
    let sim = simulator().await;
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        JOB_DEAD_RULE,
    ));
    dead_job(&t.db, "salesforce.push", "boom").await;
    let r = alerter(&t.db, &config, "node-a").evaluate_once().await;
    assert_eq!((r.sent, r.failed), (1, 0), "{r:?}");
    let mail = sink.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].tls);
    assert_eq!(mail[0].user.as_deref(), Some(SMTP_USER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_notification_is_retried_without_resending_the_email() {
    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    let sim = Simulator::start(SimulatorConfig {
        notification_type_ids: vec!["0ML5g0000000OthAAA".into()],
        ..SimulatorConfig::default()
    })
    .await;
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        JOB_DEAD_RULE,
    ));

    // The client sees Salesforce's error for an unknown notification type.
    let client = config.sync.salesforce.as_ref().unwrap().client.clone();
    let n = sync::salesforce::CustomNotification {
        custom_notif_type_id: SIM_NOTIFICATION_TYPE_ID.into(),
        recipient_ids: vec![RECIPIENT.into()],
        title: "t".into(),
        body: "b".into(),
        target_id: "000000000000000AAA".into(),
    };
    match client.send_custom_notification(&n).await {
        Err(sync::salesforce::SalesforceError::Api {
            status: 400,
            errors,
        }) => {
            assert_eq!(errors[0].error_code, "INVALID_PARAMETER_VALUE");
            assert!(
                errors[0].message.contains("customNotifTypeId"),
                "{errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(sim.notifications().is_empty());

    let a = alerter(&t.db, &config, "node-a");
    dead_job(&t.db, "salesforce.push", "boom").await;
    for _ in 0..3 {
        let r = a.evaluate_once().await;
        assert_eq!((r.sent, r.failed), (0, 1), "{r:?}");
    }
    assert_eq!(sink.messages().len(), 1, "the email went out once");
    let state = testing::table_text(&t.db, "alert_state", "subject").await;
    assert!(state.contains("INVALID_PARAMETER_VALUE"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_alerts_through_a_plain_local_relay() {
    let t = testing::sqlite().await;
    let sink = Sink::start(None).await;
    let config = config_with(&t.url, |toml| {
        format!(
            "{toml}\n[alerts]\ninterval_s = 1\n[alerts.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nfrom = \"alerts@cashloop.test\"\nto = [\"ops@example.com\"]\n[[alerts.rules]]\nkind = \"job_dead\"\n[[alerts.rules]]\nkind = \"chain_verification\"\nevery_s = 1\n",
            sink.addr.port()
        )
    });
    let app = App::spawn_config(config).await;
    let id = dead_job(&t.db, "q2c.invoice", "REQUIRED_FIELD_MISSING: Amount").await;
    let mut mail = Vec::new();
    for _ in 0..100 {
        mail = sink.messages();
        if !mail.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mail.len(), 1, "an alert within seconds");
    assert!(!mail[0].tls && mail[0].user.is_none());
    assert_eq!(
        mail[0].subject(),
        format!("[cashloop] Sync job {id} (q2c.invoice) is dead")
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sink.messages().len(), 1, "not sent again");
    app.stop().await;
}

#[test]
fn alert_config_errors_name_the_key() {
    let check = |toml: &str, key: &str| {
        let fig =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml));
        match Config::from_figment(fig) {
            Err(e) => {
                assert_eq!(e.key, key, "{toml}: {e}");
                assert!(e.to_string().contains(key), "{e}");
            }
            Ok(_) => panic!("{toml}: accepted, want an error on {key}"),
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret = secret.display().to_string();
    let smtp = "[alerts.smtp]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n";
    let sf = format!(
        "[sync.salesforce]\nlogin_url = \"https://login.salesforce.com\"\nauth = {{ kind = \"client_credentials\", client_id = \"x\", client_secret = {{ file = {secret:?} }} }}\n"
    );
    let ok = |toml: &str| {
        let fig =
            Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(toml));
        Config::from_figment(fig).unwrap_or_else(|e| panic!("{toml}: {e}"))
    };
    let c = ok(&format!(
        "[alerts]\n{smtp}[[alerts.rules]]\nkind = \"job_dead\"\n"
    ));
    let a = c.alerts.unwrap();
    assert_eq!(a.interval, Duration::from_secs(60));
    assert_eq!(a.rules[0].max_per_hour, 10);
    ok(&format!(
        "{sf}[alerts]\n[alerts.salesforce]\nnotification_type_id = \"0ML5g0000000SimAAA\"\nrecipient_ids = [\"0055g00000HumanAAA\"]\n[[alerts.rules]]\nkind = \"chain_verification\"\nevery_s = 600\n"
    ));

    check("[alerts]\ninterval_s = 0", "alerts.interval_s");
    check("[alerts]\n[[alerts.rules]]\nkind = \"job_dead\"", "alerts");
    check("[alerts]\nintervall_s = 5", "alerts.intervall_s");
    check(
        &format!("[alerts]\n{smtp}security = \"tls\""),
        "alerts.smtp.security",
    );
    check(&format!("[alerts]\n{smtp}hots = \"x\""), "alerts.smtp.hots");
    check(
        "[alerts.smtp]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = []",
        "alerts.smtp.to",
    );
    check(
        "[alerts.smtp]\nhost = \"smtp.example.com\"\nfrom = \"a@example.com\"\nto = [\"nobody\"]",
        "alerts.smtp.to[0]",
    );
    check(
        "[alerts.smtp]\nhost = \"smtp.example.com\"\nfrom = \"a\\r\\nBcc: x@example.com\"\nto = [\"b@example.com\"]",
        "alerts.smtp.from",
    );
    check(
        &format!(
            "[alerts]\n{smtp}username = \"u\"\npassword = {{ env = \"CASHLOOP_NO_SUCH_VAR_X\" }}"
        ),
        "alerts.smtp.password",
    );
    check(
        &format!("[alerts]\n{smtp}username = \"u\""),
        "alerts.smtp.password",
    );
    check(
        &format!(
            "[alerts]\n{smtp}security = \"plain\"\nusername = \"u\"\npassword = {{ file = {secret:?} }}"
        ),
        "alerts.smtp.password",
    );
    check(
        &format!("[alerts]\n{smtp}ca_file = \"/no/such/ca.pem\""),
        "alerts.smtp.ca_file",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"disk_full\""),
        "alerts.rules[0].kind",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"sync_lag\""),
        "alerts.rules[0].threshold",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"error_queue\"\nthreshold = -1"),
        "alerts.rules[0].threshold",
    );
    check(
        &format!(
            "[alerts]\n{smtp}[[alerts.rules]]\nkind = \"job_dead\"\n[[alerts.rules]]\nkind = \"job_dead\"\nwindow_s = 60"
        ),
        "alerts.rules[1].name",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"job_dead\"\nmax_per_hour = 0"),
        "alerts.rules[0].max_per_hour",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"error_queue\"\nwindow_s = 60"),
        "alerts.rules[0].window_s",
    );
    check(
        &format!("[alerts]\n{smtp}[[alerts.rules]]\nkind = \"job_dead\"\nlimit = 3"),
        // figment's own path for a parse error (as for every section).
        "alerts.rules.0.limit",
    );
    check(
        "[alerts.salesforce]\nnotification_type_id = \"0ML5g0000000SimAAA\"\nrecipient_ids = [\"0055g00000HumanAAA\"]",
        "alerts.salesforce",
    );
    check(
        &format!(
            "{sf}[alerts.salesforce]\nnotification_type_id = \"005000000000001\"\nrecipient_ids = [\"0055g00000HumanAAA\"]"
        ),
        "alerts.salesforce.notification_type_id",
    );
    check(
        &format!(
            "{sf}[alerts.salesforce]\nnotification_type_id = \"0ML5g0000000SimAAA\"\nrecipient_ids = [\"ops@example.com\"]"
        ),
        "alerts.salesforce.recipient_ids[0]",
    );
    check(
        &format!(
            "{sf}[alerts.salesforce]\nnotification_type_id = \"0ML5g0000000SimAAA\"\nrecipient_ids = []"
        ),
        "alerts.salesforce.recipient_ids",
    );
}

/// Runs `pg` or `sqlite` (literal SQL) on the test database.
async fn sql(db: &db::Db, pg: &str, sqlite: &str) {
    match db {
        db::Db::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(pg.to_owned()))
                .execute(p)
                .await
                .unwrap();
        }
        db::Db::Sqlite(s) => {
            sqlx::query(sqlx::AssertSqlSafe(sqlite.to_owned()))
                .execute(&s.pool)
                .await
                .unwrap();
        }
    }
}

/// Both backends' literal for a time `ago` before now.
fn ago(db: &db::Db, ago: chrono::Duration) -> String {
    let at = chrono::Utc::now() - ago;
    match db {
        db::Db::Postgres(_) => format!("'{}'::timestamptz", at.to_rfc3339()),
        db::Db::Sqlite(_) => format!("'{}'", db::sqlite_ts(at)),
    }
}

/// A stored reconciliation run with results in these categories; its id.
async fn recon_run(db: &db::Db, categories: &[&str]) -> i64 {
    let insert = "INSERT INTO recon_runs (period, entity, high_water, config, summary, digest, actor, started_at_ms, finished_at_ms) VALUES ('2026-10', '', 0, '{}', '{}', 'd', 'test', 0, 0)";
    sql(db, insert, insert).await;
    let id: i64 = match db {
        db::Db::Postgres(p) => sqlx::query_scalar("SELECT MAX(id) FROM recon_runs")
            .fetch_one(p)
            .await
            .unwrap(),
        db::Db::Sqlite(s) => sqlx::query_scalar("SELECT MAX(id) FROM recon_runs")
            .fetch_one(&s.pool)
            .await
            .unwrap(),
    };
    for (i, c) in categories.iter().enumerate() {
        let row = format!(
            "INSERT INTO recon_results (run_id, kind, ord, item_key, entity, customer, currency, amount_minor, category, rule, confidence, applied_minor, open_minor, fx_difference_minor, related) \
             VALUES ({id}, 'payment', {i}, 'P-{i}', 'MAIN', 'C-1', 'USD', 1000, '{c}', NULL, 100, 0, 0, 0, NULL)"
        );
        sql(db, &row, &row).await;
    }
    id
}

db::both_backends!(the_other_rules_fire_and_clear, |t| async move {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start(Some(dir.path())).await;
    let sim = simulator().await;
    let rules = "[[alerts.rules]]\nkind = \"sync_lag\"\nthreshold = 60\n\
                 [[alerts.rules]]\nkind = \"cursor_stale\"\nthreshold = 3600\n\
                 [[alerts.rules]]\nkind = \"reconcile_exceptions\"\nthreshold = 1\n\
                 [[alerts.rules]]\nkind = \"webhook_failures\"\nthreshold = 1\nwindow_s = 3600\n";
    let config = parse(&alerts_toml(
        &t.url,
        dir.path(),
        &sink,
        &sim,
        SMTP_PASSWORD,
        rules,
    ));
    let a = alerter(&t.db, &config, "node-a");
    let db = &t.db;

    // A job due ten minutes ago and still pending.
    let jobs = Jobs::new(db.clone());
    jobs.enqueue(NewJob {
        run_at: Some(chrono::Utc::now() - chrono::Duration::minutes(10)),
        ..NewJob::new("salesforce.pull", json!({}))
    })
    .await
    .unwrap();
    // One cursor idle for two days, one fresh.
    for (object, age) in [
        ("Account", chrono::Duration::days(2)),
        ("Opportunity", chrono::Duration::minutes(1)),
    ] {
        let at = ago(db, age);
        let row = format!(
            "INSERT INTO sync_cursors (system, object, modified_at, last_id, updated_at) VALUES ('salesforce', '{object}', {at}, '', {at})"
        );
        sql(db, &row, &row).await;
    }
    // A run with two exceptions (threshold 1).
    let run = recon_run(db, &["matched", "unmatched_payment", "over_payment"]).await;
    // Two failing deliveries to erp (one given up, one being retried), one to crm.
    let now = ago(db, chrono::Duration::zero());
    for (sub, event, status, attempts, code) in [
        ("erp", "e1", "failed", 8, 500),
        ("erp", "e2", "pending", 2, 503),
        ("crm", "e3", "failed", 8, 404),
        ("erp", "e4", "delivered", 1, 200),
    ] {
        let row = format!(
            "INSERT INTO webhook_outbox (subscriber, event_id, event_type, payload, status, attempts, next_attempt_at, last_status, last_error, created_at) \
             VALUES ('{sub}', '{event}', 'payment.captured', '{{}}', '{status}', {attempts}, {now}, {code}, 'HTTP {code}', {now})"
        );
        sql(db, &row, &row).await;
    }

    let r = a.evaluate_once().await;
    assert_eq!((r.firing, r.sent, r.failed), (4, 4, 0), "{r:?}");
    let subjects: std::collections::BTreeSet<String> =
        sink.messages().iter().map(Captured::subject).collect();
    let want: std::collections::BTreeSet<String> = [
        "[cashloop] Sync lag: the oldest due job has waited 600 s".to_owned(),
        "[cashloop] Sync cursor salesforce/Account has not advanced".to_owned(),
        format!("[cashloop] Reconciliation run {run} (2026-10): 2 exceptions"),
        "[cashloop] Webhook deliveries to erp are failing (2)".to_owned(),
    ]
    .into();
    // The lag is measured in whole seconds when the rule runs.
    let lag_ok = subjects
        .iter()
        .any(|s| s.starts_with("[cashloop] Sync lag: the oldest due job has waited 60"));
    assert!(lag_ok, "{subjects:?}");
    let fixed: std::collections::BTreeSet<String> = subjects
        .iter()
        .filter(|s| !s.contains("Sync lag"))
        .cloned()
        .collect();
    let want_fixed: std::collections::BTreeSet<String> = want
        .into_iter()
        .filter(|s| !s.contains("Sync lag"))
        .collect();
    assert_eq!(fixed, want_fixed);
    let recon = sink
        .messages()
        .into_iter()
        .find(|m| m.subject().contains("Reconciliation"))
        .unwrap();
    assert!(
        recon
            .data
            .contains("- over_payment: 1\r\n- unmatched_payment: 1\r\n"),
        "{}",
        recon.data
    );
    let hooks = sink
        .messages()
        .into_iter()
        .find(|m| m.subject().contains("Webhook"))
        .unwrap();
    assert!(
        hooks.data.contains("1 given up, 1 being retried"),
        "{}",
        hooks.data
    );
    assert_eq!(a.evaluate_once().await.sent, 0);

    // Everything clears: the job runs, the cursor moves, a clean run, deliveries succeed.
    for job in jobs
        .claim("w", &["salesforce.pull"], 10, Duration::from_secs(60))
        .await
        .unwrap()
    {
        assert!(jobs.succeed(&job).await.unwrap());
    }
    let fresh = ago(db, chrono::Duration::zero());
    let moved = format!("UPDATE sync_cursors SET updated_at = {fresh}");
    sql(db, &moved, &moved).await;
    recon_run(db, &["matched", "matched"]).await;
    let delivered = "UPDATE webhook_outbox SET status = 'delivered' WHERE subscriber = 'erp'";
    sql(db, delivered, delivered).await;
    let r = a.evaluate_once().await;
    assert_eq!((r.firing, r.resolved), (0, 4), "{r:?}");
    let resolved = sink
        .messages()
        .iter()
        .filter(|m| m.subject().starts_with("[cashloop] Resolved: "))
        .count();
    assert_eq!(resolved, 4);
    assert_eq!(a.evaluate_once().await, Report::default());
});
