//! The console and the payment links over plain HTTP, on SQLite and PostgreSQL: logins and
//! their cookies, roles, CSRF, audit, every page's queries on both backends; the payment-link
//! API, the hosted page's errors, declines, one payment per link and no card data stored.

use super::*;

const PASSWORDS: [(&str, &str, &str); 3] = [
    ("ada", "admin", "ada-password-1"),
    ("fin", "finance", "fin-password-1"),
    ("vic", "viewer", "vic-password-1"),
];

/// The test configuration plus three console users (hashes with the fewest iterations).
fn console_config(url: &str) -> Config {
    config_with(url, |mut toml| {
        toml.push_str("[console]\npublic_url = \"https://pay.example.com\"\n");
        for (name, role, pw) in PASSWORDS {
            let hash = cashloop::console::password::PasswordHash::new(
                pw,
                cashloop::console::password::MIN_ITERATIONS,
            )
            .unwrap();
            toml.push_str(&format!(
                "[[console.users]]\nname = \"{name}\"\nrole = \"{role}\"\npassword_hash = \"{hash}\"\n"
            ));
        }
        toml
    })
}

/// A browser-like client without redirects or a cookie jar: cookies are passed by hand.
fn plain_client() -> reqwest::Client {
    gateway::http::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        c.split(';')
            .next()?
            .strip_prefix(&format!("{name}="))
            .map(str::to_owned)
    })
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("{name} in {html}"))
        + marker.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// A logged-in session: its cookie header and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
}

