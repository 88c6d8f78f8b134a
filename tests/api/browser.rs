//! The operator console and the hosted payment page in headless Chromium, against a live
//! `cashloop sandbox` (server, Salesforce, Intacct and Authorize.Net simulators, seeded
//! deals). One browser and one sandbox for the whole run; the scenarios run in order, each
//! saving screenshots under `target/screenshots/`.
//!
//! Without Chromium these tests fail (CI installs it); `CASHLOOP_SKIP_BROWSER_TESTS=1` skips
//! them on a machine that has no browser.

use super::webdriver::Browser;
use super::*;

/// What the sandbox printed: where it serves, how to log in, its API key.
struct Sandbox {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    base: String,
    password: String,
    api_key: String,
    pay_url: String,
}

impl Sandbox {
    async fn start() -> Sandbox {
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
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                out.push_str(&l);
                out.push('\n');
                if l.contains("keeps running") {
                    return;
                }
            }
            panic!("the sandbox stopped before it was ready:\n{out}");
        })
        .await
        .expect("sandbox ready");
        let after = |marker: &str| -> String {
            let line = out
                .lines()
                .find(|l| l.contains(marker))
                .unwrap_or_else(|| panic!("{marker:?} missing:\n{out}"));
            line[line.find(marker).unwrap() + marker.len()..]
                .split([' ', ')'])
                .find(|s| !s.is_empty())
                .unwrap()
                .to_owned()
        };
        Sandbox {
            base: after("cashloop API").trim().to_owned(),
            password: after("password "),
            api_key: after("Bearer "),
            pay_url: after("payment page"),
            child,
            dir,
        }
    }

    async fn db(&self) -> db::Db {
        db::Db::connect(
            &format!("sqlite://{}", self.dir.path().join("cashloop.db").display()),
            &db::DbOptions::default(),
        )
        .await
        .unwrap()
    }

    fn cli(&self, args: &[&str]) -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .arg("--config")
            .arg(self.dir.path().join("cashloop.toml"))
            .args(args)
            .env_remove("CASHLOOP_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Fills an input (clearing it first).
async fn fill(b: &Browser, css: &str, text: &str) {
    let e = b.find(css).await;
    e.clear().await;
    e.send_keys(text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_and_payment_page_in_chromium() {
    if std::env::var("CASHLOOP_SKIP_BROWSER_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("CASHLOOP_SKIP_BROWSER_TESTS=1: browser tests skipped");
        return;
    }
    let (sandbox, browser) = tokio::join!(Sandbox::start(), Browser::start());
    log_in(&browser, &sandbox).await;
    dashboard_fills_from_sandbox_data(&browser, &sandbox).await;
    retry_an_errored_job_and_watch_it_succeed(&browser, &sandbox).await;
    open_a_reconciliation_run_and_its_items(&browser, &sandbox).await;
    hosted_page_shows_errors_inline_and_takes_a_card(&browser, &sandbox).await;
    hosted_page_takes_a_bank_account(&browser, &sandbox).await;
    logout_ends_the_session(&browser, &sandbox).await;
    browser.quit().await;
    drop(sandbox.child);
}

/// An unauthenticated visit lands on the login form; a wrong password is refused inline; the
/// right one, typed with the keyboard alone, reaches the page asked for; the skip link works.
async fn log_in(b: &Browser, s: &Sandbox) {
    b.goto(&format!("{}/console/payments", s.base)).await;
    b.find("#login").await;
    assert!(
        b.url().await.contains("/console/login?next="),
        "{}",
        b.url().await
    );
    fill(b, "#user", "admin").await;
    fill(b, "#password", "not the password").await;
    b.find("#login").await.click().await;
    b.wait_text("[role=alert]", "Wrong user name or password")
        .await;
    b.screenshot("01-login-refused").await;
    // The keyboard alone: the name field has the focus; Tab to the password, Enter to submit.
    b.goto(&format!(
        "{}/console/login?next=%2Fconsole%2Fpayments",
        s.base
    ))
    .await;
    b.find("#login").await;
    assert_eq!(
        b.active().await.attribute("id").await.as_deref(),
        Some("user")
    );
    b.keys(&format!("admin{TAB}{}{ENTER}", s.password)).await;
    // Back where we were going.
    b.wait_text("h1", "Payments").await;
    assert!(b.url().await.ends_with("/console/payments"));
    b.screenshot("02-logged-in").await;
    // The first Tab reaches the skip link; following it puts the focus on the content.
    b.goto(&format!("{}/console/payments", s.base)).await;
    b.find("#payments").await;
    b.keys(TAB).await;
    assert_eq!(b.active().await.text().await, "Skip to content");
    b.keys(ENTER).await;
    assert_eq!(
        b.active().await.attribute("id").await.as_deref(),
        Some("main")
    );
    b.keys(TAB).await;
    assert_eq!(
        b.active().await.attribute("id").await.as_deref(),
        Some("p-opp"),
        "the search form is next"
    );
}

/// WebDriver's Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// The dashboard shows the sandbox's traffic: flows with latency percentiles, sync status per
/// job kind, and (once two samples exist) the charts.
async fn dashboard_fills_from_sandbox_data(b: &Browser, s: &Sandbox) {
    let base = &s.base;
    b.goto(&format!("{base}/console")).await;
    b.wait_text("h1", "Dashboard").await;
    let flows = b.find("#flows").await.text().await;
    assert!(flows.contains("POST /v1/payments"), "{flows}");
    // Salesforce's Closed Won events ran as jobs (each deal's invoice came from one).
    assert!(flows.contains("job salesforce.event"), "{flows}");
    assert!(flows.contains("POST /v1/events/salesforce"), "{flows}");
    let sync = b.find("#sync-status").await.text().await;
    assert!(sync.contains("salesforce.event"), "{sync}");
    assert!(sync.contains("intacct.payment"), "{sync}");
    // The org's API quota as the Salesforce simulator reports it (Sforce-Limit-Info).
    let quota = b.find("#api-quota").await.text().await;
    assert!(quota.contains("Salesforce API requests today:"), "{quota}");
    assert!(quota.contains("left"), "{quota}");
    // The sampler runs every 5 s: the charts appear within a few reloads.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while b.try_find("#chart-throughput").await.is_none() {
        assert!(std::time::Instant::now() < until, "no throughput chart");
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.goto(&format!("{base}/console")).await;
    }
    assert!(b.try_find("#chart-latency path").await.is_some());
    b.screenshot("03-dashboard").await;
}

/// A dead job (an Intacct pull that failed while Intacct was down) is retried from the error
/// queue; the job page follows it to `succeeded`.
async fn retry_an_errored_job_and_watch_it_succeed(b: &Browser, s: &Sandbox) {
    let db = s.db().await;
    let now = db::sqlite_ts(chrono::Utc::now());
    let db::Db::Sqlite(lite) = &db else {
        unreachable!("the sandbox is SQLite")
    };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO sync_jobs (kind, payload, dedupe_key, status, attempts, max_attempts, run_at, \
         last_error, last_error_kind, created_at, updated_at, finished_at) \
         VALUES ('intacct.pull', '{\"entity\":\"US\"}', 'browser-test-dead-pull', 'dead', 8, 8, ?1, \
         'Intacct answered 503 Service Unavailable (8 attempts)', 'retryable', ?1, ?1, ?1) RETURNING id",
    )
    .bind(&now)
    .fetch_one(&lite.pool)
    .await
    .unwrap();
    b.goto(&format!("{}/console/jobs", s.base)).await;
    b.wait_text("#jobs", "Intacct answered 503").await;
    // The filter by kind keeps it; a text filter that matches nothing hides it.
    fill(b, "#f-q", "no such error anywhere").await;
    b.find("form.filters button").await.click().await;
    b.wait_text("#jobs", "Nothing to show").await;
    fill(b, "#f-q", "503").await;
    b.find("form.filters button").await.click().await;
    b.wait_text("#jobs", "Intacct answered 503").await;
    b.screenshot("04-error-queue").await;
    b.find(&format!("#retry-{id}")).await.click().await;
    b.wait_text("h1", &format!("Job {id}")).await;
    b.wait_text("#job-status", "succeeded").await;
    b.screenshot("05-job-retried").await;
    // Audited under the console user.
    b.goto(&format!("{}/console/audit?actor=console%3Aadmin", s.base))
        .await;
    b.wait_text("#audit", "sync.job.retry").await;
    db.close().await;
}

/// A reconciliation run over the gateway's payments: the runs page with its outcome chart,
/// the run's totals, and the drill-down into one category.
async fn open_a_reconciliation_run_and_its_items(b: &Browser, s: &Sandbox) {
    s.cli(&[
        "reconcile",
        "import",
        "--kind",
        "payments",
        "--from-gateway",
        "--include-applied",
    ]);
    s.cli(&[
        "reconcile",
        "import",
        "--kind",
        "invoices",
        "--from-intacct",
    ]);
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let report = s.cli(&["reconcile", "run", "--period", &month]);
    let run = report["run"]["id"].as_i64().unwrap();
    b.goto(&format!("{}/console/reconciliation", s.base)).await;
    b.wait_text("#runs", &format!("Run {run}")).await;
    assert!(
        b.try_find("#chart-recon rect").await.is_some(),
        "outcome chart"
    );
    b.screenshot("06-reconciliation-runs").await;
    b.find(&format!("a[href='/console/reconciliation/{run}']"))
        .await
        .click()
        .await;
    b.wait_text("h1", &format!("Reconciliation run {run}"))
        .await;
    let totals = b.find("#totals").await.text().await;
    let first = report["results"][0]["category"]
        .as_str()
        .unwrap()
        .to_owned();
    let first_kind = report["results"][0]["kind"].as_str().unwrap().to_owned();
    assert!(totals.contains(&first), "{totals}");
    // Drill down into the first result's category.
    let links = b.find_all("#totals a").await;
    let mut clicked = false;
    let href = format!("kind={first_kind}&category={first}");
    for l in &links {
        if l.attribute("href").await.is_some_and(|h| h.contains(&href)) {
            l.click().await;
            clicked = true;
            break;
        }
    }
    assert!(clicked, "a link for {first}");
    let caption = b.wait_text("#items-table caption", &first).await;
    let want = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["category"] == first.as_str() && r["kind"] == first_kind.as_str())
        .count();
    assert!(caption.starts_with(&format!("{want} items")), "{caption}");
    let key = report["results"][0]["item_key"].as_str().unwrap();
    b.wait_text("#items-table", key).await;
    b.screenshot("07-reconciliation-drill-down").await;
}

