//! `/metrics` (checked by a strict Prometheus text-format parser), request ids, JSON logs
//! and the OpenAPI document against the router's routes.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// One sample line: name, labels, value as written.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: its `# TYPE`, `# HELP` and samples, in order.
#[derive(Clone, Debug, Default)]
struct MetricFamily {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The family a sample belongs to: `x_bucket`, `x_sum`, `x_count` belong to histogram `x`.
fn family_of(name: &str, families: &BTreeMap<String, MetricFamily>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// Parses the Prometheus text exposition format (0.0.4), refusing anything the format does
/// not allow: a sample before its family's `# TYPE`, a family split in two, a duplicate
/// `# TYPE`/`# HELP` or series, bad names, bad escapes, a value that is not a number, a
/// missing final newline.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, MetricFamily>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    let mut seen_series = BTreeSet::new();
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut enter = |name: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                closed.insert(prev);
            }
            if closed.contains(name) {
                return Err(format!("family {name} is not contiguous"));
            }
            *current = Some(name.to_owned());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start_matches(' ');
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts.next().ok_or_else(|| at("TYPE without a name"))?;
                    let kind = parts.next().ok_or_else(|| at("TYPE without a type"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    enter(name, &mut current)?;
                    let f = families.entry(name.to_owned()).or_default();
                    if !f.kind.is_empty() {
                        return Err(at("second TYPE"));
                    }
                    if !f.samples.is_empty() {
                        return Err(at("TYPE after samples"));
                    }
                    f.kind = kind.to_owned();
                }
                Some("HELP") => {
                    let name = parts.next().ok_or_else(|| at("HELP without a name"))?;
                    if !is_metric_name(name) {
                        return Err(at("bad metric name"));
                    }
                    let help = parts.next().unwrap_or("");
                    let mut chars = help.chars();
                    while let Some(c) = chars.next() {
                        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
                            return Err(at("bad escape in HELP"));
                        }
                    }
                    enter(name, &mut current)?;
                    let f = families.entry(name.to_owned()).or_default();
                    if f.help.replace(help.to_owned()).is_some() {
                        return Err(at("second HELP"));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample needs a value"))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at("bad metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end: usize;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = chars.next().unwrap().0;
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(at("unterminated labels")),
                };
                let eq = r[start..].find('=').ok_or_else(|| at("label without ="))? + start;
                let lname = &r[start..eq];
                if !is_label_name(lname) {
                    return Err(at("bad label name"));
                }
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                if chars.next().map(|c| c.1) != Some('"') {
                    return Err(at("label value must be quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(at("bad escape in a label value")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(at("unterminated label value")),
                    }
                }
                if labels.insert(lname.to_owned(), value).is_some() {
                    return Err(at("duplicate label"));
                }
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        end = i;
                        break;
                    }
                    _ => return Err(at("expected , or } after a label")),
                }
            }
            rest = &r[end + 1..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("one space before the value"))?;
        let mut fields = rest.split(' ');
        let value_s = fields.next().unwrap_or("");
        let value: f64 = match value_s {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v if !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
            {
                v.parse().map_err(|_| at("value is not a number"))?
            }
            _ => return Err(at("value is not a number")),
        };
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at("timestamp is not an integer"));
        }
        if fields.next().is_some() {
            return Err(at("trailing text"));
        }
        let family = family_of(name, &families);
        let f = families
            .get_mut(&family)
            .filter(|f| !f.kind.is_empty())
            .ok_or_else(|| at("sample before its family's TYPE"))?;
        enter(&family, &mut current)?;
        if !seen_series.insert(format!("{name}{labels:?}")) {
            return Err(at("duplicate series"));
        }
        f.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(families)
}