async fn log_in(app: &App, user: &str, password: &str) -> Result<Login, u16> {
    let c = plain_client();
    let form = c
        .get(format!("{}/console/login", app.base))
        .send()
        .await
        .unwrap();
    let login_cookie = cookie_value(&set_cookies(&form), "cl_login_csrf").unwrap();
    let html = form.text().await.unwrap();
    let csrf = hidden(&html, "csrf");
    assert_eq!(csrf, login_cookie, "double-submit token");
    let resp = c
        .post(format!("{}/console/login", app.base))
        .header("cookie", format!("cl_login_csrf={login_cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={csrf}&next=%2Fconsole%2Fjobs&user={user}&password={password}"
        ))
        .send()
        .await
        .unwrap();
    if resp.status() != 303 {
        return Err(resp.status().as_u16());
    }
    assert_eq!(resp.headers()["location"], "/console/jobs");
    let cookies = set_cookies(&resp);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("cl_session="))
        .unwrap();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(session.contains(flag), "{flag}: {session}");
    }
    let cookie = format!(
        "cl_session={}",
        cookie_value(&cookies, "cl_session").unwrap()
    );
    let page = c
        .get(format!("{}/console/jobs", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Ok(Login {
        csrf: hidden(&page, "csrf"),
        cookie,
    })
}

async fn get(
    app: &App,
    login: Option<&Login>,
    path: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = plain_client().get(format!("{}{path}", app.base));
    if let Some(l) = login {
        req = req.header("cookie", &l.cookie);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

async fn post_form(
    app: &App,
    login: Option<&Login>,
    path: &str,
    body: &str,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = plain_client()
        .post(format!("{}{path}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(l) = login {
        req = req.header("cookie", &l.cookie);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.text().await.unwrap(), headers)
}

/// A job in the error queue (a kind this server has no handler for, failed permanently).
async fn dead_job(t: &TestDb, kind: &str) -> i64 {
    let jobs = sync::jobs::Jobs::new(t.db.clone());
    let id = jobs
        .enqueue(sync::jobs::NewJob::new(
            kind,
            json!({"record_id": "0065g000000000HAAQ"}),
        ))
        .await
        .unwrap()
        .unwrap();
    let claimed = jobs
        .claim("test", &[kind], 1, Duration::from_secs(30))
        .await
        .unwrap();
    let failed = jobs
        .fail(
            &claimed[0],
            &sync::jobs::JobError::Permanent("Sage refused <the> customer".into()),
        )
        .await
        .unwrap();
    assert_eq!(failed, sync::jobs::Failed::Dead);
    id
}

both!(console_logins_roles_csrf_and_pages, |t| async move {
    let app = App::spawn_config(console_config(&t.url)).await;
    // Not logged in: to the login page, remembering where to.
    let (s, _, h) = get(&app, None, "/console/payments?status=failed").await;
    assert_eq!(s, 303);
    assert_eq!(
        h["location"],
        "/console/login?next=%2Fconsole%2Fpayments%3Fstatus%3Dfailed"
    );
    // The login form's CSRF: a POST without the cookie is refused.
    let (s, _, _) = post_form(
        &app,
        None,
        "/console/login",
        "csrf=x&user=ada&password=ada-password-1",
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(log_in(&app, "ada", "wrong-password").await.err(), Some(401));
    assert_eq!(
        log_in(&app, "nobody", "ada-password-1").await.err(),
        Some(401)
    );
    let admin = log_in(&app, "ada", "ada-password-1").await.unwrap();
    let viewer = log_in(&app, "vic", "vic-password-1").await.unwrap();
    let finance = log_in(&app, "fin", "fin-password-1").await.unwrap();

    // Every page renders for every role, on this backend's SQL; strict headers.
    let job = dead_job(&t, "console.test").await;
    sync::review::Review::new(t.db.clone())
        .open(
            "conflict",
            "Account",
            "0015g000000000QAAQ",
            &json!({"field": "Name <x>"}),
        )
        .await
        .unwrap();
    for login in [&admin, &viewer, &finance] {
        for path in [
            "/console",
            "/console/jobs",
            "/console/jobs?status=all&kind=console.test&q=sage",
            &format!("/console/jobs/{job}"),
            "/console/review",
            "/console/payments?opportunity=0065g000000000HAAQ&status=captured&amount=10.00",
            "/console/reconciliation",
            "/console/ledger",
            "/console/audit?actor=ada&action=console",
        ] {
            let (s, body, h) = get(&app, Some(login), path).await;
            assert_eq!(s, 200, "{path}: {body}");
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("script-src 'self'")
            );
            assert_eq!(h["x-frame-options"], "DENY");
            // Data is escaped.
            assert!(
                !body.contains("<the>") && !body.contains("Name <x>"),
                "{path}"
            );
        }
    }
    let (_, jobs_page, _) = get(&app, Some(&admin), "/console/jobs").await;
    assert!(jobs_page.contains("Sage refused &lt;the&gt; customer"));
    assert!(jobs_page.contains(&format!("id=\"retry-{job}\"")));
    let (_, viewer_jobs, _) = get(&app, Some(&viewer), "/console/jobs").await;
    assert!(
        !viewer_jobs.contains(&format!("id=\"retry-{job}\"")),
        "no buttons for viewers"
    );

    // A viewer may not retry; an admin without the CSRF token may not either.
    let retry = format!("/console/jobs/{job}/retry");
    let (s, _, _) = post_form(
        &app,
        Some(&viewer),
        &retry,
        &format!("csrf={}", viewer.csrf),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = post_form(&app, Some(&admin), &retry, "csrf=forged").await;
    assert_eq!(s, 403);
    let (s, _, _) = post_form(&app, Some(&admin), &retry, &format!("csrf={}", viewer.csrf)).await;
    assert_eq!(s, 403, "another session's token");
    assert_eq!(
        sync::jobs::Jobs::new(t.db.clone())
            .get(job)
            .await
            .unwrap()
            .status,
        "dead"
    );
    let (s, _, h) = post_form(&app, Some(&admin), &retry, &format!("csrf={}", admin.csrf)).await;
    assert_eq!(s, 303);
    assert_eq!(h["location"], format!("/console/jobs/{job}"));
    assert_eq!(
        sync::jobs::Jobs::new(t.db.clone())
            .get(job)
            .await
            .unwrap()
            .status,
        "pending"
    );
    let (s, body, _) = get(&app, Some(&admin), &format!("/console/jobs/{job}/status")).await;
    assert_eq!(s, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "pending"
    );

    // Resolve needs a comment; then it is resolved with it.
    let job2 = dead_job(&t, "console.other").await;
    let resolve = format!("/console/jobs/{job2}/resolve");
    let (s, _, _) = post_form(
        &app,
        Some(&admin),
        &resolve,
        &format!("csrf={}&note=+", admin.csrf),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _, _) = post_form(
        &app,
        Some(&admin),
        &resolve,
        &format!("csrf={}&note=fixed+in+Sage", admin.csrf),
    )
    .await;
    assert_eq!(s, 303);
    let r = sync::jobs::Jobs::new(t.db.clone()).get(job2).await.unwrap();
    assert_eq!(
        (r.status.as_str(), r.resolution.as_deref()),
        ("resolved", Some("fixed in Sage"))
    );

    // Review items: finance resolves, a viewer may not.
    let open = sync::review::Review::new(t.db.clone())
        .open_items(10)
        .await
        .unwrap();
    let item = open[0].id;
    let path = format!("/console/review/{item}/resolve");
    let (s, _, _) = post_form(
        &app,
        Some(&viewer),
        &path,
        &format!("csrf={}&resolution=keep", viewer.csrf),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = post_form(
        &app,
        Some(&finance),
        &path,
        &format!("csrf={}&resolution=keep+Salesforce", finance.csrf),
    )
    .await;
    assert_eq!(s, 303);
    assert!(
        sync::review::Review::new(t.db.clone())
            .open_items(10)
            .await
            .unwrap()
            .is_empty()
    );

    // Chain verification from the ledger page.
    let (s, _, _) = post_form(
        &app,
        Some(&viewer),
        "/console/ledger/verify",
        &format!("csrf={}", viewer.csrf),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = post_form(
        &app,
        Some(&finance),
        "/console/ledger/verify",
        &format!("csrf={}", finance.csrf),
    )
    .await;
    assert_eq!(s, 303);
    let (_, ledger_page, _) = get(&app, Some(&viewer), "/console/ledger").await;
    assert!(
        ledger_page.contains("id=\"chain-verdict\" class=\"status status-succeeded\">intact"),
        "{ledger_page}"
    );

    // Audited, with the console user's name.
    let audit = audit_rows(&t).await;
    for (actor, action) in [
        ("ada", "console.login"),
        ("ada", "console.login.failed"),
        ("nobody", "console.login.failed"),
        ("console:ada", "sync.job.retry"),
        ("console:ada", "sync.job.resolve"),
        ("console:fin", "sync.review.resolve"),
        ("console:fin", "ledger.verify"),
        ("vic", "console.forbidden"),
    ] {
        assert!(
            audit.iter().any(|(a, b, _)| a == actor && b == action),
            "{actor} {action} not audited: {audit:?}"
        );
    }
    assert!(
        !audit.iter().any(|(_, _, d)| d.contains("password-1")),
        "no password in the audit log"
    );

    // Logout ends the session (a copied cookie no longer works).
    let (s, _, h) = post_form(
        &app,
        Some(&viewer),
        "/console/logout",
        &format!("csrf={}", viewer.csrf),
    )
    .await;
    assert_eq!(s, 303);
    assert!(h["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let (s, _, _) = get(&app, Some(&viewer), "/console").await;
    assert_eq!(s, 303);
    // The assets are embedded and public.
    let (s, css, h) = get(&app, None, "/console/assets/console.css").await;
    assert_eq!(
        (s, h["content-type"].to_str().unwrap()),
        (200, "text/css; charset=utf-8")
    );
    assert!(css.contains(":focus-visible"));
    app.stop().await;
});

both!(console_without_users_says_so, |t| async move {
    let app = App::spawn(&t).await;
    let (s, body, _) = get(&app, None, "/console").await;
    assert_eq!(s, 404);
    assert!(body.contains("[[console.users]]"));
    app.stop().await;
});

/// A form post to the hosted page.
async fn pay(app: &App, link: &str, fields: &str) -> (u16, String, reqwest::header::HeaderMap) {
    post_form(app, None, &format!("/pay/{link}"), fields).await
}

both!(
    payment_links_are_created_paid_once_and_never_hold_card_data,
    |t| async move {
        add_chart(&t.url);
        let app = App::spawn_config(console_config(&t.url)).await;
        let body =
            json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "0015g000000000QAAQ",
                      "amount": "125.50", "currency": "USD", "invoice_ref": "INV-<7>"})
            .to_string();
        // Roles and validation.
        let (s, _, _) = app
            .call(
                "POST",
                "/v1/payment_links",
                Some(AUDITOR_KEY),
                None,
                Some(&body),
            )
            .await;
        assert_eq!(s, 403);
        for (bad, field) in [
            (
                json!({"opportunity_id": "nope", "account_id": "A1", "amount": "1.00", "currency": "USD"}),
                "opportunity_id",
            ),
            (
                json!({"opportunity_id": "0065g000000000HAAQ", "amount": "1.00", "currency": "USD"}),
                "account_id",
            ),
            (
                json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "A1", "amount": "1.001", "currency": "USD"}),
                "amount",
            ),
            (
                json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "A1", "amount": "0.00", "currency": "USD"}),
                "amount",
            ),
            (
                json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "A1", "amount": "1.00", "currency": "EUR"}),
                "currency",
            ),
            (
                json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "A1", "amount": "1.00", "currency": "USD", "card": "4111"}),
                "card",
            ),
        ] {
            let (s, v, _) = app
                .call(
                    "POST",
                    "/v1/payment_links",
                    Some(PAYMENTS_KEY),
                    None,
                    Some(&bad.to_string()),
                )
                .await;
            assert_eq!(
                (s, v["error"]["field"].as_str()),
                (422, Some(field)),
                "{bad}: {v}"
            );
        }
        let (s, link, _) = app
            .call(
                "POST",
                "/v1/payment_links",
                Some(PAYMENTS_KEY),
                Some("link-1"),
                Some(&body),
            )
            .await;
        assert_eq!(s, 201, "{link}");
        let id = link["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("pl_") && id.len() >= 35, "unguessable: {id}");
        assert_eq!(link["url"], format!("https://pay.example.com/pay/{id}"));
        assert_eq!(
            (link["amount"].as_str(), link["status"].as_str()),
            (Some("125.50"), Some("open"))
        );
        let (s, again, h) = app
            .call(
                "POST",
                "/v1/payment_links",
                Some(PAYMENTS_KEY),
                Some("link-1"),
                Some(&body),
            )
            .await;
        assert_eq!((s, &again["id"]), (201, &link["id"]));
        assert_eq!(h["idempotent-replayed"], "true");

        // The page: amount and invoice, escaped; an unknown link is a 404 page.
        let (s, page, h) = get(&app, None, &format!("/pay/{id}")).await;
        assert_eq!(s, 200);
        assert!(page.contains("125.50 USD") && page.contains("INV-&lt;7&gt;"));
        assert_eq!(h["referrer-policy"], "no-referrer");
        let (s, _, _) = get(&app, None, "/pay/pl_doesnotexist").await;
        assert_eq!(s, 404);
        let (s, _, _) = get(&app, None, "/pay/..%2F..%2Fetc").await;
        assert_eq!(s, 404);

        // Inline errors: each names its field and echoes no number.
        let card = |number: &str, month: &str, cvv: &str| {
            format!(
                "method=card&card_number={number}&exp_month={month}&exp_year=2031&cvv={cvv}&name=Ada&postal_code=10001"
            )
        };
        for (fields, field) in [
        (card("4111111111111112", "12", "123"), "card_number"),
        (card("4111111111111111", "13", "123"), "exp_month"),
        (card("4111111111111111", "12", "12"), "cvv"),
        ("method=bank_account&routing_number=123456789&account_number=000123456789&account_type=checking&holder_name=G".to_owned(), "routing_number"),
    ] {
        let (s, html, _) = pay(&app, &id, &fields).await;
        assert_eq!(s, 422, "{fields}");
        assert!(html.contains(&format!("id=\"{field}\" name=\"{field}\"")) && html.contains(&format!("aria-describedby=\"{field}-error\"")), "{field}: {html}");
        assert!(!html.contains("411111111111111") && !html.contains("000123456789"));
    }
        // The sandbox processor declines 4000000000000002: shown, and the link stays open.
        let (s, html, _) = pay(&app, &id, &card("4000000000000002", "12", "123")).await;
        assert_eq!(s, 402, "{html}");
        assert!(
            html.contains("id=\"payment-error\">Your payment was declined"),
            "{html}"
        );
        // Paid.
        let (s, _, h) = pay(&app, &id, &card("4242+4242+4242+4242", "12", "123")).await;
        assert_eq!(s, 303);
        assert_eq!(h["location"], format!("/pay/{id}/receipt"));
        let (s, receipt, _) = get(&app, None, &format!("/pay/{id}/receipt")).await;
        assert_eq!(s, 200);
        assert!(
            receipt.contains("125.50 USD")
                && receipt.contains("ending 4242")
                && receipt.contains(">Paid<"),
            "{receipt}"
        );
        // Once: a second attempt charges nothing and lands on the receipt.
        let (s, _, h) = pay(&app, &id, &card("4242424242424242", "12", "123")).await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (303, format!("/pay/{id}").as_str())
        );
        let (s, _, h) = get(&app, None, &format!("/pay/{id}")).await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (303, format!("/pay/{id}/receipt").as_str())
        );
        let (_, list, _) = app
            .call(
                "GET",
                "/v1/payments?opportunity_id=0065g000000000HAAQ",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        let statuses: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "captured").count(),
            1,
            "{list}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == "failed").count(),
            1,
            "{list}"
        );
        let paid = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["status"] == "captured")
            .unwrap();
        assert_eq!(paid["invoice_refs"], json!(["INV-<7>"]));
        assert_eq!(paid["metadata"]["payment_link"], id.as_str());
        assert_eq!(paid["account_id"], "0015g000000000QAAQ");

        // The console finds it by Opportunity, status and amount.
        let admin = log_in(&app, "ada", "ada-password-1").await.unwrap();
        let (_, found, _) = get(&app, Some(&admin), "/console/payments?opportunity=0065g000000000HAAQ&status=captured&amount=125.50&currency=USD").await;
        assert!(found.contains(paid["id"].as_str().unwrap()), "{found}");
        let (_, none, _) = get(&app, Some(&admin), "/console/payments?amount=125.51").await;
        assert!(!none.contains(paid["id"].as_str().unwrap()));
        // Admins create links from the console too.
        let (s, made, _) = post_form(&app, Some(&admin), "/console/payment-links", &format!(
        "csrf={}&opportunity_id=0065g000000000HAAQ&account_id=0015g000000000QAAQ&amount=10.00&currency=USD", admin.csrf)).await;
        assert_eq!(s, 200);
        assert!(
            made.contains("id=\"new-link\" href=\"https://pay.example.com/pay/pl_"),
            "{made}"
        );

        // Expired links take nothing.
        let (_, short, _) = app.call("POST", "/v1/payment_links", Some(PAYMENTS_KEY), None, Some(&json!({"opportunity_id": "0065g000000000HAAQ", "account_id": "A1", "amount": "5.00", "currency": "USD", "expires_in_s": 60}).to_string())).await;
        let short_id = short["id"].as_str().unwrap();
        match &t.db {
            db::Db::Postgres(p) => {
                sqlx::query("UPDATE payment_links SET expires_at_ms = 0 WHERE id = $1")
                    .bind(short_id)
                    .execute(p)
                    .await
                    .map(|_| ())
            }
            db::Db::Sqlite(s) => {
                sqlx::query("UPDATE payment_links SET expires_at_ms = 0 WHERE id = $1")
                    .bind(short_id)
                    .execute(&s.pool)
                    .await
                    .map(|_| ())
            }
        }
        .unwrap();
        let (s, _, _) = get(&app, None, &format!("/pay/{short_id}")).await;
        assert_eq!(s, 410);
        let (s, _, _) = pay(&app, short_id, &card("4242424242424242", "12", "123")).await;
        assert_eq!(s, 303);

        // Card testing: after 10 declines a link takes no more, without asking the processor.
        let (_, tested, _) = app.call("POST", "/v1/payment_links", Some(PAYMENTS_KEY), None, Some(&json!({"opportunity_id": "0065g000000000TAAQ", "account_id": "A2", "amount": "9.00", "currency": "USD"}).to_string())).await;
        let tested_id = tested["id"].as_str().unwrap();
        for _ in 0..cashloop::console::pay::MAX_FAILED_ATTEMPTS {
            let (s, _, _) = pay(&app, tested_id, &card("4000000000000002", "12", "123")).await;
            assert_eq!(s, 402);
        }
        let (s, _, h) = pay(&app, tested_id, &card("4242424242424242", "12", "123")).await;
        assert_eq!(
            (s, h["location"].to_str().unwrap()),
            (303, format!("/pay/{tested_id}").as_str())
        );
        let (s, locked, _) = get(&app, None, &format!("/pay/{tested_id}")).await;
        assert_eq!(s, 429);
        assert!(locked.contains("takes no more"));
        let (_, list, _) = app
            .call(
                "GET",
                "/v1/payments?opportunity_id=0065g000000000TAAQ",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(
            list["data"].as_array().unwrap().len(),
            10,
            "the 11th attempt reached no processor"
        );

        // No card number anywhere in the database (SQLite: the file).
        if let db::Db::Sqlite(_) = &t.db {
            let path = t
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap()
                .to_owned();
            let bytes = std::fs::read(&path).unwrap();
            for pan in [&b"4242424242424242"[..], b"4000000000000002"] {
                assert!(!bytes.windows(pan.len()).any(|w| w == pan));
            }
        }
        app.stop().await;
    }
);

/// `cashloop console hash-password` reads the password from stdin and prints configuration
/// lines whose hash checks that password; short passwords and unknown roles are refused.
#[test]
fn console_hash_password_prints_a_working_hash() {
    use std::io::Write as _;
    let run = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cashloop"))
            .args(["console", "hash-password"])
            .args(args)
            .env_remove("CASHLOOP_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(
        &[
            "--name",
            "ada",
            "--role",
            "finance",
            "--iterations",
            "10000",
        ],
        "a long enough password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[[console.users]]\nname = \"ada\"\nrole = \"finance\"\n"),
        "{text}"
    );
    assert!(!text.contains("a long enough password"));
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .unwrap()
        .trim_end_matches('"');
    let parsed = cashloop::console::password::PasswordHash::parse(hash).unwrap();
    assert!(parsed.verify("a long enough password"));
    assert!(!run(&["--name", "ada"], "short\n").status.success());
    assert!(
        !run(
            &["--name", "ada", "--role", "root"],
            "a long enough password\n"
        )
        .status
        .success()
    );
}
