//! End-to-end tests of the `cashloop` binary and server: the app is spawned on port 0
//! (in-process, or as real `cashloop serve` processes) on SQLite and PostgreSQL.

use std::process::Stdio;
use std::time::Duration;

use cashloop::config::{Config, RawConfig};
use db::testing::{self, TestDb};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const ADMIN_KEY: &str = "cl_test_admin_key";
const AUDITOR_KEY: &str = "cl_test_auditor_key";
const PAYMENTS_KEY: &str = "cl_test_payments_key";
const FINANCE_KEY: &str = "cl_test_finance_key";

fn key_hash(k: &str) -> String {
    let secret = std::fs::read_to_string(key_dir().join("api-key-secret.hex")).unwrap();
    hex::encode(
        gateway::crypto::FingerprintKey::from_hex(1, &secret)
            .unwrap()
            .fingerprint(k.as_bytes()),
    )
}

/// Keys for the test servers (vault keys, the API-key secret): written once per test process.
fn key_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for name in ["kek-1.hex", "fingerprint-1.hex", "api-key-secret.hex"] {
            std::fs::write(
                d.path().join(name),
                gateway::crypto::generate_key_hex().unwrap().as_bytes(),
            )
            .unwrap();
        }
        d
    })
    .path()
}

fn config_toml(db_url: &str) -> String {
    format!(
        r#"database_url = "{db_url}"
[server]
listen = "127.0.0.1:0"
shutdown_grace_ms = 2000
api_key_secret = {{ file = {:?} }}
[[server.api_keys]]
name = "admin"
role = "admin"
key_hmac = "{}"
[[server.api_keys]]
name = "auditor"
role = "auditor"
key_hmac = "{}"
[[server.api_keys]]
name = "payments"
role = "payments"
key_hmac = "{}"
[[server.api_keys]]
name = "finance"
role = "finance"
key_hmac = "{}"
[ledger]
seal_interval_ms = 50
[gateway]
processor = "sandbox"
accounts = {{ USD = {{ clearing = "1100", receivable = "1200" }} }}
{}"#,
        key_dir().join("api-key-secret.hex").display().to_string(),
        key_hash(ADMIN_KEY),
        key_hash(AUDITOR_KEY),
        key_hash(PAYMENTS_KEY),
        key_hash(FINANCE_KEY),
        vault_section()
    )
}

/// Vault keys for the test servers: written once per test process into a temp directory.
fn vault_section() -> String {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for name in ["kek-1.hex", "fingerprint-1.hex"] {
            std::fs::write(
                d.path().join(name),
                gateway::crypto::generate_key_hex().unwrap().as_bytes(),
            )
            .unwrap();
        }
        d
    });
    format!(
        "[vault]\nkek = {{ version = 1, file = {:?} }}\nfingerprint_key = {{ version = 1, file = {:?} }}\n",
        dir.path().join("kek-1.hex").display().to_string(),
        dir.path().join("fingerprint-1.hex").display().to_string()
    )
}

fn config(db_url: &str) -> Config {
    let fig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(&config_toml(db_url)));
    Config::from_figment(fig).expect("test config")
}

/// A running in-process app.
struct App {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The test configuration with `edit` applied to its TOML text.
fn config_with(db_url: &str, edit: impl Fn(String) -> String) -> Config {
    let fig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(&edit(config_toml(db_url))));
    Config::from_figment(fig).expect("test config")
}

impl App {
    async fn spawn(t: &TestDb) -> App {
        App::spawn_config(config(&t.url)).await
    }