/// The histogram rules: per series, `le` strictly increasing and ending in `+Inf`, counts
/// non-decreasing, `+Inf` equal to `_count`, and a `_sum`.
fn check_histogram(name: &str, f: &MetricFamily) -> Result<(), String> {
    let mut series: BTreeMap<Vec<(String, String)>, Vec<&Sample>> = BTreeMap::new();
    for s in &f.samples {
        let mut key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        key.sort();
        series.entry(key).or_default().push(s);
    }
    for (key, samples) in series {
        let buckets: Vec<&&Sample> = samples
            .iter()
            .filter(|s| s.name == format!("{name}_bucket"))
            .collect();
        let count = samples
            .iter()
            .find(|s| s.name == format!("{name}_count"))
            .ok_or(format!("{name}{key:?}: no _count"))?;
        samples
            .iter()
            .find(|s| s.name == format!("{name}_sum"))
            .ok_or(format!("{name}{key:?}: no _sum"))?;
        let mut prev_le = f64::NEG_INFINITY;
        let mut prev_n = 0.0;
        for b in &buckets {
            let le: f64 = match b.labels.get("le").map(String::as_str) {
                Some("+Inf") => f64::INFINITY,
                Some(v) => v.parse().map_err(|_| format!("{name}: le {v:?}"))?,
                None => return Err(format!("{name}{key:?}: a bucket without le")),
            };
            if le <= prev_le {
                return Err(format!("{name}{key:?}: le not increasing at {le}"));
            }
            if b.value < prev_n {
                return Err(format!("{name}{key:?}: bucket counts decrease at le={le}"));
            }
            prev_le = le;
            prev_n = b.value;
        }
        if prev_le != f64::INFINITY {
            return Err(format!("{name}{key:?}: no +Inf bucket"));
        }
        if prev_n != count.value {
            return Err(format!("{name}{key:?}: +Inf bucket {prev_n} != _count"));
        }
    }
    Ok(())
}

