//! The sync engine's storage: job queue, worker, cursors, cross-reference, review queue — on
//! SQLite and (with CASHLOOP_TEST_POSTGRES_URL) PostgreSQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use db::{Db, DbOptions, both_backends};
use serde_json::json;
use sync::cursor::{Cursors, Position};
use sync::jobs::{
    Backoff, BoxFuture, Failed, Handler, Job, JobError, Jobs, JobsError, NewJob, Registry,
    WorkerOptions, run_worker,
};
use sync::review::Review;
use sync::xref::{Link, Linked, Xref};

const LEASE: Duration = Duration::from_secs(30);

fn fast(db: Db) -> Jobs {
    Jobs::new(db).with_backoff(Backoff {
        base_ms: 40,
        cap_ms: 200,
    })
}

async fn audit_count(db: &Db, action: &'static str) -> i64 {
    match db {
        Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = $1")
            .bind(action)
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Sqlite(s) => sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = ?")
            .bind(action)
            .fetch_one(&s.pool)
            .await
            .unwrap(),
    }
}

both_backends!(jobs_dedupe_claim_and_succeed, |t| async move {
    let jobs = fast(t.db.clone());
    let a = jobs
        .enqueue(NewJob::new("pull", json!({"object": "Account"})).dedupe("evt-1"))
        .await
        .unwrap();
    assert!(a.is_some());
    let again = jobs
        .enqueue(NewJob::new("pull", json!({"object": "Account"})).dedupe("evt-1"))
        .await
        .unwrap();
    assert_eq!(again, None, "a replayed event adds no job");
    let later = jobs
        .enqueue(NewJob {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..NewJob::new("push", json!({}))
        })
        .await
        .unwrap()
        .unwrap();
    let claimed = jobs
        .claim("w1", &["pull", "push"], 10, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the future job is not due");
    let job = &claimed[0];
    assert_eq!(
        (job.id, job.attempt, job.kind.as_str()),
        (a.unwrap(), 1, "pull")
    );
    assert_eq!(job.payload["object"], "Account");
    assert!(
        jobs.claim("w2", &["pull", "push"], 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    assert!(jobs.succeed(job).await.unwrap());
    let rec = jobs.get(job.id).await.unwrap();
    assert_eq!((rec.status.as_str(), rec.attempts), ("succeeded", 1));
    assert_eq!(jobs.get(later).await.unwrap().status, "pending");
    let status = jobs.status().await.unwrap();
    assert_eq!(status.by_status.get("succeeded"), Some(&1));
    assert_eq!(status.by_status.get("pending"), Some(&1));
    assert_eq!(status.oldest_pending_age_s, None, "nothing pending is due");
    assert!(matches!(
        jobs.get(999_999).await,
        Err(JobsError::NotFound(_))
    ));
});

both_backends!(
    jobs_retry_with_backoff_then_dead_then_operator,
    |t| async move {
        let jobs = fast(t.db.clone());
        let id = jobs
            .enqueue(NewJob {
                max_attempts: Some(3),
                ..NewJob::new("push", json!({"n": 1}))
            })
            .await
            .unwrap()
            .unwrap();
        for attempt in 1..=3 {
            let job = loop {
                if let Some(j) = jobs
                    .claim("w", &["pull", "push"], 1, LEASE)
                    .await
                    .unwrap()
                    .pop()
                {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(job.attempt, attempt);
            let before = Utc::now();
            let outcome = jobs
                .fail(
                    &job,
                    &JobError::Retryable(format!("503 on attempt {attempt}")),
                )
                .await
                .unwrap();
            if attempt < 3 {
                let Failed::Retrying { run_at } = outcome else {
                    panic!("{outcome:?}")
                };
                // base 40 ms · 2^(attempt-1), jittered into [½, 1] of it.
                let full = 40 * 2i64.pow(attempt as u32 - 1);
                let delay = (run_at - before).num_milliseconds();
                assert!(
                    delay >= full / 2 - 5 && delay <= full + 50,
                    "attempt {attempt}: {delay} ms"
                );
            } else {
                assert_eq!(outcome, Failed::Dead, "attempts exhausted: the error queue");
            }
        }
        let dead = jobs.get(id).await.unwrap();
        assert_eq!(
            (
                dead.status.as_str(),
                dead.last_error.as_deref(),
                dead.last_error_kind.as_deref()
            ),
            ("dead", Some("503 on attempt 3"), Some("retryable"))
        );
        assert_eq!(jobs.list(Some("dead"), 10).await.unwrap().len(), 1);
        // A permanent error skips the retries.
        let bad = jobs
            .enqueue(NewJob::new("push", json!({"n": 2})))
            .await
            .unwrap()
            .unwrap();
        let job = jobs
            .claim("w", &["pull", "push"], 1, LEASE)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(job.id, bad);
        assert_eq!(
            jobs.fail(
                &job,
                &JobError::Permanent("REQUIRED_FIELD_MISSING: Name".into())
            )
            .await
            .unwrap(),
            Failed::Dead
        );
        assert_eq!(jobs.get(bad).await.unwrap().attempts, 1);
        // The operator retries one (fresh attempts) and resolves the other, both audited.
        let retried = jobs.retry(id, "ops@example.com").await.unwrap();
        assert_eq!(
            (retried.status.as_str(), retried.max_attempts),
            ("pending", 6)
        );
        let job = jobs
            .claim("w", &["pull", "push"], 1, LEASE)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!((job.id, job.attempt), (id, 4));
        assert!(jobs.succeed(&job).await.unwrap());
        let resolved = jobs
            .resolve(
                bad,
                "ops@example.com",
                "fixed the Account name in Salesforce; re-synced",
            )
            .await
            .unwrap();
        assert_eq!(resolved.status, "resolved");
        assert!(resolved.resolution.unwrap().contains("fixed"));
        assert_eq!(audit_count(&t.db, "sync.job.retry").await, 1);
        assert_eq!(audit_count(&t.db, "sync.job.resolve").await, 1);
        // Only dead jobs take operator actions.
        assert!(matches!(
            jobs.retry(id, "ops").await,
            Err(JobsError::WrongState { .. })
        ));
        // Every attempt is on record.
        let attempts: i64 = match &t.db {
            Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM sync_job_attempts")
                .fetch_one(p)
                .await
                .unwrap(),
            Db::Sqlite(s) => sqlx::query_scalar("SELECT COUNT(*) FROM sync_job_attempts")
                .fetch_one(&s.pool)
                .await
                .unwrap(),
        };
        assert_eq!(attempts, 5);
    }
);

both_backends!(
    an_expired_lease_lets_another_worker_take_the_job,
    |t| async move {
        let jobs = fast(t.db.clone());
        let id = jobs
            .enqueue(NewJob::new("push", json!({})))
            .await
            .unwrap()
            .unwrap();
        // Worker A claims with a short lease and "dies".
        let a = jobs
            .claim("a", &["pull", "push"], 1, Duration::from_millis(150))
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert!(
            jobs.claim("b", &["pull", "push"], 1, LEASE)
                .await
                .unwrap()
                .is_empty()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let b = jobs
            .claim("b", &["pull", "push"], 1, LEASE)
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!((b.id, b.attempt), (id, 2));
        // A comes back: its lease is gone, so its outcome is not recorded.
        assert!(!jobs.succeed(&a).await.unwrap());
        assert_eq!(
            jobs.fail(&a, &JobError::Permanent("late".into()))
                .await
                .unwrap(),
            Failed::LeaseLost
        );
        assert!(!jobs.heartbeat(&a, LEASE).await.unwrap());
        assert!(jobs.heartbeat(&b, LEASE).await.unwrap());
        assert!(jobs.succeed(&b).await.unwrap());
        let rec = jobs.get(id).await.unwrap();
        assert_eq!((rec.status.as_str(), rec.attempts), ("succeeded", 2));
    }
);

/// Counts each job's runs; fails the first run of every tenth job (retryable).
#[derive(Debug, Default)]
struct Counting {
    runs: Mutex<HashMap<i64, u32>>,
}

impl Handler for Counting {
    fn handle<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let n = {
                let mut runs = self.runs.lock().unwrap();
                let n = runs.entry(job.id).or_default();
                *n += 1;
                *n
            };
            tokio::time::sleep(Duration::from_millis(2)).await;
            if job.payload["i"].as_i64().unwrap() % 10 == 0 && n == 1 {
                return Err(JobError::Retryable("first try fails".into()));
            }
            Ok(())
        })
    }
}

/// Logs one line from inside the handler.
#[derive(Debug)]
struct Logging;

impl Handler for Logging {
    fn handle<'a>(&'a self, _job: &'a Job) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            tracing::info!("inside the handler");
            Ok(())
        })
    }
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A job's log lines carry its id, kind and attempt (the `job` span), and its run is measured.
// Current-thread runtime: the subscriber set for this thread sees the worker's tasks.
#[tokio::test(flavor = "current_thread")]
async fn job_runs_log_in_a_span_with_the_job_id() {
    let t = db::testing::sqlite().await;
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let jobs = fast(t.db.clone());
    let id = jobs
        .enqueue(NewJob::new("logged", json!({})))
        .await
        .unwrap()
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(run_worker(
        jobs.clone(),
        Registry::new().register("logged", Arc::new(Logging)),
        WorkerOptions {
            name: "w".into(),
            concurrency: 1,
            lease: LEASE,
            idle_poll: Duration::from_millis(10),
        },
        stopped,
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while jobs.get(id).await.unwrap().status != "succeeded" {
        assert!(std::time::Instant::now() < deadline, "the job did not run");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    worker.await.unwrap();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["fields"]["message"] == "inside the handler")
        .unwrap_or_else(|| panic!("no handler line in {text}"));
    assert_eq!(line["span"]["name"], "job", "{line}");
    assert_eq!(line["span"]["job_id"], id, "{line}");
    assert_eq!(line["span"]["kind"], "logged", "{line}");
    assert_eq!(line["span"]["attempt"], 1, "{line}");
    assert!(metrics::SYNC_JOB_DURATION.count(&["logged", "succeeded"]) >= 1);
}

// Two workers on two connection pools (as two `cashloop serve` processes would have) never
// run a job twice; retried jobs run again; every job ends succeeded.
both_backends!(two_workers_never_run_a_job_twice, |t| async move {
    let second = Db::connect(
        &t.url,
        &DbOptions {
            max_connections: 4,
            ..DbOptions::default()
        },
    )
    .await
    .unwrap();
    let jobs_a = fast(t.db.clone());
    let jobs_b = fast(second.clone());
    const N: i64 = 200;
    for i in 0..N {
        jobs_a
            .enqueue(NewJob::new("count", json!({"i": i})))
            .await
            .unwrap();
    }
    let handler = Arc::new(Counting::default());
    let registry = Registry::new().register("count", handler.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opts = |name: &str| WorkerOptions {
        name: name.to_owned(),
        concurrency: 4,
        lease: LEASE,
        idle_poll: Duration::from_millis(10),
    };
    let wa = tokio::spawn(run_worker(
        jobs_a.clone(),
        registry.clone(),
        opts("a"),
        stopped.clone(),
    ));
    let wb = tokio::spawn(run_worker(jobs_b, registry, opts("b"), stopped));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = jobs_a.status().await.unwrap();
        if s.by_status.get("succeeded") == Some(&N) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workers stalled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    wa.await.unwrap();
    wb.await.unwrap();
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len() as i64, N);
    for (id, n) in &runs {
        let rec = jobs_a.get(*id).await.unwrap();
        let expected = if rec.payload["i"].as_i64().unwrap() % 10 == 0 {
            2
        } else {
            1
        };
        assert_eq!(*n, expected, "job {id} ran {n} times");
        assert_eq!(rec.attempts as u32, expected);
    }
    // Every attempt was measured (the registry is per process: other tests may add to it).
    assert!(metrics::SYNC_JOB_DURATION.count(&["count", "succeeded"]) >= N as u64);
    assert!(metrics::SYNC_JOB_DURATION.count(&["count", "retrying"]) >= (N / 10) as u64);
    assert!(metrics::SYNC_JOB_RETRIES.get(&["count"]) >= (N / 10) as u64);
    // Both workers did some of the work.
    let workers: Vec<String> = match &t.db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT DISTINCT worker FROM sync_job_attempts ORDER BY worker")
                .fetch_all(p)
                .await
                .unwrap()
        }
        Db::Sqlite(s) => {
            sqlx::query_scalar("SELECT DISTINCT worker FROM sync_job_attempts ORDER BY worker")
                .fetch_all(&s.pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(workers, vec!["a".to_owned(), "b".to_owned()]);
    second.close().await;
});

both_backends!(jobs_of_kinds_nobody_handles_wait, |t| async move {
    let jobs = fast(t.db.clone());
    let id = jobs
        .enqueue(NewJob::new("mystery", json!({})))
        .await
        .unwrap()
        .unwrap();
    assert!(
        jobs.claim("w", &["pull", "push"], 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // A worker with no handlers does not even poll.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(5),
        run_worker(
            jobs.clone(),
            Registry::new(),
            WorkerOptions {
                name: "w".into(),
                concurrency: 1,
                lease: LEASE,
                idle_poll: Duration::from_millis(10),
            },
            stopped,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        jobs.get(id).await.unwrap().status,
        "pending",
        "waits for a handler"
    );
    let claimed = jobs.claim("w", &["mystery"], 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 1);
});

both_backends!(
    cursors_move_only_forward_and_commit_with_the_writes,
    |t| async move {
        let cursors = Cursors::new(t.db.clone());
        assert_eq!(cursors.get("salesforce", "Account").await.unwrap(), None);
        let at = |s: i64, id: &str| Position {
            modified_at: Utc.timestamp_opt(1_795_000_000 + s, 0).unwrap(),
            last_id: id.to_owned(),
        };
        assert!(
            cursors
                .advance("salesforce", "Account", &at(10, "001B"))
                .await
                .unwrap()
        );
        assert!(
            !cursors
                .advance("salesforce", "Account", &at(10, "001A"))
                .await
                .unwrap(),
            "same time, lower id: behind"
        );
        assert!(
            !cursors
                .advance("salesforce", "Account", &at(5, "001Z"))
                .await
                .unwrap(),
            "earlier: behind"
        );
        assert!(
            cursors
                .advance("salesforce", "Account", &at(10, "001C"))
                .await
                .unwrap()
        );
        assert_eq!(
            cursors.get("salesforce", "Account").await.unwrap(),
            Some(at(10, "001C"))
        );
        assert_eq!(
            cursors
                .since("salesforce", "Account", chrono::Duration::seconds(60))
                .await
                .unwrap(),
            Some(at(10, "x").modified_at - chrono::Duration::seconds(60))
        );
        // Rolled back with the writes it covered: it did not move.
        let mut tx = t.db.begin().await.unwrap();
        assert!(
            Cursors::advance_in(&mut tx, "salesforce", "Account", &at(20, "001D"))
                .await
                .unwrap()
        );
        tx.rollback().await.unwrap();
        assert_eq!(
            cursors.get("salesforce", "Account").await.unwrap(),
            Some(at(10, "001C"))
        );
        assert_eq!(
            cursors.get("salesforce", "Contact").await.unwrap(),
            None,
            "per object"
        );
    }
);

both_backends!(xref_links_never_overwrite, |t| async move {
    let xref = Xref::new(t.db.clone());
    let link = |sf: &str, sage: &str| Link {
        object: "Account".into(),
        salesforce_id: sf.into(),
        sage_system: "intacct".into(),
        sage_entity: "US01".into(),
        sage_id: sage.into(),
        last_values: None,
    };
    assert_eq!(
        xref.link(&link("001A", "C-100")).await.unwrap(),
        Linked::Created
    );
    assert_eq!(
        xref.link(&link("001A", "C-100")).await.unwrap(),
        Linked::Existing
    );
    match xref.link(&link("001A", "C-200")).await.unwrap() {
        Linked::Conflict(existing) => assert_eq!(existing.sage_id, "C-100"),
        other => panic!("{other:?}"),
    }
    match xref.link(&link("001B", "C-100")).await.unwrap() {
        Linked::Conflict(existing) => assert_eq!(existing.salesforce_id, "001A"),
        other => panic!("{other:?}"),
    }
    let found = xref
        .by_sage("intacct", "Account", "US01", "C-100")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.salesforce_id, "001A");
    assert!(
        xref.by_salesforce("Account", "001A", "x3")
            .await
            .unwrap()
            .is_none(),
        "per Sage system"
    );
    assert!(
        xref.set_last_values("Account", "001A", "intacct", &json!({"Name": "Acme"}))
            .await
            .unwrap()
    );
    let got = xref
        .by_salesforce("Account", "001A", "intacct")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.last_values, Some(json!({"Name": "Acme"})));
});

both_backends!(review_items_wait_for_a_person, |t| async move {
    let review = Review::new(t.db.clone());
    let last: BTreeMap<String, serde_json::Value> = [("Name".to_owned(), json!("Acme"))].into();
    let sf: BTreeMap<String, serde_json::Value> = [("Name".to_owned(), json!("Acme Inc"))].into();
    let sage: BTreeMap<String, serde_json::Value> = [("Name".to_owned(), json!("ACME Ltd"))].into();
    let conflicts = sync::review::conflicts(&["Name"], &last, &sf, &sage);
    let id = review
        .open(
            "conflict",
            "Account",
            "001A",
            &serde_json::to_value(&conflicts).unwrap(),
        )
        .await
        .unwrap();
    review
        .open(
            "multiple_match",
            "Account",
            "ext:C-100",
            &json!({"candidates": ["001A", "001B"]}),
        )
        .await
        .unwrap();
    let open = review.open_items(10).await.unwrap();
    assert_eq!(open.len(), 2);
    assert_eq!(open[0].detail[0]["field"], "Name");
    assert!(
        review
            .resolve(id, "ops", "kept Salesforce's name")
            .await
            .unwrap()
    );
    assert!(
        !review.resolve(id, "ops", "again").await.unwrap(),
        "already resolved"
    );
    assert_eq!(review.open_items(10).await.unwrap().len(), 1);
    assert_eq!(audit_count(&t.db, "sync.review.resolve").await, 1);
});

// ---- Salesforce flows against the simulator ----

use sync::flows::{CircuitBreaker, PULL, PUSH, PullObject, SalesforceSync, changed_kind};
use sync::salesforce::simulator::{Simulator, SimulatorConfig};
use sync::salesforce::{ClientConfig, Credentials, Record, SalesforceClient};

async fn salesforce() -> (Simulator, SalesforceClient) {
    let sim = Simulator::start(SimulatorConfig::default()).await;
    let creds =
        Credentials::client_credentials(&sim.config().client_id, &sim.config().client_secret);
    let client = SalesforceClient::new(ClientConfig::new(sim.base_url()), creds).unwrap();
    (sim, client)
}

fn flows(t: &db::testing::TestDb, sim: &Simulator, client: &SalesforceClient) -> SalesforceSync {
    SalesforceSync::new(
        t.db.clone(),
        client.clone(),
        vec![PullObject {
            name: "Account".into(),
            fields: vec!["Name".into(), "Sage_Customer_Id__c".into()],
        }],
        Some(sim.config().api_user_id.clone()),
    )
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Db::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(&s.pool).await.unwrap(),
    }
}

// A pull killed after its first page resumes from the cursor: every record mirrored once, one
// downstream job per person's change, none for the integration user's own writes.
both_backends!(a_killed_pull_resumes_from_its_cursor, |t| async move {
    let (sim, client) = salesforce().await;
    let people: Vec<Record> = (0..5_000)
        .map(|i| Record::new("Account").with("Name", format!("Person {i:05}").as_str()))
        .collect();
    sim.insert_as_user("Account", &people).unwrap();
    let ours: Vec<Record> = (0..10)
        .map(|i| Record::new("Account").with("Name", format!("Ours {i}").as_str()))
        .collect();
    assert!(
        client
            .create_many(&ours)
            .await
            .unwrap()
            .iter()
            .all(|r| r.success)
    );
    let sync = flows(&t, &sim, &client);
    // Kill the first run once a page has committed.
    sim.set_latency_ms(150);
    let first = tokio::spawn({
        let sync = sync.clone();
        async move { sync.pull("Account", None).await }
    });
    let cursors = Cursors::new(t.db.clone());
    while cursors
        .get("salesforce", "Account")
        .await
        .unwrap()
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.abort();
    let _ = first.await;
    let mirrored_then = count(&t.db, "SELECT COUNT(*) FROM sync_sf_records").await;
    assert!((2_000..5_010).contains(&mirrored_then), "{mirrored_then}");
    sim.set_latency_ms(0);
    let report = sync.pull("Account", None).await.unwrap();
    assert_eq!(
        report.records + mirrored_then as u64,
        5_010 + report.skipped,
        "{report:?}"
    );
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM sync_sf_records").await,
        5_010
    );
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'salesforce.changed:Account'"
        )
        .await,
        5_000,
        "one job per person's change, none for our own writes"
    );
    // Nothing new: the look-back re-reads a little and skips it.
    let again = sync.pull("Account", None).await.unwrap();
    assert_eq!(again.queued, 0, "{again:?}");
    // A person edits three, deletes one: four new jobs, the delete mirrored.
    let ids = sim.find("Account", "Name", "Person 00007");
    sim.update_as_user(
        "Account",
        &ids[0],
        &Record::new("Account").with("Name", "Person 7 renamed"),
    )
    .unwrap();
    for n in ["Person 00008", "Person 00009"] {
        let id = sim.find("Account", "Name", n)[0].clone();
        sim.update_as_user(
            "Account",
            &id,
            &Record::new("Account").with("Name", "edited"),
        )
        .unwrap();
    }
    let gone = sim.find("Account", "Name", "Person 00010")[0].clone();
    // Ensure the edits carry a later SystemModstamp than the cursor (millisecond clock).
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.delete_as_user("Account", &gone).unwrap();
    let after = sync.pull("Account", None).await.unwrap();
    assert_eq!(after.queued, 4, "{after:?}");
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM sync_sf_records WHERE is_deleted"
        )
        .await,
        1
    );
    let jobs = Jobs::new(t.db.clone());
    let changed = jobs.list(Some("pending"), 10).await.unwrap();
    assert!(changed.iter().all(|j| j.kind == changed_kind("Account")));
    assert!(
        changed
            .iter()
            .any(|j| j.payload["deleted"] == true && j.payload["id"] == gone)
    );
});

