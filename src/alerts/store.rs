//! Alert state in the database (`alert_state`, `alert_rate_slots`, `alert_log`; migration
//! 0011). Every statement is written once with `$n` placeholders and run on either backend
//! (SQLite reads them as `?n`); times are epoch milliseconds. The statements that decide who
//! sends — [`claim`], [`take_slot`], [`resolve`] — are single conditional UPDATEs: on
//! PostgreSQL a concurrent UPDATE of the same row waits and re-checks the condition, on SQLite
//! writers are serialised, so exactly one process wins.

use db::Db;

type R<T> = Result<T, sqlx::Error>;

/// `$n` → `?n` for SQLite.
fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}

/// A bound value (the few types these statements use).
#[derive(Clone, Debug)]
enum V<'a> {
    S(&'a str),
    I(i64),
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                V::S(s) => q.bind(*s),
                V::I(i) => q.bind(*i),
            };
        }
        q
    }};
}

async fn exec(db: &Db, sql: &'static str, args: &[V<'_>]) -> R<u64> {
    Ok(match db {
        Db::Postgres(p) => bind_all!(sqlx::query(sql), args)
            .execute(p)
            .await?
            .rows_affected(),
        Db::Sqlite(s) => bind_all!(sqlx::query(sqlx::AssertSqlSafe(sqlite(sql))), args)
            .execute(&s.pool)
            .await?
            .rows_affected(),
    })
}

/// Creates the rule's `max` rate slots (existing ones are kept).
pub async fn ensure_slots(db: &Db, rule: &str, max: u32) -> R<()> {
    for slot in 0..i64::from(max) {
        exec(
            db,
            "INSERT INTO alert_rate_slots (rule, slot, used_ms) VALUES ($1, $2, 0) ON CONFLICT (rule, slot) DO NOTHING",
            &[V::S(rule), V::I(slot)],
        )
        .await?;
    }
    Ok(())
}

/// Records that (rule, subject) fires now. A resolved pair starts firing anew (unnotified).
pub async fn observe(db: &Db, rule: &str, subject: &str, title: &str, now: i64) -> R<()> {
    exec(
        db,
        "INSERT INTO alert_state (rule, subject, status, title, first_seen_ms, last_seen_ms, attempts) \
         VALUES ($1, $2, 'firing', $3, $4, $4, 0) \
         ON CONFLICT (rule, subject) DO UPDATE SET \
           last_seen_ms = excluded.last_seen_ms, \
           title = excluded.title, \
           first_seen_ms = CASE WHEN alert_state.status = 'resolved' THEN excluded.first_seen_ms ELSE alert_state.first_seen_ms END, \
           notified_ms = CASE WHEN alert_state.status = 'resolved' THEN NULL ELSE alert_state.notified_ms END, \
           outcome = CASE WHEN alert_state.status = 'resolved' THEN NULL ELSE alert_state.outcome END, \
           email_sent_ms = CASE WHEN alert_state.status = 'resolved' THEN NULL ELSE alert_state.email_sent_ms END, \
           salesforce_sent_ms = CASE WHEN alert_state.status = 'resolved' THEN NULL ELSE alert_state.salesforce_sent_ms END, \
           attempts = CASE WHEN alert_state.status = 'resolved' THEN 0 ELSE alert_state.attempts END, \
           last_error = CASE WHEN alert_state.status = 'resolved' THEN NULL ELSE alert_state.last_error END, \
           resolved_ms = NULL, \
           status = 'firing'",
        &[V::S(rule), V::S(subject), V::S(title), V::I(now)],
    )
    .await?;
    Ok(())
}