fn value(f: &MetricFamily, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    f.samples
        .iter()
        .find(|s| {
            s.name == name
                && labels.len() == s.labels.iter().filter(|(k, _)| *k != "le").count()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\n\\\\\"} 1\n";
    assert!(parse_prometheus(ok).is_ok(), "{:?}", parse_prometheus(ok));
    for bad in [
        "a_total 1",                                                // no final newline
        "a_total 1\n",                                              // no TYPE
        "# TYPE a counter\na{x=\"1\"} one\n",                       // not a number
        "# TYPE a counter\na{x=1} 1\n",                             // unquoted
        "# TYPE a counter\na{x=\"\\t\"} 1\n",                       // bad escape
        "# TYPE a counter\na 1\na 2\n",                             // duplicate series
        "# TYPE a counter\n# TYPE a counter\n",                     // second TYPE
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"2\"} 1\n", // not contiguous
        "# TYPE 1a gauge\n",                                        // bad name
        "# TYPE a gauge\na{1x=\"2\"} 1\n",                          // bad label name
        "# TYPE a gauge\na  1\n",                                   // two spaces
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted {bad:?}");
    }
    let hist = |body: &str| {
        let f = parse_prometheus(&format!("# TYPE h histogram\n{body}")).unwrap();
        check_histogram("h", &f["h"])
    };
    assert!(hist("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n").is_ok());
    assert!(hist("h_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 3\nh_count 1\n").is_err());
    assert!(hist("h_bucket{le=\"1\"} 1\nh_sum 3\nh_count 1\n").is_err());
    assert!(hist("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 3\n").is_err());
}

async fn scrape(app: &App) -> (String, BTreeMap<String, MetricFamily>) {
    let resp = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.unwrap();
    let families = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (name, f) in &families {
        assert!(f.help.is_some(), "{name} has no HELP");
        if f.kind == "histogram" {
            check_histogram(name, f).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
    }
    (text, families)
}

both!(
    metrics_parse_and_count_requests_jobs_and_entries,
    |t| async move {
        add_chart(&t.url);
        let app = App::spawn(&t).await;
        // A job nobody handles stays pending; the gauge reads it from sync_jobs at scrape time.
        sync::jobs::Jobs::new(t.db.clone())
            .enqueue(sync::jobs::NewJob::new("test.nobody", json!({})))
            .await
            .unwrap()
            .unwrap();
        let (s, _, _) = app
            .call(
                "POST",
                "/v1/ledger/entries",
                Some(FINANCE_KEY),
                None,
                Some(&sale("obs-metrics-1", "10.00")),
            )
            .await;
        assert_eq!(s, 201);
        let (_, before) = scrape(&app).await;
        let healthz_before = before
            .get("cashloop_http_requests_total")
            .and_then(|f| {
                value(
                    f,
                    "cashloop_http_requests_total",
                    &[("route", "/healthz"), ("method", "GET"), ("status", "2xx")],
                )
            })
            .map_or(0, |v| v as u64);
        for _ in 0..3 {
            app.call("GET", "/healthz", None, None, None).await;
        }
        let (s, _, _) = app
            .call(
                "GET",
                "/v1/ledger/entries/999999",
                Some(ADMIN_KEY),
                None,
                None,
            )
            .await;
        assert_eq!(s, 404);
        let (s, _, _) = app.call("GET", "/v1/sync/status", None, None, None).await;
        assert_eq!(s, 401);
        let (s, _, _) = app.call("GET", "/no/such/path-123", None, None, None).await;
        assert_eq!(s, 404);
        let (text, m) = scrape(&app).await;

        let kinds: BTreeMap<&str, &str> = m
            .iter()
            .map(|(k, f)| (k.as_str(), f.kind.as_str()))
            .collect();
        for (name, kind) in [
            ("cashloop_http_requests_total", "counter"),
            ("cashloop_http_request_duration_seconds", "histogram"),
            ("cashloop_http_errors_total", "counter"),
            ("cashloop_sync_job_duration_seconds", "histogram"),
            ("cashloop_sync_job_retries_total", "counter"),
            ("cashloop_sync_jobs", "gauge"),
            ("cashloop_ledger_entries", "gauge"),
            ("cashloop_ledger_unsealed_entries", "gauge"),
            ("cashloop_reconcile_last_run_id", "gauge"),
            ("cashloop_database_up", "gauge"),
        ] {
            assert_eq!(kinds.get(name), Some(&kind), "{name}\n{text}");
        }
        let healthz = [("route", "/healthz"), ("method", "GET"), ("status", "2xx")];
        let requests = &m["cashloop_http_requests_total"];
        let healthz_after =
            value(requests, "cashloop_http_requests_total", &healthz).unwrap() as u64;
        assert!(healthz_after >= healthz_before + 3, "{text}");
        let hist = &m["cashloop_http_request_duration_seconds"];
        assert!(
            value(
                hist,
                "cashloop_http_request_duration_seconds_count",
                &healthz
            )
            .unwrap()
                >= 3.0,
            "{text}"
        );
        // Labelled by the route template, never the raw path.
        let entry = [
            ("route", "/v1/ledger/entries/{id}"),
            ("method", "GET"),
            ("status", "4xx"),
        ];
        assert!(value(hist, "cashloop_http_request_duration_seconds_count", &entry).is_some());
        assert!(
            !text.contains("999999") && !text.contains("path-123"),
            "{text}"
        );
        assert!(
            value(
                requests,
                "cashloop_http_requests_total",
                &[("route", "unmatched"), ("method", "GET"), ("status", "4xx")]
            )
            .is_some()
        );
        let errors = &m["cashloop_http_errors_total"];
        for code in ["unauthorized", "not_found", "entry_not_found"] {
            let found = value(errors, "cashloop_http_errors_total", &[("code", code)]);
            assert!(found.is_some_and(|n| n >= 1.0), "{code}\n{text}");
        }
        // Jobs by state: every state, read from the table.
        let jobs = &m["cashloop_sync_jobs"];
        for state in sync::jobs::STATUSES {
            assert!(
                value(jobs, "cashloop_sync_jobs", &[("state", state)]).is_some(),
                "{state}"
            );
        }
        let (pending, _, _) = db_count(
            &t,
            "SELECT COUNT(*) FROM sync_jobs WHERE status = 'pending'",
        )
        .await;
        assert!(pending >= 1);
        assert_eq!(
            value(jobs, "cashloop_sync_jobs", &[("state", "pending")]),
            Some(pending as f64)
        );
        // Read without scanning the journal (chain head + sealing queue), equal to a full count.
        let (entries, _, _) = db_count(&t, "SELECT COUNT(*) FROM ledger_entries").await;
        assert!(entries >= 1);
        let gauge = |name: &str| value(&m[name], name, &[]);
        assert_eq!(gauge("cashloop_ledger_entries"), Some(entries as f64));
        let (queued, _, _) = db_count(&t, "SELECT COUNT(*) FROM ledger_unsealed").await;
        assert!(gauge("cashloop_ledger_unsealed_entries").is_some_and(|n| n >= queued as f64));
        assert_eq!(
            value(&m["cashloop_database_up"], "cashloop_database_up", &[]),
            Some(1.0)
        );
        assert_eq!(gauge("cashloop_reconcile_last_run_id"), Some(0.0));
        // A stored reconciliation run: its outcomes appear at the next scrape.
        let store = reconcile::store::Store::new(t.db.clone());
        store
            .import(
                reconcile::Kind::Payments,
                b"id,entity,customer,currency,amount,date,reference,source,batch_id\nP1,US,C1,USD,10.00,2026-10-05,INV-1,sage_receipt,\nP2,US,C2,USD,5.00,2026-10-06,,sage_receipt,\n",
                "test",
                false,
                "test",
            )
            .await
            .unwrap();
        store
            .import(
                reconcile::Kind::Invoices,
                b"id,number,kind,entity,customer,currency,amount_open,date,due_date\nI1,INV-1,invoice,US,C1,USD,10.00,2026-09-01,2026-10-01\n",
                "test",
                false,
                "test",
            )
            .await
            .unwrap();
        let run = store
            .run(
                &reconcile::store::RunRequest {
                    period: "2026-10".into(),
                    entity: None,
                    dry_run: false,
                    actor: "test".into(),
                    config: reconcile::MatchConfig::default(),
                    lease_ms: 30_000,
                },
                |_| {},
            )
            .await
            .unwrap();
        let (text, m) = scrape(&app).await;
        let items = |kind: &str, category: &str| {
            value(
                &m["cashloop_reconcile_last_run_items"],
                "cashloop_reconcile_last_run_items",
                &[("kind", kind), ("category", category)],
            )
        };
        assert_eq!(items("payment", "matched"), Some(1.0), "{text}");
        assert_eq!(items("payment", "unmatched_payment"), Some(1.0), "{text}");
        assert_eq!(items("item", "matched"), Some(1.0), "{text}");
        let gauge = |name: &str| value(&m[name], name, &[]);
        assert_eq!(
            gauge("cashloop_reconcile_last_run_id"),
            run.run.id.map(|i| i as f64)
        );
        app.stop().await;
    }
);

both!(
    request_ids_are_honoured_or_made_and_echoed,
    |t| async move {
        let app = App::spawn(&t).await;
        let get = |id: Option<&'static str>, path: &'static str| {
            let mut r = app.client.get(format!("{}{path}", app.base));
            if let Some(id) = id {
                r = r.header("x-request-id", id);
            }
            async move {
                let resp = r.send().await.unwrap();
                resp.headers()["x-request-id"].to_str().unwrap().to_owned()
            }
        };
        assert_eq!(
            get(Some("abc-123_x.y:z"), "/healthz").await,
            "abc-123_x.y:z"
        );
        // Errors, 404s and authentication failures carry it too.
        assert_eq!(get(Some("req-401"), "/v1/sync/status").await, "req-401");
        assert_eq!(get(Some("req-404"), "/nowhere").await, "req-404");
        let is_generated = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let made = get(None, "/healthz").await;
        assert!(is_generated(&made), "{made}");
        assert_ne!(made, get(None, "/healthz").await, "a new id per request");
        // A malformed or overlong id is replaced, not echoed.
        let long: &'static str = Box::leak("x".repeat(129).into_boxed_str());
        // …and so is one that could carry a card number (13 or more digits in a row).
        assert_eq!(
            get(Some("a-123456789012-b"), "/healthz").await,
            "a-123456789012-b"
        );
        for bad in [
            "has space",
            "semi;colon",
            "{}",
            long,
            "4111111111111111",
            "x1234567890123",
        ] {
            let got = get(Some(bad), "/healthz").await;
            assert!(is_generated(&got), "{bad:?} -> {got}");
        }
        app.stop().await;
    }
);

both!(
    json_logs_carry_the_request_id_and_no_card_number,
    |t| async move {
        add_chart(&t.url);
        let dir = tempfile::tempdir().unwrap();
        let (mut server, base) = serve_process_with(
            dir.path(),
            "j",
            &t.url,
            Some("info,cashloop=debug"),
            &[("CASHLOOP_LOG__FORMAT", std::ffi::OsStr::new("json"))],
        )
        .await;
        let client = gateway::http::client();
        let resp = client
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(PAYMENTS_KEY)
        .header("x-request-id", "obs-log-test-1")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"type":"card","card":{{"number":"{TEST_PAN}","exp_month":12,"exp_year":2030}}}}"#
        ))
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        server.kill().await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("j.log")).unwrap();
        assert!(!log.contains(TEST_PAN), "the card number in the log");
        let lines: Vec<Value> = log
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let ours: Vec<&Value> = lines
            .iter()
            .filter(|l| l["span"]["request_id"] == "obs-log-test-1")
            .collect();
        let messages: Vec<&str> = ours
            .iter()
            .filter_map(|l| l["fields"]["message"].as_str())
            .collect();
        assert!(
            messages.contains(&"payment method tokenized")
                && messages.contains(&"request finished"),
            "{messages:?}\n{log}"
        );
        let done = ours
            .iter()
            .find(|l| l["fields"]["message"] == "request finished")
            .unwrap();
        assert_eq!(done["span"]["route"], "/v1/tokens");
        assert_eq!(done["span"]["caller"], "payments");
        assert_eq!(done["fields"]["status"], 201);
    }
);