// A push killed after its first collection call sends the rest on the rerun: no duplicate
// records; refused records are marked with the reason; an ambiguous external id waits for a
// person.
both_backends!(a_killed_push_never_duplicates, |t| async move {
    let (sim, client) = salesforce().await;
    let sync = flows(&t, &sim, &client);
    for i in 0..1_000 {
        let mut f = serde_json::Map::new();
        f.insert("Name".into(), json!(format!("Customer {i}")));
        sync.queue_push("Account", "Sage_Customer_Id__c", &format!("C-{i:04}"), &f)
            .await
            .unwrap();
    }
    sim.set_latency_ms(100);
    let first = tokio::spawn({
        let sync = sync.clone();
        async move { sync.push("Account", None).await }
    });
    let label = "PATCH /composite/sobjects/{object}/{field}";
    while sim.calls_to(label) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.abort();
    let _ = first.await;
    sim.set_latency_ms(0);
    let report = sync.push("Account", None).await.unwrap();
    assert_eq!(report.failed + report.review, 0, "{report:?}");
    assert_eq!(sim.count("Account"), 1_000, "no duplicates");
    for i in [0, 1, 499, 999] {
        assert_eq!(
            sim.find("Account", "Sage_Customer_Id__c", &format!("C-{i:04}"))
                .len(),
            1
        );
    }
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM sync_sf_outbox WHERE status = 'done'"
        )
        .await,
        1_000
    );
    // ⌈1000/200⌉ = 5 calls at least; the rerun re-sent at most the window in flight (4 calls).
    let calls = sim.calls_to(label);
    assert!((5..=9).contains(&calls), "{calls}");
    // A record Salesforce refuses; an external id two records share.
    sim.insert_as_user(
        "Account",
        &[
            Record::new("Account")
                .with("Name", "Twin A")
                .with("Legacy_Customer_Code__c", "L-1"),
            Record::new("Account")
                .with("Name", "Twin B")
                .with("Legacy_Customer_Code__c", "L-1"),
        ],
    )
    .unwrap();
    let mut no_name = serde_json::Map::new();
    no_name.insert("Name".into(), json!(null));
    sync.queue_push("Account", "Sage_Customer_Id__c", "C-BAD", &no_name)
        .await
        .unwrap();
    let mut twin = serde_json::Map::new();
    twin.insert("Name".into(), json!("Which twin?"));
    sync.queue_push("Account", "Legacy_Customer_Code__c", "L-1", &twin)
        .await
        .unwrap();
    let report = sync.push("Account", None).await.unwrap();
    assert_eq!(
        (report.failed, report.review, report.done),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(
        sim.find("Account", "Name", "Which twin?").len(),
        0,
        "never picks one"
    );
    let open = Review::new(t.db.clone()).open_items(10).await.unwrap();
    assert_eq!((open.len(), open[0].kind.as_str()), (1, "multiple_match"));
    let err = count(&t.db, "SELECT COUNT(*) FROM sync_sf_outbox WHERE status = 'failed' AND last_error LIKE 'REQUIRED_FIELD_MISSING%'").await;
    assert_eq!(err, 1);
    // The same values again are a write that changes nothing: not queued, not sent.
    let mut same = serde_json::Map::new();
    same.insert("Name".into(), json!("Customer 5"));
    sync.queue_push("Account", "Sage_Customer_Id__c", "C-0005", &same)
        .await
        .unwrap();
    assert_eq!(sync.push("Account", None).await.unwrap().sent, 0);
    // A newer change to a done record goes out again.
    let mut renamed = serde_json::Map::new();
    renamed.insert("Name".into(), json!("Customer 7 renamed"));
    sync.queue_push("Account", "Sage_Customer_Id__c", "C-0007", &renamed)
        .await
        .unwrap();
    assert_eq!(sync.push("Account", None).await.unwrap().done, 1);
    assert_eq!(sim.find("Account", "Name", "Customer 7 renamed").len(), 1);
    assert_eq!(sim.count("Account"), 1_002);
});

