//! What each rule kind measures. Read-only queries on both backends; each returns the
//! conditions that hold now (an empty list clears the rule's alerts).

use chrono::{DateTime, Utc};
use db::Db;

use super::{Finding, Rule, RuleKind, cut, scrub};

/// Why a rule could not be evaluated (its alerts are left as they are).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("sync queue: {0}")]
    Jobs(#[from] sync::jobs::JobsError),
    #[error("ledger: {0}")]
    Ledger(#[from] ledger::LedgerError),
}

/// Dead jobs listed in one alert at most.
const LISTED_MAX: i64 = 10;
/// Dead jobs alerted on one by one, per evaluation, at most.
const DEAD_JOBS_MAX: i64 = 500;

/// What a rule found, and whether that is everything (a capped list is not: conditions
/// beyond the cap must not be taken as cleared).
#[derive(Debug)]
pub struct Evaluation {
    pub findings: Vec<Finding>,
    pub complete: bool,
}

pub async fn evaluate(
    db: &Db,
    ledger: Option<&ledger::Ledger>,
    rule: &Rule,
) -> Result<Evaluation, RuleError> {
    let findings = measure(db, ledger, rule).await?;
    let complete = !(rule.kind == RuleKind::JobDead && findings.len() >= DEAD_JOBS_MAX_USIZE);
    Ok(Evaluation { findings, complete })
}

const DEAD_JOBS_MAX_USIZE: usize = DEAD_JOBS_MAX as usize;

async fn measure(
    db: &Db,
    ledger: Option<&ledger::Ledger>,
    rule: &Rule,
) -> Result<Vec<Finding>, RuleError> {
    let now = Utc::now();
    let since = rule
        .window
        .and_then(|w| chrono::Duration::from_std(w).ok())
        .map(|w| now - w);
    match rule.kind {
        RuleKind::ErrorQueue => error_queue(db, rule).await,
        RuleKind::JobDead => jobs_dead(db, since).await,
        RuleKind::SyncLag => sync_lag(db, rule).await,
        RuleKind::CursorStale => cursors_stale(db, rule, now).await,
        RuleKind::ReconcileExceptions => reconcile_exceptions(db, rule).await,
        RuleKind::WebhookFailures => webhook_failures(db, rule, since).await,
        RuleKind::ChainVerification => match ledger {
            Some(l) => chain(l).await,
            None => Ok(Vec::new()),
        },
    }
}

fn job_line(j: &sync::jobs::JobRecord) -> String {
    format!(
        "job {} ({}), {} attempt(s), {} error: {}",
        j.id,
        j.kind,
        j.attempts,
        j.last_error_kind.as_deref().unwrap_or("unknown"),
        scrub(&cut(j.last_error.as_deref().unwrap_or("(none)"), 300))
    )
}

async fn error_queue(db: &Db, rule: &Rule) -> Result<Vec<Finding>, RuleError> {
    let jobs = sync::jobs::Jobs::new(db.clone());
    let dead = jobs
        .status()
        .await?
        .by_status
        .get("dead")
        .copied()
        .unwrap_or(0);
    if dead <= rule.threshold {
        return Ok(Vec::new());
    }
    let mut details = vec![format!(
        "{dead} sync jobs are in the error queue (threshold {}). The newest:",
        rule.threshold
    )];
    for j in jobs.list(Some("dead"), LISTED_MAX).await? {
        details.push(format!("- {}", job_line(&j)));
    }
    details
        .push("List them with `cashloop sync jobs --status dead`; retry or resolve each.".into());
    Ok(vec![Finding {
        subject: "queue".into(),
        title: format!("Error queue: {dead} dead sync jobs"),
        details,
    }])
}

async fn jobs_dead(db: &Db, since: Option<DateTime<Utc>>) -> Result<Vec<Finding>, RuleError> {
    let jobs = sync::jobs::Jobs::new(db.clone());
    Ok(jobs
        .list(Some("dead"), DEAD_JOBS_MAX)
        .await?
        .into_iter()
        .filter(|j| since.is_none_or(|s| j.updated_at >= s))
        .map(|j| Finding {
            subject: format!("job:{}", j.id),
            title: format!("Sync job {} ({}) is dead", j.id, j.kind),
            details: vec![
                job_line(&j),
                format!(
                    "Queued {}, gave up {}.",
                    j.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    j.updated_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                format!(
                    "Retry it (`cashloop sync retry {}`) or resolve it with a note.",
                    j.id
                ),
            ],
        })
        .collect())
}

async fn sync_lag(db: &Db, rule: &Rule) -> Result<Vec<Finding>, RuleError> {
    let status = sync::jobs::Jobs::new(db.clone()).status().await?;
    let Some(age) = status.oldest_pending_age_s.filter(|a| *a > rule.threshold) else {
        return Ok(Vec::new());
    };
    let pending = status.by_status.get("pending").copied().unwrap_or(0);
    Ok(vec![Finding {
        subject: "queue".into(),
        title: format!("Sync lag: the oldest due job has waited {age} s"),
        details: vec![format!(
            "{pending} jobs pending; the oldest due one has waited {age} s (threshold {} s). Is a worker running, or is a connector failing?",
            rule.threshold
        )],
    }])
}

async fn cursors_stale(
    db: &Db,
    rule: &Rule,
    now: DateTime<Utc>,
) -> Result<Vec<Finding>, RuleError> {
    let cutoff = now - chrono::Duration::seconds(rule.threshold);
    let rows: Vec<(String, String)> = match db {
        Db::Postgres(p) => sqlx::query_as(
            "SELECT system, object FROM sync_cursors WHERE updated_at < $1 ORDER BY system, object",
        )
        .bind(cutoff)
        .fetch_all(p)
        .await?,
        Db::Sqlite(s) => sqlx::query_as(
            "SELECT system, object FROM sync_cursors WHERE updated_at < ?1 ORDER BY system, object",
        )
        .bind(db::sqlite_ts(cutoff))
        .fetch_all(&s.pool)
        .await?,
    };
    Ok(rows
        .into_iter()
        .map(|(system, object)| Finding {
            subject: format!("cursor:{system}/{object}"),
            title: format!("Sync cursor {system}/{object} has not advanced"),
            details: vec![format!(
                "The {system} cursor for {object} has not moved for more than {} s. Either nothing changed, or the pull is failing.",
                rule.threshold
            )],
        })
        .collect())
}

async fn reconcile_exceptions(db: &Db, rule: &Rule) -> Result<Vec<Finding>, RuleError> {
    const LATEST: &str = "SELECT id, period, entity FROM recon_runs ORDER BY id DESC LIMIT 1";
    const COUNTS: &str = "SELECT category, COUNT(*) FROM recon_results WHERE run_id = $1 AND category <> 'matched' GROUP BY category ORDER BY category";
    let latest: Option<(i64, String, String)> = match db {
        Db::Postgres(p) => sqlx::query_as(LATEST).fetch_optional(p).await?,
        Db::Sqlite(s) => sqlx::query_as(LATEST).fetch_optional(&s.pool).await?,
    };
    let Some((run, period, entity)) = latest else {
        return Ok(Vec::new());
    };
    let counts: Vec<(String, i64)> = match db {
        Db::Postgres(p) => sqlx::query_as(COUNTS).bind(run).fetch_all(p).await?,
        Db::Sqlite(s) => {
            sqlx::query_as(sqlx::AssertSqlSafe(COUNTS.replace('$', "?")))
                .bind(run)
                .fetch_all(&s.pool)
                .await?
        }
    };
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    if total <= rule.threshold {
        return Ok(Vec::new());
    }
    let scope = if entity.is_empty() {
        period.clone()
    } else {
        format!("{period} / {entity}")
    };
    let mut details = vec![format!(
        "Reconciliation run {run} ({scope}) has {total} exceptions (threshold {}):",
        rule.threshold
    )];
    details.extend(counts.iter().map(|(c, n)| format!("- {c}: {n}")));
    details.push(format!(
        "Review them with `cashloop reconcile report {run}`."
    ));
    Ok(vec![Finding {
        subject: format!("run:{run}"),
        title: format!("Reconciliation run {run} ({scope}): {total} exceptions"),
        details,
    }])
}

async fn webhook_failures(
    db: &Db,
    rule: &Rule,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Finding>, RuleError> {
    // Given up (`failed`) or being retried after a failure (pending with attempts).
    let rows: Vec<(String, i64, i64, Option<i64>)> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(
                "SELECT subscriber, COUNT(*), SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END)::BIGINT, MAX(last_status) \
                 FROM webhook_outbox WHERE (status = 'failed' OR (status = 'pending' AND attempts > 0)) \
                 AND ($1::TIMESTAMPTZ IS NULL OR created_at >= $1) GROUP BY subscriber ORDER BY subscriber",
            )
            .bind(since)
            .fetch_all(p)
            .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(
                "SELECT subscriber, COUNT(*), SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), MAX(last_status) \
                 FROM webhook_outbox WHERE (status = 'failed' OR (status = 'pending' AND attempts > 0)) \
                 AND (?1 IS NULL OR created_at >= ?1) GROUP BY subscriber ORDER BY subscriber",
            )
            .bind(since.map(db::sqlite_ts))
            .fetch_all(&s.pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .filter(|(_, n, _, _)| *n > rule.threshold)
        .map(|(subscriber, n, failed, last_status)| Finding {
            subject: format!("subscriber:{subscriber}"),
            title: format!("Webhook deliveries to {subscriber} are failing ({n})"),
            details: vec![
                format!(
                    "{n} deliveries to {subscriber} failed (threshold {}): {failed} given up, {} being retried.",
                    rule.threshold,
                    n - failed
                ),
                match last_status {
                    Some(s) => format!("Highest HTTP status answered: {s}."),
                    None => "No HTTP answer (connection or timeout errors).".into(),
                },
            ],
        })
        .collect())
}

async fn chain(ledger: &ledger::Ledger) -> Result<Vec<Finding>, RuleError> {
    let report = ledger.verify(&|_| {}).await?;
    if report.ok() {
        return Ok(Vec::new());
    }
    let mut details = vec![format!(
        "Ledger verification found {} problem(s) in {} entries.",
        report.problems, report.entries
    )];
    if let Some(b) = &report.first_break {
        details.push(format!(
            "First break: seq {:?}, entry {:?}: {}",
            b.seq,
            b.entry_id,
            cut(&b.reason, 300)
        ));
    }
    details.push("Run `cashloop ledger verify` for the full report.".into());
    Ok(vec![Finding {
        subject: "chain".into(),
        title: "Ledger chain verification failed".into(),
        details,
    }])
}