/// Every `(method, path)` the OpenAPI document describes, from the document.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                ops.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v` points at something in `doc`.
fn check_refs(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(o) => {
            if let Some(r) = o.get("$ref").and_then(Value::as_str) {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: {r}"));
                assert!(doc.pointer(pointer).is_some(), "{at}: dangling $ref {r}");
            }
            for (k, x) in o {
                check_refs(doc, x, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x, at)),
        _ => {}
    }
}

#[test]
fn openapi_document_matches_the_router() {
    let doc: Value = serde_json::from_str(cashloop::server::OPENAPI_JSON).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = documented_operations(&doc);
    let routed: BTreeSet<(String, String)> = cashloop::server::V1_ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes not documented: {missing:?}; documented but not routed: {extra:?}"
    );
    check_refs(&doc, &doc, "");
    for (method, path, keyed) in cashloop::server::V1_ROUTES {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
        assert!(op["responses"].is_object(), "{method} {path}: responses");
        // Path parameters: exactly the template's.
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(
                    p["required"], true,
                    "{method} {path}: path params are required"
                );
                p["name"].as_str().unwrap()
            })
            .collect();
        assert_eq!(in_template, declared, "{method} {path}: path parameters");
        // Security as served: an API key exactly where the router asks for one.
        let secured = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("apiKey").is_some()));
        assert_eq!(secured, *keyed, "{method} {path}: security");
    }
}