// A 500/503 storm: each failure is retryable; after the threshold the breaker stops calling
// Salesforce at all until its cooldown ends.
both_backends!(a_503_storm_opens_the_circuit, |t| async move {
    let (sim, client) = salesforce().await;
    client.login().await.unwrap();
    let sync =
        flows(&t, &sim, &client).with_breaker(CircuitBreaker::new(3, Duration::from_millis(300)));
    sim.fail_next(&[503, 500, 503, 503]);
    for _ in 0..3 {
        assert!(matches!(
            sync.pull("Account", None).await,
            Err(JobError::Retryable(_))
        ));
    }
    assert!(sync.breaker().is_open());
    let before: u64 = sim.calls().values().sum();
    let e = sync.pull("Account", None).await.unwrap_err();
    assert!(
        matches!(&e, JobError::Retryable(m) if m.contains("circuit open")),
        "{e:?}"
    );
    assert_eq!(
        sim.calls().values().sum::<u64>(),
        before,
        "no call while open"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Half-open: one call goes through (the storm's last 503), fails, and reopens it.
    assert!(sync.pull("Account", None).await.is_err());
    assert!(sync.breaker().is_open());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        sync.pull("Account", None).await.is_ok(),
        "the storm is over"
    );
    assert!(!sync.breaker().is_open());
});

// The worker runs pull and push jobs queued on a schedule slot (deduplicated per slot).
both_backends!(the_worker_runs_salesforce_jobs, |t| async move {
    let (sim, client) = salesforce().await;
    sim.insert_as_user("Account", &[Record::new("Account").with("Name", "Acme")])
        .unwrap();
    let sync = flows(&t, &sim, &client);
    let mut f = serde_json::Map::new();
    f.insert("Name".into(), json!("Pushed"));
    sync.queue_push("Account", "Sage_Customer_Id__c", "C-1", &f)
        .await
        .unwrap();
    assert_eq!(sync.queue_pulls(None, 42).await.unwrap().len(), 1);
    assert_eq!(
        sync.queue_pulls(None, 42).await.unwrap().len(),
        0,
        "one per slot"
    );
    let jobs = Jobs::new(t.db.clone());
    jobs.enqueue(NewJob::new(PUSH, json!({"object": "Account"})))
        .await
        .unwrap();
    let registry = sync.clone().register(Registry::new());
    assert_eq!(registry.kinds(), vec![PULL.to_owned(), PUSH.to_owned()]);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let w = tokio::spawn(run_worker(
        jobs.clone(),
        registry,
        WorkerOptions {
            name: "w".into(),
            concurrency: 2,
            lease: LEASE,
            idle_poll: Duration::from_millis(10),
        },
        stopped,
    ));
    for _ in 0..500 {
        if jobs.status().await.unwrap().by_status.get("succeeded") == Some(&2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    w.await.unwrap();
    assert_eq!(
        jobs.status().await.unwrap().by_status.get("succeeded"),
        Some(&2)
    );
    assert_eq!(sim.find("Account", "Name", "Pushed").len(), 1);
    // The pull may have run before or after the push: our pushed record is mirrored or not,
    // but it is never passed on as a change.
    assert!((1..=2).contains(&count(&t.db, "SELECT COUNT(*) FROM sync_sf_records").await));
    assert_eq!(
        count(
            &t.db,
            "SELECT COUNT(*) FROM sync_jobs WHERE kind = 'salesforce.changed:Account'"
        )
        .await,
        1
    );
});

// A historical load through Bulk API 2.0 sets the mirror, the downstream jobs and the cursor;
// the next REST pull continues from there.
both_backends!(a_bulk_initial_load_then_incremental_pulls, |t| async move {
    let (sim, client) = salesforce().await;
    let people: Vec<Record> = (0..4_500)
        .map(|i| Record::new("Account").with("Name", format!("Old {i:05}").as_str()))
        .collect();
    sim.insert_as_user("Account", &people).unwrap();
    let ours = [Record::new("Account").with("Name", "Our own")];
    client.create_many(&ours).await.unwrap();
    let sync = flows(&t, &sim, &client);
    let r = sync.initial_load_bulk("Account").await.unwrap();
    assert_eq!((r.records, r.queued, r.echoes), (4_501, 4_500, 1), "{r:?}");
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) FROM sync_sf_records").await,
        4_501
    );
    assert!(
        sim.calls().keys().any(|k| k.contains("/jobs/query")),
        "went through Bulk 2.0"
    );
    // Only once per object.
    assert!(matches!(
        sync.initial_load_bulk("Account").await,
        Err(JobError::Permanent(_))
    ));
    let next = sync.pull("Account", None).await.unwrap();
    assert_eq!(next.queued, 0, "{next:?}");
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.insert_as_user("Account", &[Record::new("Account").with("Name", "New one")])
        .unwrap();
    assert_eq!(sync.pull("Account", None).await.unwrap().queued, 1);
});

// ---- Intacct: a customer per Salesforce account, never two ----

use sync::intacct::client::{Secret as IntacctSecret, UserAuth};
use sync::intacct::customers::{Account, EnsureError, Found, customer_id_for, ensure_customer};
use sync::intacct::simulator::{Simulator as IntacctSim, SimulatorConfig as IntacctSimConfig};
use sync::intacct::{Element, IntacctClient, IntacctConfig};

both_backends!(
    intacct_customers_are_linked_not_duplicated,
    |t| async move {
        let sim = IntacctSim::start(IntacctSimConfig::default()).await;
        let c = sim.config();
        let (user, pass) = c.users[0].clone();
        let mut cfg = IntacctConfig::new(
            &c.sender_id,
            IntacctSecret::new(&c.sender_password),
            &c.company_id,
            UserAuth::Login {
                user_id: user,
                password: IntacctSecret::new(pass),
            },
        );
        cfg.endpoint_url = sim.endpoint_url();
        let client = IntacctClient::new(cfg).unwrap();
        let xref = Xref::new(t.db.clone());
        let review = Review::new(t.db.clone());
        let acme = Account {
            salesforce_id: "001000000000001AAA".into(),
            name: "Acme & Sons".into(),
            ..Account::default()
        };
        // New: created under a deterministic id, then found through the cross-reference.
        let (id, how) = ensure_customer(&client, &xref, &review, &acme, "US01")
            .await
            .unwrap();
        assert_eq!(
            (id.as_str(), how),
            (
                customer_id_for(&acme.salesforce_id).as_str(),
                Found::Created
            )
        );
        let (again, how) = ensure_customer(&client, &xref, &review, &acme, "US01")
            .await
            .unwrap();
        assert_eq!((again, how), (id.clone(), Found::Xref));
        // Already in Intacct under the same name (entered by hand): linked, not duplicated.
        sim.insert(
            "CUSTOMER",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C-0042")
                    .with_leaf("NAME", "Globex"),
            ],
        );
        let globex = Account {
            salesforce_id: "001000000000002AAA".into(),
            name: "Globex".into(),
            ..Account::default()
        };
        let (id, how) = ensure_customer(&client, &xref, &review, &globex, "US01")
            .await
            .unwrap();
        assert_eq!((id.as_str(), how), ("C-0042", Found::Matched));
        // A crash after the create, before the cross-reference: the retry finds it by name.
        let initech = Account {
            salesforce_id: "001000000000003AAA".into(),
            name: "Initech".into(),
            ..Account::default()
        };
        sim.insert(
            "CUSTOMER",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", customer_id_for(&initech.salesforce_id))
                    .with_leaf("NAME", "Initech"),
            ],
        );
        let (_, how) = ensure_customer(&client, &xref, &review, &initech, "US01")
            .await
            .unwrap();
        assert_eq!(how, Found::Matched);
        assert_eq!(
            sim.records("CUSTOMER").len(),
            3,
            "no second customer anywhere"
        );
        // Two customers share a name: a person decides.
        sim.insert(
            "CUSTOMER",
            vec![
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C-7")
                    .with_leaf("NAME", "Twins"),
                Element::new("CUSTOMER")
                    .with_leaf("CUSTOMERID", "C-8")
                    .with_leaf("NAME", "Twins"),
            ],
        );
        let twins = Account {
            salesforce_id: "001000000000004AAA".into(),
            name: "Twins".into(),
            ..Account::default()
        };
        let e = ensure_customer(&client, &xref, &review, &twins, "US01")
            .await
            .unwrap_err();
        assert!(matches!(e, EnsureError::Ambiguous { count: 2, .. }), "{e}");
        assert_eq!(
            review.open_items(10).await.unwrap()[0].kind,
            "multiple_match"
        );
        assert!(
            xref.by_salesforce("Account", &twins.salesforce_id, "intacct")
                .await
                .unwrap()
                .is_none()
        );
    }
);

