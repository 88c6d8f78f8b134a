//! The review queue (`sync_review`): what a person must decide — a conflict (both sides changed
//! a field since the last sync), or an ambiguous match (an upsert that matched several
//! records). The engine never picks; it parks the item here and moves on. Resolving is audited.
//!
//! [`conflicts`] is the pure rule that finds conflicts, from the values last synced and each
//! side's current values.

use std::collections::BTreeMap;

use chrono::Utc;
use db::Db;
use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReviewItem {
    pub id: i64,
    /// `conflict`, `multiple_match` or `other`.
    pub kind: String,
    pub object: String,
    pub record_key: String,
    pub detail: Value,
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
}

/// A field both sides changed to different values since the last sync.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    pub field: String,
    pub last: Value,
    pub salesforce: Value,
    pub sage: Value,
}

/// Fields of `fields` that both sides changed since `last` and that now differ. A field only
/// one side changed is not a conflict (that side's value wins by system-of-record rules), nor
/// is a change both sides made the same way.
pub fn conflicts(
    fields: &[&str],
    last: &BTreeMap<String, Value>,
    salesforce: &BTreeMap<String, Value>,
    sage: &BTreeMap<String, Value>,
) -> Vec<Conflict> {
    let get = |m: &BTreeMap<String, Value>, f: &str| m.get(f).cloned().unwrap_or(Value::Null);
    fields
        .iter()
        .filter_map(|f| {
            let (l, a, b) = (get(last, f), get(salesforce, f), get(sage, f));
            (a != l && b != l && a != b).then(|| Conflict {
                field: (*f).to_owned(),
                last: l,
                salesforce: a,
                sage: b,
            })
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Review {
    db: Db,
}

use db::sqlite_ts as ts;

type Row = (
    i64,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn item(r: Row) -> ReviewItem {
    ReviewItem {
        id: r.0,
        kind: r.1,
        object: r.2,
        record_key: r.3,
        detail: serde_json::from_str(&r.4).unwrap_or(Value::String(r.4)),
        status: r.5,
        resolution: r.6,
        resolved_by: r.7,
    }
}

const COLUMNS: &str = "id, kind, object, record_key, detail, status, resolution, resolved_by";

impl Review {
    pub fn new(db: Db) -> Review {
        Review { db }
    }

    /// Parks an item for a person; returns its id.
    pub async fn open(
        &self,
        kind: &str,
        object: &str,
        record_key: &str,
        detail: &Value,
    ) -> Result<i64, sqlx::Error> {
        let now = Utc::now();
        let detail = detail.to_string();
        match &self.db {
            Db::Postgres(p) => sqlx::query_scalar(
                "INSERT INTO sync_review (kind, object, record_key, detail, status, created_at) VALUES ($1, $2, $3, $4, 'open', $5) RETURNING id",
            )
            .bind(kind)
            .bind(object)
            .bind(record_key)
            .bind(&detail)
            .bind(now)
            .fetch_one(p)
            .await,
            Db::Sqlite(s) => sqlx::query_scalar(
                "INSERT INTO sync_review (kind, object, record_key, detail, status, created_at) VALUES (?, ?, ?, ?, 'open', ?) RETURNING id",
            )
            .bind(kind)
            .bind(object)
            .bind(record_key)
            .bind(&detail)
            .bind(ts(now))
            .fetch_one(&s.pool)
            .await,
        }
    }

    /// Open items, oldest first.
    pub async fn open_items(&self, limit: i64) -> Result<Vec<ReviewItem>, sqlx::Error> {
        let rows: Vec<Row> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_review WHERE status = 'open' ORDER BY created_at, id LIMIT $1"
                )))
                .bind(limit)
                .fetch_all(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_review WHERE status = 'open' ORDER BY created_at, id LIMIT ?"
                )))
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(item).collect())
    }

    /// Closes an open item with the decision taken; audited. `Ok(false)`: not open.
    pub async fn resolve(
        &self,
        id: i64,
        actor: &str,
        resolution: &str,
    ) -> Result<bool, db::DbError> {
        let now = Utc::now();
        let mut tx = self.db.begin().await?;
        let n = match &mut tx {
            db::DbTx::Postgres(t) => sqlx::query(
                "UPDATE sync_review SET status = 'resolved', resolution = $1, resolved_by = $2, resolved_at = $3 WHERE id = $4 AND status = 'open'",
            )
            .bind(resolution)
            .bind(actor)
            .bind(now)
            .bind(id)
            .execute(&mut **t)
            .await?
            .rows_affected(),
            db::DbTx::Sqlite(t) => sqlx::query(
                "UPDATE sync_review SET status = 'resolved', resolution = ?, resolved_by = ?, resolved_at = ? WHERE id = ? AND status = 'open'",
            )
            .bind(resolution)
            .bind(actor)
            .bind(ts(now))
            .bind(id)
            .execute(&mut **t)
            .await?
            .rows_affected(),
        };
        if n == 0 {
            return Ok(false);
        }
        db::audit::record_in(
            &mut tx,
            db::audit::AuditRecord {
                at: now,
                actor,
                action: "sync.review.resolve",
                subject: &format!("review {id}"),
                detail: resolution,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn only_fields_both_sides_changed_differently_conflict() {
        let last = m(&[
            ("Name", json!("Acme")),
            ("Phone", json!("1")),
            ("City", json!("Oslo")),
        ]);
        let sf = m(&[
            ("Name", json!("Acme Inc")),
            ("Phone", json!("2")),
            ("City", json!("Oslo")),
        ]);
        let sage = m(&[
            ("Name", json!("ACME Ltd")),
            ("Phone", json!("2")),
            ("City", json!("Bergen")),
        ]);
        let c = conflicts(&["Name", "Phone", "City", "Missing"], &last, &sf, &sage);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "Name");
        assert_eq!(
            (c[0].salesforce.clone(), c[0].sage.clone()),
            (json!("Acme Inc"), json!("ACME Ltd"))
        );
    }
}
