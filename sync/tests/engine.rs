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
