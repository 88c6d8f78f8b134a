//! Change-capture cursors (`sync_cursors`): per (system, object) the last (modified timestamp,
//! id) whose changes are committed. A pull starts a little before it (the look-back: a record
//! committed late with an earlier timestamp is still seen; reading it again is harmless because
//! every write is idempotent) and the cursor moves only forward, only after the writes commit.

use chrono::{DateTime, Utc};
use db::{Db, DbTx};

/// A position in a system's change stream: order by (modified_at, id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub modified_at: DateTime<Utc>,
    pub last_id: String,
}

#[derive(Clone, Debug)]
pub struct Cursors {
    db: Db,
}

use db::sqlite_ts as ts;

impl Cursors {
    pub fn new(db: Db) -> Cursors {
        Cursors { db }
    }

    pub async fn get(&self, system: &str, object: &str) -> Result<Option<Position>, sqlx::Error> {
        Ok(match &self.db {
            Db::Postgres(p) => sqlx::query_as::<_, (DateTime<Utc>, String)>(
                "SELECT modified_at, last_id FROM sync_cursors WHERE system = $1 AND object = $2",
            )
            .bind(system)
            .bind(object)
            .fetch_optional(p)
            .await?
            .map(|(modified_at, last_id)| Position {
                modified_at,
                last_id,
            }),
            Db::Sqlite(s) => sqlx::query_as::<_, (String, String)>(
                "SELECT modified_at, last_id FROM sync_cursors WHERE system = ? AND object = ?",
            )
            .bind(system)
            .bind(object)
            .fetch_optional(&s.pool)
            .await?
            .and_then(|(t, last_id)| {
                DateTime::parse_from_rfc3339(&t).ok().map(|d| Position {
                    modified_at: d.with_timezone(&Utc),
                    last_id,
                })
            }),
        })
    }

    /// Where the next pull starts: the stored timestamp minus `look_back`; `None` for a first
    /// (full) pull.
    pub async fn since(
        &self,
        system: &str,
        object: &str,
        look_back: chrono::Duration,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(self
            .get(system, object)
            .await?
            .map(|p| p.modified_at - look_back))
    }

    /// Moves the cursor to `to` if that is ahead of where it is, in the caller's transaction
    /// (so it commits with the writes it covers). Returns whether it moved.
    pub async fn advance_in(
        tx: &mut DbTx,
        system: &str,
        object: &str,
        to: &Position,
    ) -> Result<bool, sqlx::Error> {
        let now = Utc::now();
        let n = match tx {
            DbTx::Postgres(t) => sqlx::query(
                "INSERT INTO sync_cursors (system, object, modified_at, last_id, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (system, object) DO UPDATE SET modified_at = excluded.modified_at, last_id = excluded.last_id, updated_at = excluded.updated_at \
                 WHERE (sync_cursors.modified_at, sync_cursors.last_id) < (excluded.modified_at, excluded.last_id)",
            )
            .bind(system)
            .bind(object)
            .bind(to.modified_at)
            .bind(&to.last_id)
            .bind(now)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            DbTx::Sqlite(t) => sqlx::query(
                "INSERT INTO sync_cursors (system, object, modified_at, last_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (system, object) DO UPDATE SET modified_at = excluded.modified_at, last_id = excluded.last_id, updated_at = excluded.updated_at \
                 WHERE (sync_cursors.modified_at, sync_cursors.last_id) < (excluded.modified_at, excluded.last_id)",
            )
            .bind(system)
            .bind(object)
            .bind(ts(to.modified_at))
            .bind(&to.last_id)
            .bind(ts(now))
            .execute(&mut **t)
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    /// [`Cursors::advance_in`] in a transaction of its own, for writes that went to another
    /// system (call it only after they succeeded).
    pub async fn advance(
        &self,
        system: &str,
        object: &str,
        to: &Position,
    ) -> Result<bool, db::DbError> {
        let mut tx = self.db.begin().await?;
        let moved = Cursors::advance_in(&mut tx, system, object, to).await?;
        tx.commit().await?;
        Ok(moved)
    }
}