both_backends!(finished_jobs_are_pruned_dead_ones_stay, |t| async move {
    let jobs = fast(t.db.clone());
    for i in 0..5 {
        jobs.enqueue(NewJob::new("pull", json!({"n": i})).dedupe(format!("evt-{i}")))
            .await
            .unwrap()
            .unwrap();
    }
    let dead = jobs
        .enqueue(NewJob {
            max_attempts: Some(1),
            ..NewJob::new("push", json!({}))
        })
        .await
        .unwrap()
        .unwrap();
    let pending = jobs
        .enqueue(NewJob {
            run_at: Some(Utc::now() + chrono::Duration::hours(1)),
            ..NewJob::new("pull", json!({}))
        })
        .await
        .unwrap()
        .unwrap();
    for job in jobs.claim("w1", &["pull"], 10, LEASE).await.unwrap() {
        assert!(jobs.succeed(&job).await.unwrap());
    }
    for job in jobs.claim("w1", &["push"], 10, LEASE).await.unwrap() {
        jobs.fail(&job, &JobError::Permanent("no".into()))
            .await
            .unwrap();
    }
    // Finished before the cut-off: gone, in batches; the error queue and due work stay.
    assert_eq!(
        jobs.prune(Utc::now() - chrono::Duration::hours(1), 2)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        jobs.prune(Utc::now() + chrono::Duration::seconds(1), 2)
            .await
            .unwrap(),
        5
    );
    assert_eq!(jobs.get(dead).await.unwrap().status, "dead");
    assert_eq!(jobs.get(pending).await.unwrap().status, "pending");
    // A pruned job's dedupe key is free again.
    assert!(
        jobs.enqueue(NewJob::new("pull", json!({})).dedupe("evt-0"))
            .await
            .unwrap()
            .is_some()
    );
});