both!(openapi_is_served_and_every_route_answers, |t| async move {
    let app = App::spawn(&t).await;
    let (s, served, _) = app.call("GET", "/v1/openapi.json", None, None, None).await;
    assert_eq!(s, 200);
    let embedded: Value = serde_json::from_str(cashloop::server::OPENAPI_JSON).unwrap();
    assert_eq!(served, embedded);
    // Each listed route is served: keyed ones ask for a key, none falls through to 404/405.
    for (method, path, keyed) in cashloop::server::V1_ROUTES {
        let concrete: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let (s, v, _) = app.call(method, &concrete, None, None, None).await;
        if *keyed {
            assert_eq!(s, 401, "{method} {path}: {v}");
        } else {
            assert!(
                s != 405 && v["error"]["message"] != "no such route",
                "{method} {path}: {s} {v}"
            );
        }
    }
    app.stop().await;
});

async fn exec(t: &TestDb, sql: &'static str) {
    match &t.db {
        db::Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        db::Db::Sqlite(s) => sqlx::query(sql).execute(&s.pool).await.map(|_| ()),
    }
    .unwrap();
}

both!(
    readyz_fails_while_a_migration_is_not_applied,
    |t| async move {
        let app = App::spawn(&t).await;
        let (s, v, _) = app.call("GET", "/readyz", None, None, None).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");
        // As if this binary were newer than the database: its last migration is not applied.
        exec(
        &t,
        "UPDATE _sqlx_migrations SET success = (1 = 0) WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
    )
    .await;
        let (s, v, _) = app.call("GET", "/readyz", None, None, None).await;
        assert_eq!((s, v["status"].as_str()), (503, Some("not_ready")), "{v}");
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("migrations not applied"),
            "{v}"
        );
        // Liveness is not readiness.
        let (s, _, _) = app.call("GET", "/healthz", None, None, None).await;
        assert_eq!(s, 200);
        exec(&t, "UPDATE _sqlx_migrations SET success = (1 = 1)").await;
        let (s, _, _) = app.call("GET", "/readyz", None, None, None).await;
        assert_eq!(s, 200);
        app.stop().await;
    }
);