/// Takes the right to send the pair's notice: true for exactly one caller while the pair is
/// firing, unnotified and not claimed by someone else (or their claim expired).
pub async fn claim(db: &Db, rule: &str, subject: &str, me: &str, now: i64, until: i64) -> R<bool> {
    let n = exec(
        db,
        "UPDATE alert_state SET claimed_by = $3, claim_until_ms = $5 \
         WHERE rule = $1 AND subject = $2 AND status = 'firing' AND notified_ms IS NULL \
           AND (claim_until_ms IS NULL OR claim_until_ms < $4)",
        &[V::S(rule), V::S(subject), V::S(me), V::I(now), V::I(until)],
    )
    .await?;
    Ok(n == 1)
}

/// Which channels already have the pair's notice.
#[derive(Clone, Debug, Default)]
pub struct SentChannels {
    pub email_sent_ms: Option<i64>,
    pub salesforce_sent_ms: Option<i64>,
}

pub async fn sent_channels(db: &Db, rule: &str, subject: &str) -> R<SentChannels> {
    const SQL: &str = "SELECT email_sent_ms, salesforce_sent_ms FROM alert_state WHERE rule = $1 AND subject = $2";
    let row: Option<(Option<i64>, Option<i64>)> = match db {
        Db::Postgres(p) => {
            sqlx::query_as(SQL)
                .bind(rule)
                .bind(subject)
                .fetch_optional(p)
                .await?
        }
        Db::Sqlite(s) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sqlite(SQL)))
                .bind(rule)
                .bind(subject)
                .fetch_optional(&s.pool)
                .await?
        }
    };
    let (email_sent_ms, salesforce_sent_ms) = row.unwrap_or_default();
    Ok(SentChannels {
        email_sent_ms,
        salesforce_sent_ms,
    })
}

/// A rate slot taken: which, and the time it held before (to give it back).
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    slot: i64,
    previous_ms: i64,
    used_ms: i64,
}

/// Takes one of the rule's `max` slots unused for an hour, or `None` (rate-limited).
pub async fn take_slot(db: &Db, rule: &str, max: u32, now: i64) -> R<Option<Slot>> {
    const FIND: &str = "SELECT slot, used_ms FROM alert_rate_slots \
         WHERE rule = $1 AND slot < $2 AND used_ms <= $3 ORDER BY used_ms, slot LIMIT 1";
    let cutoff = now - 3_600_000;
    // Each lost race means another process took a slot; at most `max` of those.
    for _ in 0..=max {
        let free: Option<(i64, i64)> = match db {
            Db::Postgres(p) => {
                sqlx::query_as(FIND)
                    .bind(rule)
                    .bind(i64::from(max))
                    .bind(cutoff)
                    .fetch_optional(p)
                    .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(sqlite(FIND)))
                    .bind(rule)
                    .bind(i64::from(max))
                    .bind(cutoff)
                    .fetch_optional(&s.pool)
                    .await?
            }
        };
        let Some((slot, previous_ms)) = free else {
            return Ok(None);
        };
        let n = exec(
            db,
            "UPDATE alert_rate_slots SET used_ms = $4 WHERE rule = $1 AND slot = $2 AND used_ms = $3",
            &[V::S(rule), V::I(slot), V::I(previous_ms), V::I(now)],
        )
        .await?;
        if n == 1 {
            return Ok(Some(Slot {
                slot,
                previous_ms,
                used_ms: now,
            }));
        }
    }
    Ok(None)
}

/// Gives a slot back (nothing was sent with it).
pub async fn release_slot(db: &Db, rule: &str, s: Slot) -> R<()> {
    exec(
        db,
        "UPDATE alert_rate_slots SET used_ms = $3 WHERE rule = $1 AND slot = $2 AND used_ms = $4",
        &[
            V::S(rule),
            V::I(s.slot),
            V::I(s.previous_ms),
            V::I(s.used_ms),
        ],
    )
    .await?;
    Ok(())
}

async fn log(
    db: &Db,
    rule: &str,
    subject: &str,
    event: &str,
    detail: &str,
    me: &str,
    now: i64,
) -> R<()> {
    exec(
        db,
        "INSERT INTO alert_log (rule, subject, event, detail, sender, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        &[V::S(rule), V::S(subject), V::S(event), V::S(detail), V::S(me), V::I(now)],
    )
    .await?;
    Ok(())
}