    async fn spawn_config(config: Config) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        App::spawn_on(config, listener).await
    }

    async fn spawn_on(config: Config, listener: tokio::net::TcpListener) -> App {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(cashloop::serve_on(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = gateway::http::client();
        for _ in 0..100 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        App {
            base,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        idem: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(i) = idem {
            req = req.header("Idempotency-Key", i);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }
}

/// Adds the test chart with the CLI (exercising it on the same database).
fn cli(url: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("CASHLOOP_CONFIG")
        .output()
        .expect("run cashloop")
}

fn add_chart(url: &str) {
    for (code, name, ty, extra) in [
        ("1000", "Cash", "asset", None),
        ("1100", "Processor clearing", "asset", None),
        (
            "1200",
            "Accounts receivable",
            "asset",
            Some("--customer-subledger"),
        ),
        ("4000", "Revenue", "revenue", None),
    ] {
        let mut args = vec![
            "ledger",
            "account",
            "add",
            "--code",
            code,
            "--name",
            name,
            "--type",
            ty,
            "--currency",
            "USD",
        ];
        args.extend(extra);
        let out = cli(url, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn sale(key: &str, amount: &str) -> String {
    json!({
        "idempotency_key": key,
        "effective_date": "2026-10-15",
        "postings": [
            {"account": "1000", "direction": "debit", "amount": amount, "currency": "USD"},
            {"account": "4000", "direction": "credit", "amount": amount, "currency": "USD"}
        ]
    })
    .to_string()
}

macro_rules! both {
    ($name:ident, |$t:ident| $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $t = testing::sqlite().await;
                $body.await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($t) = testing::postgres().await else {
                    return;
                };
                $body.await;
            }
        }
    };
}

both!(health_and_readiness, |t| async move {
    let app = App::spawn(&t).await;
    let (s, v, _) = app.call("GET", "/healthz", None, None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v, _) = app.call("GET", "/readyz", None, None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
    let (s, v, _) = app.call("GET", "/nope", None, None, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    // Limits answer in the same JSON shape. Raw TCP: announce a body over the limit and send
    // none, so the server answers from the headers alone (a client still writing a large body
    // would race the server closing the connection).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = app.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "POST /v1/ledger/entries HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\ncontent-length: 2097152\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut resp)).await;
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
        assert!(resp.contains("\"code\":\"body_too_large\""), "{resp}");
    }
    let (s, v, _) = app.call("POST", "/healthz", None, None, Some("{}")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );
    app.stop().await;
});

both!(ledger_api_and_error_mapping, |t| async move {
    add_chart(&t.url);
    let app = App::spawn(&t).await;
    // Authentication and roles.
    let (s, v, _) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            None,
            None,
            Some(&sale("a", "1.00")),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (s, _, _) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            Some("wrong"),
            None,
            Some(&sale("a", "1.00")),
        )
        .await;
    assert_eq!(s, 401);
    let (s, v, _) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            Some(AUDITOR_KEY),
            None,
            Some(&sale("a", "1.00")),
        )
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    // Created, replayed, reused.
    let (s, first, _) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            Some(ADMIN_KEY),
            Some("sale-1"),
            Some(&sale("sale-1", "10.00")),
        )
        .await;
    assert_eq!(s, 201, "{first}");
    let (s, again, h) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            Some(ADMIN_KEY),
            Some("sale-1"),
            Some(&sale("sale-1", "10.00")),
        )
        .await;
    assert_eq!((s, &again), (200, &first));
    assert_eq!(
        h.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    // The key may come from the header alone.
    let body_without_key = sale("x", "3.00").replace(r#""idempotency_key":"x","#, "");
    let (s, v, _) = app
        .call(
            "POST",
            "/v1/ledger/entries",
            Some(ADMIN_KEY),
            Some("hdr-only"),
            Some(&body_without_key),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    // Each kind of bad input: status, machine-readable code, field.
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (
            sale("sale-1", "11.00"),
            422,
            "idempotency_key_reused",
            Some("idempotency_key"),
        ),
        ("{not json".to_owned(), 400, "malformed_json", None),
        (
            sale("b", "10.001"),
            422,
            "invalid_amount_scale",
            Some("postings[0].amount"),
        ),
        (
            sale("b", "-1.00"),
            422,
            "non_positive_amount",
            Some("postings[0].amount"),
        ),
        (
            sale("b", "1.00").replacen("\"1.00\"", "\"2.00\"", 1),
            422,
            "unbalanced_entry",
            Some("postings"),
        ),
        (
            sale("b", "1.00").replace("\"1000\"", "\"9999\""),
            422,
            "unknown_account",
            Some("postings[0].account"),
        ),
        (
            sale("b", "1.00").replace("USD", "EUR"),
            422,
            "currency_mismatch",
            Some("postings[0].currency"),
        ),
        (
            sale("b", "1.00").replace("\"1000\"", "\"1200\""),
            422,
            "customer_required",
            Some("postings[0].customer_id"),
        ),
        (
            sale("b", "1.00").replace("2026-10-15", "2026-13-01"),
            422,
            "invalid_field",
            Some("effective_date"),
        ),
    ];
    for (body, status, code, field) in cases {
        let (s, v, _) = app
            .call(
                "POST",
                "/v1/ledger/entries",
                Some(ADMIN_KEY),
                None,
                Some(&body),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (status, Some(code), field),
            "{body} -> {v}"
        );
    }
    // Reads.
    let id = first["id"].as_i64().unwrap();
    let (s, v, _) = app
        .call(
            "GET",
            &format!("/v1/ledger/entries/{id}"),
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!((s, &v), (200, &first));
    let (s, v, _) = app
        .call(
            "GET",
            "/v1/ledger/entries/999999",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("entry_not_found"))
    );
    let (s, v, _) = app
        .call(
            "GET",
            "/v1/ledger/accounts/MAIN/1000/balance",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!((s, v["balance"].as_str()), (200, Some("13.00 USD")), "{v}");
    let (s, v, _) = app
        .call(
            "GET",
            "/v1/ledger/trial-balance",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, v["totals"]["USD"]["debits"].as_str()),
        (200, Some("13.00")),
        "{v}"
    );
    // Every mutating call and every refused key is in the audit log, with the caller's address.
    let actions: Vec<(String, String, String)> = match &t.db {
        db::Db::Postgres(p) => {
            sqlx::query_as("SELECT actor, action, detail FROM audit_log ORDER BY id")
                .fetch_all(p)
                .await
                .unwrap()
        }
        db::Db::Sqlite(s) => {
            sqlx::query_as("SELECT actor, action, detail FROM audit_log ORDER BY id")
                .fetch_all(&s.pool)
                .await
                .unwrap()
        }
    };
    assert!(
        actions
            .iter()
            .any(|(a, act, d)| a == "-" && act == "auth.failed" && d.contains("from=127.0.0.1")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(|(a, act, d)| a == "admin"
            && act == "POST /v1/ledger/entries"
            && d.contains("status=201")),
        "{actions:?}"
    );
    assert!(
        actions
            .iter()
            .any(|(_, act, d)| act == "POST /v1/ledger/entries" && d.contains("status=422")),
        "refusals too: {actions:?}"
    );
    app.stop().await;
});

/// Starts a real `cashloop serve` process on port 0 and returns it with its base URL.
async fn serve_process(
    dir: &std::path::Path,
    name: &str,
    db_url: &str,
) -> (tokio::process::Child, String) {
    serve_process_logging(dir, name, db_url, None).await
}

/// As [`serve_process`], with its logs (at `level`) written to `dir/NAME.log`.
async fn serve_process_logging(
    dir: &std::path::Path,
    name: &str,
    db_url: &str,
    level: Option<&str>,
) -> (tokio::process::Child, String) {
    serve_process_with(dir, name, db_url, level, &[]).await
}

/// As [`serve_process_logging`], with extra environment variables.
async fn serve_process_with(
    dir: &std::path::Path,
    name: &str,
    db_url: &str,
    level: Option<&str>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (tokio::process::Child, String) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config_toml(db_url)).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("serve")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    match level {
        Some(l) => {
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            cmd.env("CASHLOOP_LOG", l).stderr(Stdio::from(log));
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("server did not start in time")
        .unwrap()
        .expect("server printed nothing");
    let base = line
        .strip_prefix("cashloop listening on ")
        .expect(&line)
        .trim()
        .to_owned();
    (child, base)
}

both!(two_server_processes_on_one_database, |t| async move {
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    let (mut a, base_a) = serve_process(dir.path(), "a", &t.url).await;
    let (mut b, base_b) = serve_process(dir.path(), "b", &t.url).await;
    let client = gateway::http::client();
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let base = if task % 2 == 0 {
            base_a.clone()
        } else {
            base_b.clone()
        };
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                // Every third request is a retry of the previous key: a replay, not a double post.
                let key = format!("t{task}-{}", if i % 3 == 2 { i - 1 } else { i });
                let resp = client
                    .post(format!("{base}/v1/ledger/entries"))
                    .bearer_auth(ADMIN_KEY)
                    .header("content-type", "application/json")
                    .body(sale(&key, "2.50"))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                assert!(
                    status == 201 || status == 200,
                    "{status}: {}",
                    resp.text().await.unwrap()
                );
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let distinct = TASKS * (PER_TASK - PER_TASK / 3);
    let resp: Value = client
        .get(format!("{base_a}/v1/ledger/accounts/MAIN/1000/balance"))
        .bearer_auth(AUDITOR_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["debit_minor"].as_i64(),
        Some(i64::try_from(distinct * 250).unwrap()),
        "no lost or doubled update: {resp}"
    );
    a.kill().await.unwrap();
    b.kill().await.unwrap();
    // Both sealers ran against one chain: it must verify.
    let out = cli(&t.url, &["ledger", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{distinct} entries")), "{stdout}");
});

both!(cli_verify_names_a_tampered_entry, |t| async move {
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        let f = dir.path().join(format!("e{i}.json"));
        std::fs::write(&f, sale(&format!("e{i}"), "4.00")).unwrap();
        let out = cli(&t.url, &["ledger", "post", "--file", f.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(&t.url, &["ledger", "verify"]);
    assert!(out.status.success());
    match &t.db {
        db::Db::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE ledger_postings SET amount_minor = 401 WHERE entry_id = 3 AND line = 2",
            )
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
        db::Db::Sqlite(s) => {
            sqlx::query("DROP TRIGGER ledger_postings_no_update")
                .execute(&s.pool)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE ledger_postings SET amount_minor = 401 WHERE entry_id = 3 AND line = 2",
            )
            .execute(&s.pool)
            .await
            .unwrap();
        }
    }
    let out = cli(&t.url, &["ledger", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("First broken: entry 3 (seq 3)"), "{stdout}");
});

#[tokio::test]
async fn cli_rejects_bad_input_naming_the_field() {
    let t = testing::sqlite().await;
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, sale("k", "1.005")).unwrap();
    let out = cli(&t.url, &["ledger", "post", "--file", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid_amount_scale") && err.contains("postings[0].amount"),
        "{err}"
    );
    // A configuration error names its key and stops before any work.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args(["serve"])
        .env("CASHLOOP_SERVER__LISTEN", "not-an-address")
        .env("CASHLOOP_DATABASE_URL", &t.url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("server.listen"), "{err}");
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve_process(dir.path(), "s", &t.url).await;
    let ok = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(ok, 200);
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (no CA), written as PEM into a
/// directory, and the DER the test clients trust.
struct TestCert {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn test_cert(dir: &std::path::Path) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_file,
        key_file,
        der: ck.cert.der().clone(),
    }
}

/// The test configuration with `[server.tls]` serving `cert`.
fn tls_config(db_url: &str, cert: &TestCert) -> Config {
    let toml = format!(
        "{}\n[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        config_toml(db_url),
        cert.cert_file.display().to_string(),
        cert.key_file.display().to_string()
    );
    let fig = Figment::from(Serialized::defaults(RawConfig::default())).merge(Toml::string(&toml));
    Config::from_figment(fig).expect("test TLS config")
}

/// An HTTPS client that trusts exactly one certificate and speaks raw HTTP/1.1 over
/// tokio-rustls (the workspace's reqwest is built without TLS).
struct TlsClient {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

impl TlsClient {
    fn new(
        addr: std::net::SocketAddr,
        trusted: &rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsClient {
            addr,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        }
    }

    /// Connects and completes the handshake (for `localhost`).
    async fn connect(
        &self,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
    }

    /// One request on its own connection (`connection: close`): status and JSON body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut tls = self.connect().await.expect("TLS handshake");
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
        if let Some(k) = key {
            req.push_str(&format!("authorization: Bearer {k}\r\n"));
        }
        let body = body.unwrap_or("");
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        use tokio::io::AsyncWriteExt;
        tls.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut tls).await
    }
}

/// Reads an HTTP/1.1 response to the end of the connection: status and JSON body.
async fn read_response(tls: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u16, Value) {
    use tokio::io::AsyncReadExt;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("TLS stream closed cleanly");
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect(&text);
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .expect(head);
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

/// The audit log's `(actor, action, detail)` rows.
async fn audit_rows(t: &TestDb) -> Vec<(String, String, String)> {
    let sql = "SELECT actor, action, detail FROM audit_log ORDER BY id";
    match &t.db {
        db::Db::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        db::Db::Sqlite(s) => sqlx::query_as(sql).fetch_all(&s.pool).await.unwrap(),
    }
}

both!(serve_terminates_tls, |t| async move {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert(dir.path());
    let mut config = tls_config(&t.url, &cert);
    // Shutdown below must finish because the connections are done, not because time ran out.
    config.shutdown_grace_ms = 60_000;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(cashloop::serve_on(config, listener, async move {
        let _ = stopped.await;
    }));
    let client = TlsClient::new(addr, &cert.der);

    let (s, v) = client.call("GET", "/healthz", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");
    {
        let tls = client.connect().await.unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }
    // An authenticated write over TLS is audited with the caller's address.
    let (s, v) = client
        .call(
            "POST",
            "/v1/ledger/entries",
            Some(ADMIN_KEY),
            Some(&sale("tls-1", "7.00")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let rows = audit_rows(&t).await;
    assert!(
        rows.iter().any(|(a, act, d)| a == "admin"
            && act == "POST /v1/ledger/entries"
            && d.contains("status=201")
            && d.contains("from=127.0.0.1")),
        "{rows:?}"
    );

    // No plaintext fallback: plain HTTP on the TLS port gets no HTTP answer…
    {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut resp = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut resp)).await;
        assert!(
            !String::from_utf8_lossy(&resp).contains("HTTP/1.1"),
            "{}",
            String::from_utf8_lossy(&resp)
        );
    }
    // …a client that trusts another certificate refuses this server…
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let stranger = test_cert(&other_dir);
    assert!(TlsClient::new(addr, &stranger.der).connect().await.is_err());
    // …and neither failure, nor a client that connects and never says hello, holds up others.
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, _) = client.call("GET", "/healthz", None, None).await;
    assert_eq!(s, 200);

    // Graceful shutdown: a request in flight finishes; idle and silent connections don't
    // hold the server up; nothing new is accepted.
    let mut in_flight = client.connect().await.unwrap();
    let body = sale("tls-2", "8.00");
    in_flight
        .write_all(
            format!(
                "POST /v1/ledger/entries HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN_KEY}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    in_flight.flush().await.unwrap();
    // "100 Continue" comes when the handler starts reading the body: the request is in flight.
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(Duration::from_secs(10), in_flight.read_u8())
            .await
            .expect("100 Continue in time")
            .unwrap();
        interim.push(byte);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    let _idle = client.connect().await.unwrap();
    stop.send(()).unwrap();
    // Shutdown has begun once the port refuses connections.
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener is closed on shutdown");
    in_flight.write_all(body.as_bytes()).await.unwrap();
    in_flight.flush().await.unwrap();
    let (s, v) = read_response(&mut in_flight).await;
    assert_eq!(s, 201, "{v}");
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops well before the grace period")
        .unwrap()
        .unwrap();
});

#[tokio::test]
async fn serve_process_over_tls_configured_from_the_environment() {
    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = test_cert(dir.path());
    // A bad file stops `cashloop serve` before it binds, naming the key at fault.
    let missing = dir.path().join("missing.pem");
    for (cert_file, key_file, key, message) in [
        (
            &missing,
            &cert.key_file,
            "server.tls.cert_file",
            "cannot read",
        ),
        (
            &cert.cert_file,
            &cert.cert_file,
            "server.tls.key_file",
            "no private key found",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .args(["serve"])
            .env("CASHLOOP_DATABASE_URL", &t.url)
            .env("CASHLOOP_SERVER__LISTEN", "127.0.0.1:0")
            .env("CASHLOOP_SERVER__TLS__CERT_FILE", cert_file)
            .env("CASHLOOP_SERVER__TLS__KEY_FILE", key_file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(key) && err.contains(message), "{err}");
        assert!(out.stdout.is_empty(), "never listened");
    }
    let (mut child, base) = serve_process_with(
        dir.path(),
        "s",
        &t.url,
        None,
        &[
            (
                "CASHLOOP_SERVER__TLS__CERT_FILE",
                cert.cert_file.as_os_str(),
            ),
            ("CASHLOOP_SERVER__TLS__KEY_FILE", cert.key_file.as_os_str()),
        ],
    )
    .await;
    let addr = base.strip_prefix("https://").expect(&base).parse().unwrap();
    let (s, v) = TlsClient::new(addr, &cert.der)
        .call("GET", "/healthz", None, None)
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
    );
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

both!(cli_exports_every_format, |t| async move {
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let f = dir.path().join(format!("e{i}.json"));
        std::fs::write(&f, sale(&format!("x{i}"), "5.00")).unwrap();
        assert!(
            cli(&t.url, &["ledger", "post", "--file", f.to_str().unwrap()])
                .status
                .success()
        );
    }
    assert!(cli(&t.url, &["ledger", "seal"]).status.success());
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let range = ["--from", "2026-10-01", "--to", "2026-10-31"];
    for (format, out) in [
        ("csv", "gl.csv"),
        ("jsonl", "gl.jsonl"),
        ("saft", "saft.xml"),
        ("ads", "ads"),
    ] {
        let mut args = vec!["ledger", "export", "--format", format, "--out"];
        let out_path = path(out);
        args.push(&out_path);
        args.extend(range);
        let res = cli(&t.url, &args);
        assert!(
            res.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
    let csv = std::fs::read_to_string(path("gl.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6 + 1, "{csv}");
    assert!(csv.lines().last().unwrap().contains("15.00"), "{csv}");
    let jsonl = std::fs::read_to_string(path("gl.jsonl")).unwrap();
    let last: Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
    assert_eq!(last["trailer"]["postings"].as_u64(), Some(6), "{last}");
    let saft = std::fs::read_to_string(path("saft.xml")).unwrap();
    assert!(
        saft.contains("<NumberOfEntries>3</NumberOfEntries>")
            && saft.contains("<TotalDebit>15.00</TotalDebit>"),
        "{saft}"
    );
    let gl =
        std::fs::read_to_string(dir.path().join("ads/GL_Detail_20261001_20261031.txt")).unwrap();
    assert_eq!(gl.lines().count(), 1 + 6, "{gl}");
    assert!(
        gl.lines().next().unwrap().starts_with("Journal_ID|"),
        "{gl}"
    );
    let tb = std::fs::read_to_string(dir.path().join("ads/Trial_Balance_20261031.txt")).unwrap();
    assert!(
        tb.contains("|1000|") || tb.lines().any(|l| l.starts_with("1000|")),
        "{tb}"
    );
    // No half-written file is left behind by a failed export.
    let bad = cli(
        &t.url,
        &[
            "ledger",
            "export",
            "--format",
            "csv",
            "--out",
            &path("bad.csv"),
            "--from",
            "2026-10-31",
            "--to",
            "2026-10-01",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--to"));
    assert!(!dir.path().join("bad.csv").exists() && !dir.path().join("bad.partial").exists());
});

#[tokio::test]
async fn keys_generate_and_rotate_through_the_cli() {
    let t = testing::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let out = cli(
        &t.url,
        &["keys", "generate", "--dir", keys.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kek = keys.join("kek-1.hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(std::fs::read_to_string(&kek).unwrap().trim().len(), 64);
    let again = cli(
        &t.url,
        &["keys", "generate", "--dir", keys.to_str().unwrap()],
    );
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    // The printed configuration works as is.
    let cfg = dir.path().join("cashloop.toml");
    let vault_section = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| *l != "[vault]")
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &cfg,
        format!("database_url = \"{}\"\n{vault_section}\n", t.url),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let rotated = run(&["keys", "rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(
        String::from_utf8_lossy(&rotated.stdout)
            .contains("re-wrapped 0 data keys under key version 1")
    );
    // API keys: without a secret there is nothing to hash them with; with one, the printed
    // configuration line is the key's HMAC under it.
    let no_secret = run(&["api-key", "new", "--name", "ops", "--role", "admin"]);
    assert!(String::from_utf8_lossy(&no_secret.stderr).contains("server.api_key_secret"));
    let secret_file = dir.path().join("api-secret.hex");
    assert!(
        run(&["api-key", "secret", "--file", secret_file.to_str().unwrap()])
            .status
            .success()
    );
    let toml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{}\n[server]\napi_key_secret = {{ file = {:?} }}\n",
            toml,
            secret_file.display().to_string()
        ),
    )
    .unwrap();
    let made = run(&["api-key", "new", "--name", "ops", "--role", "admin"]);
    let out = String::from_utf8_lossy(&made.stdout).to_string();
    let key = out
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let want = hex::encode(
        gateway::crypto::FingerprintKey::from_hex(1, &secret)
            .unwrap()
            .fingerprint(key.as_bytes()),
    );
    assert!(out.contains(&format!("key_hmac = \"{want}\"")), "{out}");
    // A damaged key file stops the command and names the configuration key, not the key.
    std::fs::remove_file(&kek).unwrap();
    std::fs::write(&kek, "not-a-key").unwrap();
    let bad = run(&["keys", "rotate"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("vault.kek"), "{err}");
}

const TEST_PAN: &str = "4111111111111111";

both!(tokens_api, |t| async move {
    let app = App::spawn(&t).await;
    let card = |number: &str, extra: &str| {
        format!(
            r#"{{"type":"card","card":{{"number":"{number}","exp_month":12,"exp_year":2030{extra}}}}}"#
        )
    };
    let (s, v, _) = app
        .call(
            "POST",
            "/v1/tokens",
            Some(PAYMENTS_KEY),
            Some("tok-1"),
            Some(&card(TEST_PAN, "")),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert_eq!(
        (v["brand"].as_str(), v["last4"].as_str(), v["kind"].as_str()),
        (Some("visa"), Some("1111"), Some("card"))
    );
    assert!(!v.to_string().contains(TEST_PAN));
    // Replay: same status and body; another body under the key: refused.
    let (s2, v2, h) = app
        .call(
            "POST",
            "/v1/tokens",
            Some(PAYMENTS_KEY),
            Some("tok-1"),
            Some(&card(TEST_PAN, "")),
        )
        .await;
    assert_eq!((s2, &v2), (201, &v));
    assert_eq!(
        h.get("idempotent-replayed").map(|x| x.to_str().unwrap()),
        Some("true")
    );
    let (s3, v3, _) = app
        .call(
            "POST",
            "/v1/tokens",
            Some(PAYMENTS_KEY),
            Some("tok-1"),
            Some(&card("5424000000000015", "")),
        )
        .await;
    assert_eq!(
        (s3, v3["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Bad input: status, code, field; the number is never echoed.
    #[rustfmt::skip]
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (card("4111111111111112", ""), 422, "luhn_check_failed", Some("card.number")),
        (card(TEST_PAN, r#","cvv":"123""#), 422, "cvv_not_accepted", Some("card.cvv")),
        (card(TEST_PAN, r#","pin":"1""#), 422, "unknown_field", Some("card.pin")),
        (card(TEST_PAN, "").replace("2030", "2020"), 422, "card_expired", Some("card.exp_year")),
        ("{".to_owned(), 400, "malformed_json", None),
        (r#"{"type":"bank_account","bank_account":{"routing_number":"123456789","account_number":"000123456789","account_type":"checking","holder_name":"G"}}"#.to_owned(), 422, "invalid_routing_number", Some("bank_account.routing_number")),
    ];
    for (body, status, code, field) in cases {
        let (s, v, _) = app
            .call("POST", "/v1/tokens", Some(PAYMENTS_KEY), None, Some(&body))
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (status, Some(code), field),
            "{v}"
        );
        assert!(!v.to_string().contains("41111111111111"), "{v}");
    }
    // Roles: an auditor may look, not tokenize.
    let (s, _, _) = app
        .call(
            "POST",
            "/v1/tokens",
            Some(AUDITOR_KEY),
            None,
            Some(&card(TEST_PAN, "")),
        )
        .await;
    assert_eq!(s, 403);
    let (s, got, _) = app
        .call(
            "GET",
            &format!("/v1/tokens/{token}"),
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!((s, &got), (200, &v));
    let (s, got, _) = app
        .call(
            "GET",
            "/v1/tokens/pm_missing",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, got["error"]["code"].as_str()),
        (404, Some("payment_method_not_found"))
    );
    app.stop().await;
});

both!(payments_api, |t| async move {
    add_chart(&t.url);
    let app = App::spawn(&t).await;
    let tokenize = |number: &'static str| {
        let app = &app;
        async move {
            let body = format!(
                r#"{{"type":"card","card":{{"number":"{number}","exp_month":12,"exp_year":2030}}}}"#
            );
            let (s, v, _) = app
                .call("POST", "/v1/tokens", Some(PAYMENTS_KEY), None, Some(&body))
                .await;
            assert_eq!(s, 201, "{v}");
            v["token"].as_str().unwrap().to_owned()
        }
    };
    let good = tokenize("4111111111111111").await;
    let pay = |token: &str, amount: &str, capture: bool| {
        format!(
            r#"{{"amount":"{amount}","currency":"USD","payment_method":"{token}","capture":{capture},"opportunity_id":"006X","account_id":"001ACME","invoice_refs":["INV-9"]}}"#
        )
    };
    // A sale, replayed by its Idempotency-Key.
    let (s, sale, _) = app
        .call(
            "POST",
            "/v1/payments",
            Some(PAYMENTS_KEY),
            Some("sale-1"),
            Some(&pay(&good, "100.00", true)),
        )
        .await;
    assert_eq!(
        (s, sale["status"].as_str(), sale["captured_minor"].as_i64()),
        (201, Some("captured"), Some(10000)),
        "{sale}"
    );
    let (s, again, h) = app
        .call(
            "POST",
            "/v1/payments",
            Some(PAYMENTS_KEY),
            Some("sale-1"),
            Some(&pay(&good, "100.00", true)),
        )
        .await;
    assert_eq!((s, &again), (201, &sale));
    assert!(h.contains_key("idempotent-replayed"));
    // Authorize, capture part, refund, refund too much, void refused.
    let (_, auth, _) = app
        .call(
            "POST",
            "/v1/payments",
            Some(PAYMENTS_KEY),
            None,
            Some(&pay(&good, "50.00", false)),
        )
        .await;
    assert_eq!(auth["status"].as_str(), Some("requires_capture"), "{auth}");
    let id = auth["id"].as_str().unwrap().to_owned();
    let (s, cap, _) = app
        .call(
            "POST",
            &format!("/v1/payments/{id}/capture"),
            Some(PAYMENTS_KEY),
            None,
            Some(r#"{"amount":"40.00"}"#),
        )
        .await;
    assert_eq!(
        (s, cap["captured_minor"].as_i64()),
        (200, Some(4000)),
        "{cap}"
    );
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/payments/{id}/refunds"),
            Some(PAYMENTS_KEY),
            None,
            Some(r#"{"amount":"15.00"}"#),
        )
        .await;
    assert_eq!(
        (s, r["status"].as_str()),
        (200, Some("partially_refunded")),
        "{r}"
    );
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/payments/{id}/refunds"),
            Some(PAYMENTS_KEY),
            None,
            Some(r#"{"amount":"25.01"}"#),
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str(), r["error"]["field"].as_str()),
        (422, Some("refund_exceeds_captured"), Some("amount")),
        "{r}"
    );
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/payments/{id}/void"),
            Some(PAYMENTS_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{r}"
    );
    // A decline: 402 with the processor's reason; a timeout: 202, then resolved on read.
    let declined = tokenize("4000000000000002").await;
    let (s, r, _) = app
        .call(
            "POST",
            "/v1/payments",
            Some(PAYMENTS_KEY),
            None,
            Some(&pay(&declined, "10.00", true)),
        )
        .await;
    assert_eq!(
        (
            s,
            r["error"]["code"].as_str(),
            r["payment"]["status"].as_str()
        ),
        (402, Some("card_declined"), Some("failed")),
        "{r}"
    );
    let slow = tokenize("4000000000000408").await;
    let (s, r, _) = app
        .call(
            "POST",
            "/v1/payments",
            Some(PAYMENTS_KEY),
            None,
            Some(&pay(&slow, "25.00", true)),
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (202, Some("unknown")), "{r}");
    let (s, r, _) = app
        .call(
            "GET",
            &format!("/v1/payments/{}", r["id"].as_str().unwrap()),
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("captured")), "{r}");
    // Bad input names the field; roles are enforced.
    #[rustfmt::skip]
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (pay(&good, "10.001", true), 422, "invalid_amount_scale", Some("amount")),
        (pay(&good, "10.00", true).replace("USD", "XYZ"), 422, "unknown_currency", Some("currency")),
        (pay(&good, "10.00", true).replace(&good, "pm_nope"), 404, "payment_method_not_found", Some("token")),
        (pay(&good, "10.00", true).replace(r#""account_id":"001ACME","#, ""), 422, "missing_field", Some("account_id")),
        (pay(&good, "10.00", true).replace("USD", "USD\",\"tip\":\"1"), 422, "unknown_field", Some("tip")),
    ];
    for (body, status, code, field) in cases {
        let (s, v, _) = app
            .call(
                "POST",
                "/v1/payments",
                Some(PAYMENTS_KEY),
                None,
                Some(&body),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str(), v["error"]["field"].as_str()),
            (status, Some(code), field),
            "{body} -> {v}"
        );
    }
    let (s, _, _) = app
        .call(
            "POST",
            "/v1/payments",
            Some(AUDITOR_KEY),
            None,
            Some(&pay(&good, "1.00", true)),
        )
        .await;
    assert_eq!(s, 403);
    let (s, list, _) = app
        .call(
            "GET",
            "/v1/payments?opportunity_id=006X",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, list["data"].as_array().map(Vec::len)),
        (200, Some(4)),
        "{list}"
    );
    // The ledger saw every movement: 100 + 40 - 15 + 25 kept at the processor.
    let (_, bal, _) = app
        .call(
            "GET",
            "/v1/ledger/accounts/MAIN/1100/balance",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(bal["balance"].as_str(), Some("150.00 USD"), "{bal}");
    app.stop().await;
});

both!(secrets_never_reach_logs_or_tables, |t| async move {
    add_chart(&t.url);
    let dir = tempfile::tempdir().unwrap();
    let (mut server, base) = serve_process_logging(dir.path(), "s", &t.url, Some("debug")).await;
    let client = gateway::http::client();
    let post = |path: &str, body: String| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(PAYMENTS_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let card = post("/v1/tokens", format!(r#"{{"type":"card","card":{{"number":"{TEST_PAN}","exp_month":12,"exp_year":2030,"name":"Ada"}}}}"#)).await.unwrap();
    let card: Value = card.json().await.unwrap();
    let bank = post("/v1/tokens", r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"000123456789","account_type":"checking","holder_name":"G"}}"#.to_owned()).await.unwrap();
    let bank: Value = bank.json().await.unwrap();
    for (token, cvv) in [
        (card["token"].as_str().unwrap(), r#","cvv":"737""#),
        (bank["token"].as_str().unwrap(), ""),
    ] {
        let r = post("/v1/payments", format!(r#"{{"amount":"12.34","currency":"USD","payment_method":"{token}","account_id":"001A"{cvv}}}"#)).await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
    // Bad input that contains the number must not echo it either.
    let bad = post("/v1/tokens", format!(r#"{{"type":"card","card":{{"number":"{TEST_PAN}","exp_month":12,"exp_year":2030,"cvv":"737"}}}}"#)).await.unwrap();
    assert!(!bad.text().await.unwrap().contains(TEST_PAN));
    server.kill().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("s.log")).unwrap();
    assert!(
        log.contains("payment created"),
        "the log was captured: {}",
        &log[..log.len().min(500)]
    );
    let mut tables = String::new();
    for table in db::testing::tables(&t.db).await {
        tables.push_str(&db::testing::table_text(&t.db, &table, "1").await);
    }
    for secret in [TEST_PAN, "000123456789", "cvv\":\"737", "\"737\""] {
        assert!(!log.contains(secret), "{secret} in the server log");
        assert!(!tables.contains(secret), "{secret} in a table");
    }
    assert!(
        !tables
            .to_ascii_uppercase()
            .contains(&hex::encode_upper(TEST_PAN)),
        "PAN in a table as hex"
    );
});

/// Every route × every role: 403 exactly where the role is not allowed (and 401 without a key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix() {
    let t = testing::sqlite().await;
    let app = App::spawn(&t).await;
    let roles = [
        ("admin", ADMIN_KEY),
        ("finance", FINANCE_KEY),
        ("payments", PAYMENTS_KEY),
        ("auditor", AUDITOR_KEY),
    ];
    let all: &[&str] = &["admin", "finance", "payments", "auditor"];
    #[rustfmt::skip]
    let routes: Vec<(&str, &str, &[&str])> = vec![
        ("POST", "/v1/ledger/entries", &["admin", "finance"]),
        ("GET", "/v1/ledger/entries/1", all),
        ("GET", "/v1/ledger/accounts", all),
        ("GET", "/v1/ledger/accounts/MAIN/1000/balance", all),
        ("GET", "/v1/ledger/trial-balance", all),
        ("POST", "/v1/tokens", &["admin", "payments"]),
        ("GET", "/v1/tokens/pm_x", all),
        ("POST", "/v1/payments", &["admin", "payments"]),
        ("GET", "/v1/payments?opportunity_id=x", all),
        ("GET", "/v1/payments/pay_x", all),
        ("POST", "/v1/payments/pay_x/capture", &["admin", "payments"]),
        ("POST", "/v1/payments/pay_x/void", &["admin", "payments"]),
        ("POST", "/v1/payments/pay_x/refunds", &["admin", "payments"]),
        ("POST", "/v1/payments/pay_x/represent", &["admin", "payments"]),
        ("GET", "/v1/webhooks/deliveries", all),
        ("GET", "/v1/sync/status", &["admin", "finance", "auditor"]),
        ("GET", "/v1/sync/jobs", &["admin", "finance", "auditor"]),
        ("POST", "/v1/sync/jobs/1/retry", &["admin"]),
        ("POST", "/v1/sync/jobs/1/resolve", &["admin"]),
    ];
    for (method, path, allowed) in &routes {
        let (s, _, _) = app.call(method, path, None, None, Some("{}")).await;
        assert_eq!(s, 401, "{method} {path} without a key");
        for (role, key) in roles {
            let (s, v, _) = app.call(method, path, Some(key), None, Some("{}")).await;
            assert_eq!(
                s == 403,
                !allowed.contains(&role),
                "{method} {path} as {role}: {s} {v}"
            );
        }
    }
    app.stop().await;
}

/// Polls `GET /v1/payments/{id}` until its status is `want` (the background jobs move it).
async fn wait_for_status(app: &App, id: &str, want: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (_, p, _) = app
            .call(
                "GET",
                &format!("/v1/payments/{id}"),
                Some(AUDITOR_KEY),
                None,
                None,
            )
            .await;
        if p["status"].as_str() == Some(want) {
            return p;
        }
        last = p;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payment {id} never reached {want}: {last}");
}

async fn clearing_balance(app: &App) -> String {
    let (_, bal, _) = app
        .call(
            "GET",
            "/v1/ledger/accounts/MAIN/1100/balance",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    bal["balance"].as_str().unwrap_or_default().to_owned()
}

// ACH through `cashloop serve` with the sandbox playing the bank's clock: pending, settled by
// the background poll, then returned R01 with its ledger reversal; re-presented once.
both!(ach_settles_and_returns_over_http, |t| async move {
    add_chart(&t.url);
    let app = App::spawn_config(config_with(&t.url, |toml| {
        toml.replace(
            "processor = \"sandbox\"\n",
            "processor = \"sandbox\"\nresolver_interval_ms = 50\nach_poll_interval_s = 0\nsandbox = { ach_settle_after_ms = 300 }\n",
        )
    }))
    .await;
    let body = r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"000123450001","account_type":"checking","holder_name":"Grace Hopper","sec_code":"WEB"}}"#;
    let (s, tok, _) = app
        .call("POST", "/v1/tokens", Some(PAYMENTS_KEY), None, Some(body))
        .await;
    assert_eq!(s, 201, "{tok}");
    let pay = format!(
        r#"{{"amount":"25.00","currency":"USD","payment_method":"{}","capture":true,"opportunity_id":"006ACH","account_id":"001ACME"}}"#,
        tok["token"].as_str().unwrap()
    );
    let (s, p, _) = app
        .call("POST", "/v1/payments", Some(PAYMENTS_KEY), None, Some(&pay))
        .await;
    assert_eq!((s, p["status"].as_str()), (201, Some("pending")), "{p}");
    let id = p["id"].as_str().unwrap().to_owned();
    assert_eq!(clearing_balance(&app).await, "25.00 USD");
    wait_for_status(&app, &id, "settled").await;
    let returned = wait_for_status(&app, &id, "returned").await;
    assert_eq!(returned["failure_code"].as_str(), Some("R01"), "{returned}");
    assert_eq!(
        clearing_balance(&app).await,
        "0.00 USD",
        "the return reversed the posting"
    );
    // R01 may be presented again.
    let (s, again, _) = app
        .call(
            "POST",
            &format!("/v1/payments/{id}/represent"),
            Some(PAYMENTS_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, again["status"].as_str()),
        (200, Some("pending")),
        "{again}"
    );
    assert_eq!(clearing_balance(&app).await, "25.00 USD");
    app.stop().await;
});

// Authorize.Net as the processor: `cashloop serve` talks to the simulator over HTTP, and the
// simulator's signed webhooks resolve a payment whose answer was lost. Tampered, unsigned,
// stale and replayed notifications are refused or ignored.
both!(
    authorize_net_payments_and_webhooks_over_http,
    |t| async move {
        use gateway::authnet::simulator::{HANG_ZIP, Simulator, SimulatorConfig, sign};
        add_chart(&t.url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let webhook_url = format!(
            "http://{}/v1/processors/authorize_net/webhooks",
            listener.local_addr().unwrap()
        );
        let sim = Simulator::start(SimulatorConfig {
            webhook_url: Some(webhook_url.clone()),
            hang_ms: 2_000,
            ..SimulatorConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tkey = dir.path().join("transaction-key");
        let skey = dir.path().join("signature-key");
        std::fs::write(&tkey, &sim.config().transaction_key).unwrap();
        std::fs::write(&skey, &sim.config().signature_key_hex).unwrap();
        let section = format!(
            "[gateway.authorize_net]\nendpoint = {:?}\napi_login_id = {:?}\ntransaction_key = {{ file = {:?} }}\nsignature_key = {{ file = {:?} }}\ntimeout_ms = 400\n",
            sim.endpoint(),
            sim.config().api_login_id,
            tkey.display().to_string(),
            skey.display().to_string()
        );
        let config = config_with(&t.url, |toml| {
            format!(
                "{}\n{section}",
                toml.replace("processor = \"sandbox\"", "processor = \"authorize_net\"")
            )
        });
        let app = App::spawn_on(config, listener).await;
        let card = |zip: &str| {
            format!(
                r#"{{"type":"card","card":{{"number":"4111111111111111","exp_month":12,"exp_year":2030,"name":"Ada Lovelace","postal_code":"{zip}"}}}}"#
            )
        };
        let (s, good, _) = app
            .call(
                "POST",
                "/v1/tokens",
                Some(PAYMENTS_KEY),
                None,
                Some(&card("10001")),
            )
            .await;
        assert_eq!(s, 201, "{good}");
        let pay = |token: &Value, amount: &str| {
            format!(
                r#"{{"amount":"{amount}","currency":"USD","payment_method":"{}","capture":true,"opportunity_id":"006AN","account_id":"001ACME"}}"#,
                token["token"].as_str().unwrap()
            )
        };
        let (s, sale, _) = app
            .call(
                "POST",
                "/v1/payments",
                Some(PAYMENTS_KEY),
                None,
                Some(&pay(&good, "80.00")),
            )
            .await;
        assert_eq!(
            (s, sale["status"].as_str(), sale["processor"].as_str()),
            (201, Some("captured"), Some("authorize_net")),
            "{sale}"
        );
        let trans_id = sale["processor_ref"].as_str().unwrap().to_owned();
        assert_eq!(sim.transaction(&trans_id).unwrap().settle_minor, 8000);
        // The answer is lost (the simulator holds it past our 400 ms timeout): 202 unknown — or,
        // when the webhook wins the race and resolves the payment before the timeout is applied,
        // already 201 captured. Either way the webhook, not a guess, settled it.
        let (_, slow, _) = app
            .call(
                "POST",
                "/v1/tokens",
                Some(PAYMENTS_KEY),
                None,
                Some(&card(HANG_ZIP)),
            )
            .await;
        let (s, lost, _) = app
            .call(
                "POST",
                "/v1/payments",
                Some(PAYMENTS_KEY),
                None,
                Some(&pay(&slow, "42.00")),
            )
            .await;
        assert!(
            matches!(
                (s, lost["status"].as_str()),
                (202, Some("unknown")) | (201, Some("captured"))
            ),
            "{s} {lost}"
        );
        let lost_id = lost["id"].as_str().unwrap().to_owned();
        // The simulator's signed authcapture.created notification names the transaction; the
        // server asks Authorize.Net about it and resolves the payment (no read needed).
        let mut resolved = false;
        for _ in 0..100 {
            let (n, _, _) = db_count(
                &t,
                "SELECT COUNT(*) FROM gateway_processor_events WHERE outcome LIKE 'resolved%'",
            )
            .await;
            if n > 0 {
                resolved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(resolved, "a webhook resolved the unknown payment");
        let p = wait_for_status(&app, &lost_id, "captured").await;
        assert_eq!(p["captured_minor"].as_i64(), Some(4200), "{p}");
        assert_eq!(clearing_balance(&app).await, "122.00 USD");
        // Replaying a delivered notification: accepted, not acted on again.
        let (body, signature) = sim.sent_notifications()[0].clone();
        let deliver = |body: String, signature: Option<String>| {
            let client = app.client.clone();
            let url = webhook_url.clone();
            async move {
                let mut req = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body);
                if let Some(sig) = signature {
                    req = req.header("X-ANET-Signature", sig);
                }
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap_or(Value::Null))
            }
        };
        let (s, r) = deliver(body.clone(), Some(signature.clone())).await;
        assert_eq!((s, r["status"].as_str()), (200, Some("duplicate")), "{r}");
        // Tampered body, missing signature, wrong key: 401 with a code; nothing recorded.
        let before = db_count(&t, "SELECT COUNT(*) FROM gateway_processor_events")
            .await
            .0;
        let tampered = body.replace("transaction", "transactioN");
        let (s, r) = deliver(tampered.clone(), Some(signature.clone())).await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (401, Some("invalid_signature")),
            "{r}"
        );
        let (s, r) = deliver(body.clone(), None).await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (401, Some("missing_signature")),
            "{r}"
        );
        let forged = sign(&"AB".repeat(64), body.as_bytes());
        let (s, _) = deliver(body.clone(), Some(forged)).await;
        assert_eq!(s, 401);
        // Correctly signed but from last week: refused as stale.
        let mut old: Value = serde_json::from_str(&body).unwrap();
        old["notificationId"] = json!("11111111-2222-3333-4444-555555555555");
        old["eventDate"] = json!("2026-01-01T00:00:00.000Z");
        let old = old.to_string();
        let (s, r) = deliver(
            old.clone(),
            Some(sign(&sim.config().signature_key_hex, old.as_bytes())),
        )
        .await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (422, Some("stale_event")),
            "{r}"
        );
        assert_eq!(
            db_count(&t, "SELECT COUNT(*) FROM gateway_processor_events")
                .await
                .0,
            before
        );
        // Refunds wait for settlement at Authorize.Net, then go through.
        let sale_id = sale["id"].as_str().unwrap();
        let (s, r, _) = app
            .call(
                "POST",
                &format!("/v1/payments/{sale_id}/refunds"),
                Some(PAYMENTS_KEY),
                None,
                Some(r#"{"amount":"30.00"}"#),
            )
            .await;
        assert_eq!(s, 402, "{r}");
        sim.settle();
        let (s, r, _) = app
            .call(
                "POST",
                &format!("/v1/payments/{sale_id}/refunds"),
                Some(PAYMENTS_KEY),
                None,
                Some(r#"{"amount":"30.00"}"#),
            )
            .await;
        assert_eq!(
            (s, r["status"].as_str()),
            (200, Some("partially_refunded")),
            "{r}"
        );
        assert_eq!(clearing_balance(&app).await, "92.00 USD");
        app.stop().await;
    }
);

/// One integer from a `SELECT COUNT(*)` on the test database.
async fn db_count(t: &TestDb, sql: &'static str) -> (i64, (), ()) {
    let n = match &t.db {
        db::Db::Postgres(p) => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(p)
            .await
            .unwrap(),
        db::Db::Sqlite(s) => sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(&s.pool)
            .await
            .unwrap(),
    };
    (n, (), ())
}

/// A 64-hex HMAC key file and a token file for the Salesforce ways in.
fn sync_secrets(dir: &std::path::Path) -> (String, String) {
    let secret = gateway::crypto::generate_key_hex().unwrap().to_string();
    std::fs::write(dir.join("event-secret.hex"), &secret).unwrap();
    std::fs::write(dir.join("outbound-token"), "tok_0123456789abcdef0123").unwrap();
    (secret, "tok_0123456789abcdef0123".to_owned())
}

const ORG: &str = "00D5e000000ABCDEAA";

fn outbound_message(ids: &[&str], org: &str) -> String {
    let notifications: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>0065e00000Gh1J{i}AAJ</sf:Id><sf:StageName>Closed Won</sf:StageName></sObject></Notification>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{org}</OrganizationId><ActionId>04k5e000000XYZ1AAA</ActionId><SessionId xsi:nil="true"/>{notifications}</notifications></soapenv:Body></soapenv:Envelope>"#
    )
}

// Salesforce's ways in (a signed Flow/Apex event, Outbound Messages) become exactly one job
// each, whatever is replayed; forged or foreign messages add nothing. Operators see and act on
// the queue over the API and the CLI.
both!(salesforce_events_become_jobs_once, |t| async move {
    let dir = tempfile::tempdir().unwrap();
    let (secret, token) = sync_secrets(dir.path());
    let section = format!(
        "\n[sync.salesforce]\nevent_secret = {{ file = {:?} }}\noutbound_token = {{ file = {:?} }}\norganization_id = \"{ORG}\"\n",
        dir.path().join("event-secret.hex").display().to_string(),
        dir.path().join("outbound-token").display().to_string()
    );
    let app = App::spawn_config(config_with(&t.url, |toml| format!("{toml}{section}"))).await;
    let key = gateway::crypto::FingerprintKey::from_hex(1, &secret).unwrap();
    let send = |body: String, sig: Option<String>| {
        let client = app.client.clone();
        let url = format!("{}/v1/events/salesforce", app.base);
        async move {
            let mut req = client
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(sig) = sig {
                req = req.header("X-Cashloop-Signature", sig);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let now = chrono::Utc::now().timestamp();
    let event = r#"{"event_id":"evt-0001","object":"Opportunity","record_id":"0065e00000Gh1JkAAJ","stage":"Closed Won","occurred_at":"2026-11-26T12:00:00Z"}"#.to_owned();
    let signed = gateway::webhooks::signature(&key, now, event.as_bytes());
    let (s, r) = send(event.clone(), Some(signed.clone())).await;
    assert_eq!((s, r["duplicate"].as_bool()), (202, Some(false)), "{r}");
    let job_id = r["job_id"].as_i64().unwrap();
    // A replay (same event, even re-signed later) adds nothing.
    let (s, r) = send(
        event.clone(),
        Some(gateway::webhooks::signature(
            &key,
            now + 5,
            event.as_bytes(),
        )),
    )
    .await;
    assert_eq!((s, r["duplicate"].as_bool()), (202, Some(true)), "{r}");
    // Forged, unsigned, stale, malformed: refused.
    let (s, r) = send(event.replace("evt-0001", "evt-0002"), Some(signed.clone())).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (401, Some("invalid_signature")),
        "{r}"
    );
    let (s, r) = send(event.clone(), None).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (401, Some("missing_signature")),
        "{r}"
    );
    let stale_body = event.replace("evt-0001", "evt-0003");
    let (s, _) = send(
        stale_body.clone(),
        Some(gateway::webhooks::signature(
            &key,
            now - 3600,
            stale_body.as_bytes(),
        )),
    )
    .await;
    assert_eq!(s, 401);
    let bad = r#"{"event_id":"","object":"Opportunity","record_id":"x"}"#.to_owned();
    let (s, r) = send(
        bad.clone(),
        Some(gateway::webhooks::signature(&key, now, bad.as_bytes())),
    )
    .await;
    assert_eq!(
        (s, r["error"]["field"].as_str()),
        (422, Some("event_id")),
        "{r}"
    );
    let broken = "{not json".to_owned();
    let (s, _) = send(
        broken.clone(),
        Some(gateway::webhooks::signature(&key, now, broken.as_bytes())),
    )
    .await;
    assert_eq!(s, 400);

    // Outbound messages: Ack after queueing; a resend queues nothing new.
    let soap = |body: String, token: &str| {
        let client = app.client.clone();
        let url = format!("{}/v1/salesforce/outbound?token={token}", app.base);
        async move {
            let r = client
                .post(url)
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let msg = outbound_message(&["04l5e00000A1b2cAAB", "04l5e00000A1b2dAAB"], ORG);
    let (s, body) = soap(msg.clone(), &token).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("<Ack>true</Ack>"), "{body}");
    let (s, body) = soap(msg.clone(), &token).await;
    assert!(s == 200 && body.contains("<Ack>true</Ack>"));
    let (s, body) = soap(msg.clone(), "tok_wrong_wrong_wrong").await;
    assert!(
        s == 401 && body.contains("Fault") && !body.contains("Ack"),
        "{s} {body}"
    );
    let (s, body) = soap(
        outbound_message(&["04l5e00000A1b2eAAB"], "00D000000000001AAA"),
        &token,
    )
    .await;
    assert!(
        s == 403 && body.contains("another organization"),
        "{s} {body}"
    );
    let (s, _) = soap("<nope".into(), &token).await;
    assert_eq!(s, 400);

    // Three jobs in all: one event, two notifications.
    let (s, list, _) = app
        .call(
            "GET",
            "/v1/sync/jobs?status=pending",
            Some(AUDITOR_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{list}");
    let kinds: Vec<&str> = data.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "salesforce.outbound")
            .count(),
        2
    );
    let outbound = data
        .iter()
        .find(|j| j["kind"] == "salesforce.outbound")
        .unwrap();
    assert_eq!(outbound["payload"]["fields"]["StageName"], "Closed Won");
    let (_, st, _) = app
        .call("GET", "/v1/sync/status", Some(FINANCE_KEY), None, None)
        .await;
    assert_eq!(st["jobs"]["by_status"]["pending"].as_i64(), Some(3), "{st}");

    // The error queue: a job fails permanently; the operator retries it, then resolves another.
    let jobs = sync::jobs::Jobs::new(t.db.clone());
    let claimed = jobs
        .claim("test", &["salesforce.event"], 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed[0].id, job_id);
    jobs.fail(
        &claimed[0],
        &sync::jobs::JobError::Permanent("REQUIRED_FIELD_MISSING: Name".into()),
    )
    .await
    .unwrap();
    let (s, dead, _) = app
        .call(
            "GET",
            "/v1/sync/jobs?status=dead",
            Some(ADMIN_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, dead["data"][0]["last_error"].as_str()),
        (200, Some("REQUIRED_FIELD_MISSING: Name"))
    );
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/sync/jobs/{job_id}/resolve"),
            Some(ADMIN_KEY),
            None,
            Some("{}"),
        )
        .await;
    assert_eq!(
        (s, r["error"]["field"].as_str()),
        (422, Some("note")),
        "a resolution needs a note"
    );
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/sync/jobs/{job_id}/retry"),
            Some(ADMIN_KEY),
            None,
            None,
        )
        .await;
    assert_eq!((s, r["status"].as_str()), (200, Some("pending")), "{r}");
    let (s, r, _) = app
        .call(
            "POST",
            &format!("/v1/sync/jobs/{job_id}/retry"),
            Some(ADMIN_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (409, Some("invalid_state")),
        "{r}"
    );
    let (s, _, _) = app
        .call(
            "POST",
            "/v1/sync/jobs/999999/retry",
            Some(ADMIN_KEY),
            None,
            None,
        )
        .await;
    assert_eq!(s, 404);
    // The CLI sees the same queue and resolves a dead job with a note.
    let claimed = jobs
        .claim("test", &["salesforce.event"], 1, Duration::from_secs(30))
        .await
        .unwrap();
    jobs.fail(
        &claimed[0],
        &sync::jobs::JobError::Permanent("still broken".into()),
    )
    .await
    .unwrap();
    let out = cli(&t.url, &["sync", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("dead") && text.contains("pending"),
        "{text}"
    );
    let out = cli(&t.url, &["sync", "jobs", "--status", "dead"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("still broken"));
    let out = cli(
        &t.url,
        &[
            "sync",
            "resolve",
            &job_id.to_string(),
            "--note",
            "duplicate Opportunity; closed in Salesforce",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(jobs.get(job_id).await.unwrap().status, "resolved");
    let out = cli(&t.url, &["sync", "retry", &job_id.to_string()]);
    assert!(!out.status.success(), "a resolved job is not retried");
    assert!(String::from_utf8_lossy(&out.stderr).contains("dead jobs only"));
    app.stop().await;
});

// Salesforce end to end: a Closed Won in the org reaches cashloop as a signed event and is a
// queued job within a second; the scheduled pull mirrors the org's Accounts; the CLI runs a
// round on demand.
both!(salesforce_closed_won_and_scheduled_pulls, |t| async move {
    use sync::salesforce::Record;
    use sync::salesforce::simulator::{Simulator, SimulatorConfig};
    let dir = tempfile::tempdir().unwrap();
    let (secret, _) = sync_secrets(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sim = Simulator::start(SimulatorConfig {
        event_webhook_url: Some(format!("{base}/v1/events/salesforce")),
        event_secret_hex: secret.clone(),
        ..SimulatorConfig::default()
    })
    .await;
    sim.insert_as_user(
        "Account",
        &[
            Record::new("Account").with("Name", "Acme"),
            Record::new("Account").with("Name", "Globex"),
        ],
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sf-client-secret"),
        &sim.config().client_secret,
    )
    .unwrap();
    let section = format!(
        "\n[sync]\nidle_poll_ms = 20\n[sync.salesforce]\nevent_secret = {{ file = {:?} }}\nlogin_url = {:?}\nauth = {{ kind = \"client_credentials\", client_id = {:?}, client_secret = {{ file = {:?} }} }}\nobjects = [{{ name = \"Account\", fields = [\"Name\"] }}]\npoll_interval_s = 3600\nintegration_user_id = {:?}\n",
        dir.path().join("event-secret.hex").display().to_string(),
        sim.base_url(),
        sim.config().client_id,
        dir.path().join("sf-client-secret").display().to_string(),
        sim.config().api_user_id,
    );
    let toml = format!("{}{section}", config_toml(&t.url));
    let app = App::spawn_on(config_with(&t.url, |_| toml.clone()), listener).await;
    // The scheduler queued a pull at start; the worker mirrors both Accounts.
    let mut mirrored = 0;
    for _ in 0..200 {
        mirrored = db_count(&t, "SELECT COUNT(*) FROM sync_sf_records").await.0;
        if mirrored == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(mirrored, 2);
    // Closed Won → signed event → job, within a second.
    let opp = sim
        .insert_as_user(
            "Opportunity",
            &[Record::new("Opportunity")
                .with("Name", "Acme renewal")
                .with("StageName", "Prospecting")
                .with("CloseDate", "2026-12-15")],
        )
        .unwrap()
        .remove(0);
    let started = std::time::Instant::now();
    sim.update_as_user(
        "Opportunity",
        &opp,
        &Record::new("Opportunity").with("StageName", "Closed Won"),
    )
    .unwrap();
    let mut found = None;
    while started.elapsed() < Duration::from_secs(1) {
        let (_, list, _) = app
            .call(
                "GET",
                "/v1/sync/jobs?status=pending",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        found = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "salesforce.event" && j["payload"]["record_id"] == opp.as_str())
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job = found.unwrap_or_else(|| panic!("no job within a second of Closed Won"));
    assert_eq!(job["payload"]["stage"], "Closed Won");
    assert_eq!(sim.events_sent().len(), 1);
    app.stop().await;
    // The CLI: one round now, for one object.
    sim.insert_as_user("Account", &[Record::new("Account").with("Name", "Initech")])
        .unwrap();
    let path = dir.path().join("cashloop.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "sync",
            "run",
            "--once",
            "--object",
            "Account",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pulled Account") && text.contains("1 changes queued"),
        "{text}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args([
            "--config",
            path.to_str().unwrap(),
            "sync",
            "run",
            "--once",
            "--object",
            "Contact",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--object"));
    assert_eq!(
        db_count(&t, "SELECT COUNT(*) FROM sync_sf_records").await.0,
        3
    );
});

/// `cashloop sandbox --sage x3`: the same seeded deals through the X3 simulator — orders routed
/// to two folders with their sites, invoiced, pulled, two card payments applied as receipts.
#[tokio::test]
async fn sandbox_runs_the_loop_on_sage_x3() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args([
            "sandbox",
            "--sage",
            "x3",
            "--listen",
            "127.0.0.1:0",
            "--exit",
            "--extra-deals",
            "2",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("CASHLOOP_LOG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    let figures: serde_json::Value =
        serde_json::from_str(text.lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(figures["sage"], "x3", "{text}");
    assert_eq!(figures["deals"], 6, "{text}");
    assert_eq!(figures["ordered"], 6, "{text}");
    assert_eq!(figures["invoiced"], 6, "{text}");
    assert_eq!(figures["x3_customers"], 6, "{text}");
    assert_eq!(figures["x3_orders"], 6, "{text}");
    assert_eq!(figures["x3_invoices"], 6, "{text}");
    assert_eq!(figures["payments"], 2, "{text}");
    assert_eq!(figures["payments_applied"], 2, "{text}");
    assert_eq!(figures["x3_receipts"], 2, "{text}");
    for want in [
        "Sage X3 sim",
        "UKLIVE  ",
        "GB011/GB012",
        "FR011/FR012",
        "US011/US012",
        "Partially Paid",
        "UK  1200  Accounts receivable",
        "US  4000  Subscription revenue",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!text.contains("4111111111111111") && !err.contains("4111111111111111"));
    assert!(!text.contains("x3-pass-0123") && !err.contains("x3-pass-0123"));
}

/// `cashloop sandbox --sage sage100|businessworks`: the seeded deals through an on-premise line
/// with its agent started — customers and orders made by the agent, invoices read back over the
/// real ODBC driver, card payments imported as Visual Integrator receipts (Sage 100) or sent to
/// review and keyed by a person (BusinessWorks), the balances back in Salesforce.
#[tokio::test]
async fn sandbox_runs_the_loop_on_the_on_premise_lines() {
    for line in ["sage100", "businessworks"] {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .args([
                "sandbox",
                "--sage",
                line,
                "--listen",
                "127.0.0.1:0",
                "--exit",
                "--extra-deals",
                "2",
                "--dir",
            ])
            .arg(dir.path())
            .env_remove("CASHLOOP_LOG")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{line}: {text}\n{err}");
        let figures: serde_json::Value =
            serde_json::from_str(text.lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
        assert_eq!(figures["sage"], line, "{text}");
        for (k, n) in [
            ("deals", 6),
            ("ordered", 6),
            ("invoiced", 6),
            ("sage_customers", 6),
            ("sage_orders", 6),
            ("sage_invoices", 6),
            ("payments", 2),
            ("payments_applied", 2),
        ] {
            assert_eq!(figures[k], n, "{line} {k}: {text}");
        }
        if line == "sage100" {
            assert_eq!(figures["vi_files_posted"], 2, "{text}");
            assert_eq!(figures["review_items"], 0, "{text}");
            assert!(text.contains("US  2200  Sales tax payable"), "{text}");
        } else {
            assert_eq!(figures["review_items"], 2, "{text}");
            assert_eq!(figures["vi_files_posted"], 0, "{text}");
        }
        for want in ["Paid", "Partially Paid", "US  1200  Accounts receivable"] {
            assert!(text.contains(want), "{line}: {want:?} missing:\n{text}");
        }
        assert!(!text.contains("4111111111111111") && !err.contains("4111111111111111"));
    }
}

/// `cashloop sandbox`: the whole loop from a clean machine state — the server and the three
/// simulators on loopback, seeded deals in USD and EUR in two entities, invoices written back,
/// two card payments and a cheque, the ledger — and it says so.
#[tokio::test]
async fn sandbox_runs_the_whole_loop() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--exit",
            "--extra-deals",
            "4",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("CASHLOOP_LOG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    let figures: serde_json::Value =
        serde_json::from_str(text.lines().rfind(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(figures["deals"], 8, "{text}");
    assert_eq!(figures["invoiced"], 8, "{text}");
    assert_eq!(figures["intacct_invoices"], 8);
    // Globex existed in Intacct already: 8 accounts, 7 created, 1 linked.
    assert_eq!(figures["intacct_customers"], 8);
    assert_eq!(figures["payments"], 2);
    assert_eq!(
        figures["intacct_ar_payments"], 3,
        "two gateway payments and a cheque"
    );
    for want in [
        "Acme Corporation",
        "Paid",
        "Partially Paid",
        "A cheque keyed into Intacct",
        "UK  1010  Undeposited funds",
        "US  1100  Processor clearing",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    // No card number anywhere: not in the output, the logs, the database or the config.
    assert!(!text.contains("4111111111111111") && !err.contains("4111111111111111"));
    let db = std::fs::read(dir.path().join("cashloop.db")).unwrap();
    assert!(!db.windows(16).any(|w| w == b"4111111111111111"));
    assert!(dir.path().join("cashloop.toml").exists());
    // The gateway's payments feed a reconciliation: taken in with the Intacct customer and
    // entity the loop linked, and the invoice number it billed.
    let rc = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .arg("--config")
            .arg(dir.path().join("cashloop.toml"))
            .arg("reconcile")
            .args(args)
            .env_remove("CASHLOOP_LOG")
            .output()
            .unwrap()
    };
    let out = rc(&["import", "--kind", "payments", "--from-gateway"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        imported["rows"], 0,
        "the loop applies payments on invoiced Opportunities: {imported}"
    );
    let out = rc(&[
        "import",
        "--kind",
        "payments",
        "--from-gateway",
        "--include-applied",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(imported["added"], 2, "{imported}");
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let out = rc(&["run", "--period", &month]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let payments: Vec<&serde_json::Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "payment")
        .collect();
    assert_eq!(payments.len(), 2, "{report}");
    for p in payments {
        assert!(p["entity"] == "US" || p["entity"] == "UK", "{p}");
        assert!(p["customer"].as_str().unwrap().starts_with("SF"), "{p}");
    }
    // A second sandbox refuses a used directory rather than mixing data.
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--exit", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--dir"));
}

/// `cashloop reconcile run` over exported files: a report per category, and bad input refused
/// before the run starts, every bad line named.
#[test]
fn reconcile_run_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(
        p("payments.csv"),
        "id,entity,customer,currency,amount,date,reference,source,batch_id\n\
         P1,US,ACME,USD,1082.50,2026-10-05,Payment for INV-1001,sage_receipt,\n\
         P2,US,GLOBEX,USD,500.00,2026-10-07,on account INV-1002,sage_receipt,\n\
         P3,US,INITECH,USD,75.00,2026-11-02,INV-1003,sage_receipt,\n",
    )
    .unwrap();
    std::fs::write(
        p("invoices.csv"),
        "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
         I1,INV-1001,invoice,US,ACME,USD,1082.50,2026-09-20,2026-10-20\n\
         I2,INV-1002,invoice,US,GLOBEX,USD,800.00,2026-09-25,2026-10-25\n\
         I3,INV-1004,invoice,US,UMBRELLA,USD,42.00,2026-10-01,2026-10-31\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .args(["reconcile", "run", "--payments"])
            .arg(p("payments.csv"))
            .arg("--invoices")
            .arg(p("invoices.csv"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--period", "2026-10"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let payments = &summary["payments"];
    assert_eq!(payments["matched"]["count"], 1, "{summary}");
    assert_eq!(
        payments["timing"]["count"], 1,
        "after the period end: {summary}"
    );
    assert_eq!(
        payments["partial_beyond_tolerance"]["count"], 1,
        "{summary}"
    );
    assert_eq!(
        summary["items"]["unmatched_invoice"]["count"], 1,
        "{summary}"
    );
    // Every input in exactly one category.
    let count = |m: &serde_json::Value| {
        m.as_object()
            .unwrap()
            .values()
            .map(|c| c["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((count(payments), count(&summary["items"])), (3, 3));

    let csv_out = run(&[
        "--format",
        "csv",
        "--out",
        p("report.csv").to_str().unwrap(),
    ]);
    assert!(csv_out.status.success());
    let report = std::fs::read_to_string(p("report.csv")).unwrap();
    assert!(
        report
            .starts_with("kind,id,entity,customer,category,rule,confidence,currency,amount_minor")
    );
    assert!(
        report.contains("payment,P1,US,ACME,matched,exact_reference,"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 7);

    // Bad input: the run does not start; each bad line is named with its column.
    std::fs::write(
        p("invoices.csv"),
        "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
         I1,INV-1001,invoice,US,ACME,USD,10.005,2026-09-20,2026-10-20\n\
         I2,INV-1002,invoice,US,GLOBEX,XXX,800.00,2026-09-25,2026-10-25\n\
         I3,INV-1003,invoice,US,ACME,USD,5.00,2026-13-01,2026-10-31\n",
    )
    .unwrap();
    let bad = run(&[]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("did not start"), "{err}");
    for want in [
        "line 2",
        "amount_open",
        "line 3",
        "currency",
        "line 4",
        "date",
    ] {
        assert!(err.contains(want), "{want:?} missing: {err}");
    }
    assert!(bad.stdout.is_empty());
    let bad_period = run(&["--period", "2026-13"]);
    assert!(!bad_period.status.success());
    assert!(String::from_utf8_lossy(&bad_period.stderr).contains("--period"));
}

// The month-end flow from the command line on one database: import (refused whole on a bad
// line), run, a second process kept out by the period lease, report in three formats,
// approve the adjustments into the ledger.
both!(reconcile_stored_runs, |t| async move {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let url = t.url.clone();
    add_chart(&url);
    for (code, name, ty) in [
        ("6100", "Bad debt written off", "expense"),
        ("7100", "FX gain/loss", "revenue"),
        ("2300", "Unapplied cash", "liability"),
    ] {
        let out = cli(
            &url,
            &[
                "ledger",
                "account",
                "add",
                "--code",
                code,
                "--name",
                name,
                "--type",
                ty,
                "--currency",
                "USD",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(
        p("cashloop.toml"),
        "[reconcile.accounts.USD]\nreceivable = \"1200\"\nwrite_off = \"6100\"\nfx_gain_loss = \"7100\"\nunapplied_cash = \"2300\"\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .arg("--database-url")
            .arg(&url)
            .arg("--config")
            .arg(p("cashloop.toml"))
            .arg("reconcile")
            .args(args)
            .output()
            .unwrap()
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    std::fs::write(
        p("payments.csv"),
        "id,entity,customer,currency,amount,date,reference,source,batch_id\n\
         P1,US,ACME,USD,1082.50,2026-10-05,Payment for INV-1001,sage_receipt,\n\
         P2,US,GLOBEX,USD,799.50,2026-10-07,INV-1002,ach_settlement,\n\
         P3,US,INITECH,USD,75.00,2026-11-02,INV-1003,sage_receipt,\n",
    )
    .unwrap();
    std::fs::write(
        p("invoices.csv"),
        "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
         I1,INV-1001,invoice,US,ACME,USD,1082.50,2026-09-20,2026-10-20\n\
         I2,INV-1002,invoice,US,GLOBEX,USD,800.00,2026-09-25,2026-10-25\n\
         I3,INV-1004,invoice,US,<b>UMBRELLA</b>,USD,42.00,2026-10-01,2026-10-31\n",
    )
    .unwrap();
    std::fs::write(
        p("bad.csv"),
        "id,number,kind,entity,customer,currency,amount_open,date,due_date\n\
         I9,INV-9,invoice,US,X,USD,1.00,2026-10-01,2026-10-31\n\
         I8,INV-8,bill,US,X,USD,1.00,2026-10-01,2026-10-31\n",
    )
    .unwrap();
    let v = ok(&run(&[
        "import",
        "--kind",
        "payments",
        p("payments.csv").to_str().unwrap(),
    ]));
    assert_eq!(v["added"], 3, "{v}");
    let bad = run(&[
        "import",
        "--kind",
        "invoices",
        p("bad.csv").to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("nothing was imported") && err.contains("line 3, column kind"),
        "{err}"
    );
    let v = ok(&run(&[
        "import",
        "--kind",
        "invoices",
        "--snapshot",
        p("invoices.csv").to_str().unwrap(),
    ]));
    assert_eq!(
        (v["added"].as_u64(), v["closed"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    let v = ok(&run(&[
        "import",
        "--kind",
        "invoices",
        "--snapshot",
        p("invoices.csv").to_str().unwrap(),
    ]));
    assert_eq!(v["unchanged"], 3, "importing again adds nothing: {v}");

    let out = run(&["run", "--period", "2026-10"]);
    let report = ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reference_pass done"),
        "progress is shown"
    );
    let id = report["run"]["id"].as_i64().expect("stored run id");
    assert_eq!(
        report["totals"]["payment"]["matched"]["count"], 1,
        "{report}"
    );
    assert_eq!(
        report["totals"]["payment"]["partial_within_tolerance"]["count"], 1,
        "{report}"
    );
    assert_eq!(
        report["totals"]["payment"]["timing"]["count"], 1,
        "{report}"
    );
    assert_eq!(
        report["totals"]["item"]["unmatched_invoice"]["count"], 1,
        "{report}"
    );
    let digest = report["run"]["digest"].as_str().unwrap().to_owned();
    let again = ok(&run(&["run", "--period", "2026-10", "--dry-run"]));
    assert_eq!(
        again["run"]["digest"],
        digest.as_str(),
        "same inputs, same results"
    );
    assert!(again["run"]["id"].is_null());

    // Another process holds October: this run does not start (exit 3) and says who holds it.
    let store = reconcile::store::Store::new(t.db.clone());
    store
        .acquire_lease("2026-10|", "finance-box:42", 60_000)
        .await
        .unwrap();
    let busy = run(&["run", "--period", "2026-10"]);
    assert_eq!(
        busy.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(String::from_utf8_lossy(&busy.stderr).contains("finance-box:42"));
    store
        .release_lease("2026-10|", "finance-box:42")
        .await
        .unwrap();

    let ids = id.to_string();
    let html_path = p("report.html");
    ok(&run(&[
        "report",
        &ids,
        "--format",
        "html",
        "--out",
        html_path.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(
        html.contains(&format!("Reconciliation run {id}"))
            && html.contains("partial_within_tolerance")
    );
    assert!(
        html.contains("&lt;b&gt;UMBRELLA") && !html.contains("<b>UMBRELLA"),
        "escaped"
    );
    let csv = run(&["report", &ids, "--format", "csv"]);
    assert!(csv.status.success());
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(
        csv.contains("payment,P2,US,GLOBEX,partial_within_tolerance,exact_reference,"),
        "{csv}"
    );
    let missing = run(&["report", "999"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no reconciliation run 999"));

    let report = ok(&run(&["report", &ids]));
    let adjustments = report["adjustments"].as_array().unwrap();
    assert_eq!(adjustments.len(), 1, "{report}");
    assert_eq!(adjustments[0]["kind"], "write_off");
    assert_eq!(adjustments[0]["amount_minor"], 50);
    let approved = ok(&run(&["approve", &ids, "--all"]));
    assert_eq!(approved.as_array().map(Vec::len), Some(1), "{approved}");
    let approved = ok(&run(&["approve", &ids, "--all"]));
    assert_eq!(
        approved.as_array().map(Vec::len),
        Some(0),
        "approved once only"
    );
    let bal = cli(&url, &["ledger", "balance", "--account", "6100"]);
    let bal = String::from_utf8_lossy(&bal.stdout);
    assert!(bal.contains("0.50"), "{bal}");

    let runs = ok(&run(&["runs"]));
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "the dry run is not stored: {runs}"
    );
    let apply = run(&["apply", &ids]);
    assert!(!apply.status.success());
    assert!(String::from_utf8_lossy(&apply.stderr).contains("[sync.intacct]"));
});

/// Cash application against a live sandbox: Intacct's open invoices imported, a bank receipt
/// matched by its reference, the match applied in Intacct by the server's job worker, and the
/// invoice gone from the next open-item snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_cash_application_reaches_intacct() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.path())
        .env_remove("CASHLOOP_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains("keeps running") {
                return;
            }
        }
        panic!("the sandbox stopped before it was ready");
    })
    .await
    .expect("sandbox ready");
    let config = dir.path().join("cashloop.toml");
    let rc = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .arg("--config")
            .arg(&config)
            .arg("reconcile")
            .args(args)
            .env_remove("CASHLOOP_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = rc(&["import", "--kind", "invoices", "--from-intacct"]);
    let open = first["added"].as_u64().unwrap();
    assert!(
        open >= 2,
        "unpaid sandbox invoices are open in Intacct: {first}"
    );

    // Pick an open invoice from what was imported, and pay it by bank transfer.
    let db = db::Db::connect(
        &format!("sqlite://{}", dir.path().join("cashloop.db").display()),
        &db::DbOptions::default(),
    )
    .await
    .unwrap();
    let store = reconcile::store::Store::new(db.clone());
    let inputs = store
        .load(
            store.high_water().await.unwrap(),
            None,
            chrono::NaiveDate::MIN,
        )
        .await
        .unwrap();
    let inv = inputs
        .open_items
        .iter()
        .find(|i| i.open.currency().code() == "USD")
        .expect("an open USD invoice");
    let today = chrono::Utc::now().date_naive();
    let receipt = dir.path().join("bank.csv");
    std::fs::write(
        &receipt,
        format!(
            "id,entity,customer,currency,amount,date,reference,source,batch_id\n\
             WIRE-1,{},{},USD,{},{today},remittance {},ach_settlement,\n",
            inv.entity.as_str(),
            inv.customer.as_str(),
            inv.open.money().format_amount(),
            inv.number.as_str()
        ),
    )
    .unwrap();
    rc(&["import", "--kind", "payments", receipt.to_str().unwrap()]);
    let month = today.format("%Y-%m").to_string();
    let report = rc(&["run", "--period", &month]);
    let wire = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["item_key"] == "WIRE-1")
        .unwrap();
    assert_eq!(wire["category"], "matched", "{report}");
    assert_eq!(wire["rule"], "exact_reference");
    let run = report["run"]["id"].as_i64().unwrap().to_string();
    let applied = rc(&["apply", &run]);
    assert_eq!(applied["jobs_queued"], 1, "{applied}");
    assert_eq!(rc(&["apply", &run])["jobs_queued"], 0, "queued once");

    // The server's worker applies it in Intacct.
    let status = || async {
        match &db {
            db::Db::Sqlite(s) => sqlx::query_scalar::<_, String>(
                "SELECT status FROM sync_jobs WHERE kind = 'intacct.apply'",
            )
            .fetch_optional(&s.pool)
            .await
            .unwrap(),
            db::Db::Postgres(_) => unreachable!(),
        }
    };
    let mut last = None;
    for _ in 0..200 {
        last = status().await;
        if matches!(last.as_deref(), Some("succeeded" | "dead")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last.as_deref(), Some("succeeded"));
    let again = rc(&["import", "--kind", "invoices", "--from-intacct"]);
    assert_eq!(
        again["closed"], 1,
        "the paid invoice is no longer open: {again}"
    );
    assert_eq!(again["unchanged"].as_u64(), Some(open - 1));
    child.kill().await.unwrap();
}

mod agent;
mod alerts;
mod browser;
mod console;
mod observability;
mod sage100;
mod webdriver;