/// Checks `v` against `schema` (the JSON Schema subset the document uses: `$ref`, `type`,
/// `const`, `enum`, `oneOf`, `required`, `properties`, `additionalProperties`, `items`,
/// `minItems`/`maxItems`, `minLength`/`maxLength`). Responses are checked closed: an object
/// schema that lists `properties` must list every field the server sends.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}"));
        return validate(doc, target, v, at, errors);
    }
    if let Some(types) = schema.get("type") {
        let names: Vec<&str> = match types {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            _ => false,
        };
        if !names.iter().any(|t| fits(t)) {
            errors.push(format!("{at}: {v} is not {names:?}"));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && v != c
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(doc, s, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if fitting != 1 {
            errors.push(format!("{at}: fits {fitting} of the oneOf schemas"));
        }
    }
    match v {
        Value::Object(o) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !o.contains_key(r) {
                    errors.push(format!("{at}: no {r}"));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, x) in o {
                let here = format!("{at}.{k}");
                match (
                    props.and_then(|p| p.get(k)),
                    schema.get("additionalProperties"),
                ) {
                    (Some(s), _) => validate(doc, s, x, &here, errors),
                    (None, Some(s @ Value::Object(_))) => validate(doc, s, x, &here, errors),
                    (None, Some(Value::Bool(true))) => {}
                    (None, None) if props.is_none() => {}
                    (None, _) => errors.push(format!("{here}: not in the document")),
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = schema.get("items") {
                for (i, x) in a.iter().enumerate() {
                    validate(doc, items, x, &format!("{at}[{i}]"), errors);
                }
            }
            if schema["minItems"]
                .as_u64()
                .is_some_and(|n| (a.len() as u64) < n)
                || schema["maxItems"]
                    .as_u64()
                    .is_some_and(|n| (a.len() as u64) > n)
            {
                errors.push(format!("{at}: {} items", a.len()));
            }
        }
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|m| n < m)
                || schema["maxLength"].as_u64().is_some_and(|m| n > m)
            {
                errors.push(format!("{at}: length {n}"));
            }
        }
        _ => {}
    }
}

/// Calls the app and checks the answer against the document: the status is documented for
/// the operation (or falls under `default`) and the body fits that response's schema.
async fn checked(
    app: &App,
    doc: &Value,
    (method, template): (&str, &str),
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, v, _) = app.call(method, path, key, None, body).await;
    let op = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {template} is not documented");
    let mut resp = op["responses"]
        .get(status.to_string())
        .or_else(|| op["responses"].get("default"))
        .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented: {v}"));
    if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
        resp = doc.pointer(r.trim_start_matches('#')).unwrap();
    }
    let schema = &resp["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path}: {status} has no JSON schema"
    );
    let mut errors = Vec::new();
    validate(doc, schema, &v, "body", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} → {status} does not fit the document:\n{}\n{v}",
        errors.join("\n")
    );
    (status, v)
}

#[test]
fn the_validator_catches_shape_drift() {
    let doc = json!({"components": {"schemas": {"A": {"type": "object", "required": ["x"],
        "properties": {"x": {"type": "integer"}, "y": {"type": ["string", "null"], "enum": ["a", null]}}}}}});
    let a = json!({"$ref": "#/components/schemas/A"});
    let errs = |v: Value| {
        let mut e = Vec::new();
        validate(&doc, &a, &v, "body", &mut e);
        e
    };
    assert!(errs(json!({"x": 1, "y": null})).is_empty());
    assert!(!errs(json!({"x": 1.5})).is_empty(), "not an integer");
    assert!(!errs(json!({"y": "a"})).is_empty(), "x missing");
    assert!(
        !errs(json!({"x": 1, "y": "b"})).is_empty(),
        "not in the enum"
    );
    assert!(
        !errs(json!({"x": 1, "z": 2})).is_empty(),
        "an undocumented field"
    );
}