/// The notice is not sent (rate limit) and will not be while the condition lasts.
pub async fn suppress(db: &Db, rule: &str, subject: &str, me: &str, now: i64) -> R<()> {
    exec(
        db,
        "UPDATE alert_state SET notified_ms = $4, outcome = 'suppressed', claimed_by = NULL, claim_until_ms = NULL \
         WHERE rule = $1 AND subject = $2 AND claimed_by = $3",
        &[V::S(rule), V::S(subject), V::S(me), V::I(now)],
    )
    .await?;
    log(db, rule, subject, "suppressed", "rate limit", me, now).await
}

/// A delivery channel.
#[derive(Clone, Copy, Debug)]
pub enum Channel {
    Email,
    Salesforce,
}

pub async fn mark_sent(db: &Db, rule: &str, subject: &str, channel: Channel, now: i64) -> R<()> {
    let sql = match channel {
        Channel::Email => {
            "UPDATE alert_state SET email_sent_ms = $3 WHERE rule = $1 AND subject = $2"
        }
        Channel::Salesforce => {
            "UPDATE alert_state SET salesforce_sent_ms = $3 WHERE rule = $1 AND subject = $2"
        }
    };
    exec(db, sql, &[V::S(rule), V::S(subject), V::I(now)]).await?;
    Ok(())
}

/// Every channel has the notice.
pub async fn finish(db: &Db, rule: &str, subject: &str, me: &str, now: i64) -> R<()> {
    exec(
        db,
        "UPDATE alert_state SET notified_ms = $4, outcome = 'sent', last_error = NULL, claimed_by = NULL, claim_until_ms = NULL \
         WHERE rule = $1 AND subject = $2 AND claimed_by = $3",
        &[V::S(rule), V::S(subject), V::S(me), V::I(now)],
    )
    .await?;
    log(db, rule, subject, "sent", "", me, now).await
}

/// A channel failed: the claim is released and the next evaluation tries again.
pub async fn fail(db: &Db, rule: &str, subject: &str, me: &str, error: &str, now: i64) -> R<()> {
    let error = super::cut(error, 1_000);
    exec(
        db,
        "UPDATE alert_state SET attempts = attempts + 1, last_error = $4, claimed_by = NULL, claim_until_ms = NULL \
         WHERE rule = $1 AND subject = $2 AND claimed_by = $3",
        &[V::S(rule), V::S(subject), V::S(me), V::S(&error)],
    )
    .await?;
    log(db, rule, subject, "failed", &error, me, now).await
}

/// The rule's firing pairs: (subject, title, outcome).
pub async fn firing(db: &Db, rule: &str) -> R<Vec<(String, String, Option<String>)>> {
    const SQL: &str = "SELECT subject, title, outcome FROM alert_state WHERE rule = $1 AND status = 'firing' ORDER BY subject";
    match db {
        Db::Postgres(p) => sqlx::query_as(SQL).bind(rule).fetch_all(p).await,
        Db::Sqlite(s) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sqlite(SQL)))
                .bind(rule)
                .fetch_all(&s.pool)
                .await
        }
    }
}

/// The condition cleared: true for the one caller that moved the pair to `resolved`.
pub async fn resolve(db: &Db, rule: &str, subject: &str, me: &str, now: i64) -> R<bool> {
    let n = exec(
        db,
        "UPDATE alert_state SET status = 'resolved', resolved_ms = $3, claimed_by = NULL, claim_until_ms = NULL \
         WHERE rule = $1 AND subject = $2 AND status = 'firing'",
        &[V::S(rule), V::S(subject), V::I(now)],
    )
    .await?;
    if n == 1 {
        log(db, rule, subject, "resolved", "", me, now).await?;
    }
    Ok(n == 1)
}