/// The hosted page: a mistyped card number is shown next to its field, a declined card shows
/// the processor's decline, a good card pays and the receipt names the payment, which the
/// console then finds by the Opportunity; the link cannot be paid twice.
async fn hosted_page_shows_errors_inline_and_takes_a_card(b: &Browser, s: &Sandbox) {
    b.goto(&s.pay_url).await;
    b.wait_text("h1", "Pay your invoice").await;
    let amount = b.find("#pay-amount").await.text().await;
    assert!(amount.ends_with("USD"), "{amount}");
    b.screenshot("08-payment-page").await;
    // A Luhn mistake, inline.
    fill(b, "#card_number", "4111 1111 1111 1112").await;
    fill(b, "#exp_month", "12").await;
    fill(b, "#exp_year", "2030").await;
    fill(b, "#cvv", "123").await;
    fill(b, "#name", "Hank Scorpio").await;
    fill(b, "#postal_code", "10001").await;
    b.find("#pay").await.click().await;
    b.wait_text("#card_number-error", "Luhn").await;
    let field = b.find("#card_number").await;
    assert_eq!(
        field.attribute("aria-invalid").await.as_deref(),
        Some("true")
    );
    assert_eq!(
        field.attribute("value").await.as_deref(),
        Some(""),
        "never echoed"
    );
    b.screenshot("09-payment-invalid-card").await;
    // Authorize.Net declines billing postcode 46282.
    fill(b, "#card_number", "4111111111111111").await;
    fill(b, "#cvv", "123").await;
    fill(b, "#postal_code", "46282").await;
    b.find("#pay").await.click().await;
    b.wait_text("#payment-error", "declined").await;
    b.screenshot("10-payment-declined").await;
    // Paid.
    fill(b, "#card_number", "4111111111111111").await;
    fill(b, "#cvv", "123").await;
    fill(b, "#postal_code", "10001").await;
    b.find("#pay").await.click().await;
    b.wait_text("h1", "Receipt").await;
    let payment = b.find("#receipt-payment").await.text().await;
    assert!(payment.starts_with("pay_"), "{payment}");
    assert_eq!(b.find("#receipt-status").await.text().await, "Paid");
    b.screenshot("11-payment-receipt").await;
    // Paid once: the page now shows the receipt.
    b.goto(&s.pay_url).await;
    b.wait_text("h1", "Receipt").await;
    // In the console, by the Opportunity.
    let db = s.db().await;
    let db::Db::Sqlite(lite) = &db else {
        unreachable!()
    };
    let (opp, status): (String, String) =
        sqlx::query_as("SELECT opportunity_id, status FROM payment_links WHERE payment_id = ?")
            .bind(&payment)
            .fetch_one(&lite.pool)
            .await
            .unwrap();
    assert_eq!(status, "paid");
    db.close().await;
    b.goto(&format!("{}/console/payments", s.base)).await;
    fill(b, "#p-opp", &opp).await;
    b.find("form.filters button").await.click().await;
    b.wait_text("#payments", &payment).await;
    b.screenshot("12-console-finds-the-card-payment").await;
    // The declined attempt is there too, as failed.
    let text = b.find("#payments").await.text().await;
    assert!(text.contains("failed"), "{text}");
}