both!(responses_fit_the_openapi_document, |t| async move {
    add_chart(&t.url);
    let owned = App::spawn(&t).await;
    let doc: Value = serde_json::from_str(cashloop::server::OPENAPI_JSON).unwrap();
    let doc = &doc;
    let app = &owned;
    const GET: &str = "GET";
    const POST: &str = "POST";

    // The ledger.
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/ledger/accounts"),
        "/v1/ledger/accounts",
        Some(FINANCE_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let entry = sale("obs-openapi-1", "25.00");
    let (s, v) = checked(
        app,
        doc,
        (POST, "/v1/ledger/entries"),
        "/v1/ledger/entries",
        Some(FINANCE_KEY),
        Some(&entry),
    )
    .await;
    assert_eq!(s, 201);
    let id = v["id"].as_i64().unwrap();
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/ledger/entries"),
        "/v1/ledger/entries",
        Some(FINANCE_KEY),
        Some(&entry),
    )
    .await;
    assert_eq!(s, 200, "a replay");
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/ledger/entries"),
        "/v1/ledger/entries",
        Some(FINANCE_KEY),
        Some("{"),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/ledger/entries"),
        "/v1/ledger/entries",
        Some(FINANCE_KEY),
        Some(&sale("obs-openapi-2", "-1.00")),
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/ledger/entries/{id}"),
        &format!("/v1/ledger/entries/{id}"),
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/ledger/entries/{id}"),
        "/v1/ledger/entries/424242",
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/ledger/accounts/{entity}/{code}/balance"),
        "/v1/ledger/accounts/MAIN/1000/balance?as_of=2026-12-31",
        Some(FINANCE_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/ledger/trial-balance"),
        "/v1/ledger/trial-balance",
        Some(FINANCE_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // The vault and payments.
    let card = |n: &str| {
        format!(
            r#"{{"type":"card","card":{{"number":"{n}","exp_month":12,"exp_year":2030,"name":"Ada"}}}}"#
        )
    };
    let (s, v) = checked(
        app,
        doc,
        (POST, "/v1/tokens"),
        "/v1/tokens",
        Some(PAYMENTS_KEY),
        Some(&card(TEST_PAN)),
    )
    .await;
    assert_eq!(s, 201);
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, _) = checked(app, doc, (POST, "/v1/tokens"), "/v1/tokens", Some(PAYMENTS_KEY), Some(r#"{"type":"bank_account","bank_account":{"routing_number":"110000000","account_number":"000123456789","account_type":"checking","holder_name":"G"}}"#)).await;
    assert_eq!(s, 201);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/tokens/{token}"),
        &format!("/v1/tokens/{token}"),
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let pay = |token: &str, capture: bool| {
        format!(
            r#"{{"amount":"20.00","currency":"USD","payment_method":"{token}","capture":{capture},"opportunity_id":"006OBS","account_id":"001OBS","invoice_refs":["INV-1"],"metadata":{{"k":"v"}}}}"#
        )
    };
    let (s, v) = checked(
        app,
        doc,
        (POST, "/v1/payments"),
        "/v1/payments",
        Some(PAYMENTS_KEY),
        Some(&pay(&token, false)),
    )
    .await;
    assert_eq!(s, 201);
    let pid = v["id"].as_str().unwrap().to_owned();
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments/{id}/capture"),
        &format!("/v1/payments/{pid}/capture"),
        Some(PAYMENTS_KEY),
        Some("{}"),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments/{id}/refunds"),
        &format!("/v1/payments/{pid}/refunds"),
        Some(PAYMENTS_KEY),
        Some(r#"{"amount":"5.00"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments/{id}/void"),
        &format!("/v1/payments/{pid}/void"),
        Some(PAYMENTS_KEY),
        None,
    )
    .await;
    assert_eq!(s, 409, "a captured payment cannot be voided");
    let (s, v) = checked(
        app,
        doc,
        (POST, "/v1/payments"),
        "/v1/payments",
        Some(PAYMENTS_KEY),
        Some(&pay(&token, false)),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments/{id}/void"),
        &format!("/v1/payments/{}/void", v["id"].as_str().unwrap()),
        Some(PAYMENTS_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, v) = checked(
        app,
        doc,
        (POST, "/v1/tokens"),
        "/v1/tokens",
        Some(PAYMENTS_KEY),
        Some(&card("4000000000000002")),
    )
    .await;
    let declined = v["token"].as_str().unwrap().to_owned();
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments"),
        "/v1/payments",
        Some(PAYMENTS_KEY),
        Some(&pay(&declined, true)),
    )
    .await;
    assert_eq!(s, 402);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/payments/{id}/represent"),
        &format!("/v1/payments/{pid}/represent"),
        Some(PAYMENTS_KEY),
        None,
    )
    .await;
    assert!(
        s == 409 || s == 422,
        "only a returned ACH debit is presented again: {s}"
    );
    let (s, v) = checked(
        app,
        doc,
        (GET, "/v1/payments"),
        "/v1/payments?opportunity_id=006OBS",
        Some(FINANCE_KEY),
        None,
    )
    .await;
    assert_eq!((s, v["data"].as_array().map(Vec::len)), (200, Some(3)));
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/payments"),
        "/v1/payments",
        Some(FINANCE_KEY),
        None,
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/payments/{id}"),
        &format!("/v1/payments/{pid}"),
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/payments/{id}"),
        "/v1/payments/pay_nope",
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/webhooks/deliveries"),
        "/v1/webhooks/deliveries?status=failed",
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // The sync queue: one dead job to look at, resolve and retry.
    let jobs = sync::jobs::Jobs::new(t.db.clone());
    let mut dead = Vec::new();
    for i in 0..2 {
        jobs.enqueue(sync::jobs::NewJob::new("test.doomed", json!({"i": i})))
            .await
            .unwrap();
    }
    for job in jobs
        .claim("t", &["test.doomed"], 2, Duration::from_secs(30))
        .await
        .unwrap()
    {
        jobs.fail(&job, &sync::jobs::JobError::Permanent("bad data".into()))
            .await
            .unwrap();
        dead.push(job.id);
    }
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/sync/status"),
        "/v1/sync/status",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = checked(
        app,
        doc,
        (GET, "/v1/sync/jobs"),
        "/v1/sync/jobs?status=dead",
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!((s, v["data"].as_array().map(Vec::len)), (200, Some(2)));
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/sync/jobs"),
        "/v1/sync/jobs?status=odd",
        Some(AUDITOR_KEY),
        None,
    )
    .await;
    assert_eq!(s, 422);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/jobs/{id}/resolve"),
        &format!("/v1/sync/jobs/{}/resolve", dead[0]),
        Some(ADMIN_KEY),
        Some(r#"{"note":"fixed by hand"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/jobs/{id}/retry"),
        &format!("/v1/sync/jobs/{}/retry", dead[0]),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 409, "a resolved job is not retried");
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/jobs/{id}/retry"),
        &format!("/v1/sync/jobs/{}/retry", dead[1]),
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/jobs/{id}/retry"),
        "/v1/sync/jobs/999999/retry",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/intacct/pull"),
        "/v1/sync/intacct/pull",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 404, "not configured here");
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/sync/x3/pull"),
        "/v1/sync/x3/pull",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(s, 404, "not configured here");
    for line in ["sage100", "businessworks"] {
        let path = format!("/v1/sync/{line}/pull");
        let (s, _) = checked(
            app,
            doc,
            (POST, path.as_str()),
            &path,
            Some(ADMIN_KEY),
            None,
        )
        .await;
        assert_eq!(s, 404, "{line} is not configured here");
    }

    // Authentication and roles.
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/sync/status"),
        "/v1/sync/status",
        None,
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/sync/status"),
        "/v1/sync/status",
        Some(PAYMENTS_KEY),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = checked(
        app,
        doc,
        (POST, "/v1/events/salesforce"),
        "/v1/events/salesforce",
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(s, 404, "not configured here");
    let (s, _) = checked(
        app,
        doc,
        (GET, "/v1/openapi.json"),
        "/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    owned.stop().await;
});