/// A link created through the API, paid by bank account (ACH: pending until settled), found
/// in the console by status.
async fn hosted_page_takes_a_bank_account(b: &Browser, s: &Sandbox) {
    let db = s.db().await;
    let db::Db::Sqlite(lite) = &db else {
        unreachable!()
    };
    let (opp, account): (String, String) =
        sqlx::query_as("SELECT opportunity_id, account_id FROM payment_links LIMIT 1")
            .fetch_one(&lite.pool)
            .await
            .unwrap();
    db.close().await;
    let resp = gateway::http::client()
        .post(format!("{}/v1/payment_links", s.base))
        .bearer_auth(&s.api_key)
        .json(
            &json!({"opportunity_id": opp, "account_id": account, "amount": "250.00",
                      "currency": "USD", "invoice_ref": "SUPPORT-1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let link: Value = resp.json().await.unwrap();
    b.goto(link["url"].as_str().unwrap()).await;
    b.wait_text("#pay-amount", "250.00 USD").await;
    b.find("#method-bank").await.click().await;
    // The progressive script hides the card fields.
    assert_eq!(
        b.find("#card-fields")
            .await
            .attribute("hidden")
            .await
            .as_deref(),
        Some("true")
    );
    fill(b, "#routing_number", "110000000").await;
    fill(b, "#account_number", "000123456789").await;
    fill(b, "#holder_name", "Globex Inc").await;
    b.screenshot("13-payment-bank-account").await;
    b.find("#pay").await.click().await;
    b.wait_text("h1", "Receipt").await;
    let payment = b.find("#receipt-payment").await.text().await;
    assert!(
        b.find("#receipt")
            .await
            .text()
            .await
            .contains("Bank account ending 6789")
    );
    b.screenshot("14-bank-receipt").await;
    b.goto(&format!("{}/console/payments?status=pending", s.base))
        .await;
    b.wait_text("#payments", &payment).await;
    b.screenshot("15-console-finds-the-bank-payment").await;
}

/// Logging out ends the session: the console asks for a login again.
async fn logout_ends_the_session(b: &Browser, s: &Sandbox) {
    b.goto(&format!("{}/console", s.base)).await;
    b.find("form.logout button").await.click().await;
    b.find("#login").await;
    b.goto(&format!("{}/console/audit", s.base)).await;
    b.find("#login").await;
    assert!(b.url().await.contains("/console/login"));
}
