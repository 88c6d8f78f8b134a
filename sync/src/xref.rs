//! The ID cross-reference (`sync_xref`): which Sage record (system, entity, id) a Salesforce
//! record is. Checked before any create, so a retried or replayed flow never makes a second
//! customer or order; it also keeps the field values last synced, for echo suppression and
//! conflict detection.

use chrono::Utc;
use db::Db;
use serde::Serialize;

/// One link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Link {
    /// The Salesforce object (`Account`, `Opportunity`…).
    pub object: String,
    pub salesforce_id: String,
    /// `intacct`, `x3`, `sage100`, `businessworks`.
    pub sage_system: String,
    /// The Sage entity / folder / company the record lives in.
    pub sage_entity: String,
    pub sage_id: String,
    pub last_values: Option<serde_json::Value>,
}

/// What [`Xref::link`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Linked {
    Created,
    /// The same link was there already.
    Existing,
    /// The Salesforce record (or the Sage record) is already linked to another record.
    Conflict(Link),
}

#[derive(Clone, Debug)]
pub struct Xref {
    db: Db,
}

use db::sqlite_ts as ts;

type Row = (String, String, String, String, String, Option<String>);

fn link_of(r: Row) -> Link {
    Link {
        object: r.0,
        salesforce_id: r.1,
        sage_system: r.2,
        sage_entity: r.3,
        sage_id: r.4,
        last_values: r.5.and_then(|v| serde_json::from_str(&v).ok()),
    }
}

const COLUMNS: &str = "object, salesforce_id, sage_system, sage_entity, sage_id, last_values";

impl Xref {
    pub fn new(db: Db) -> Xref {
        Xref { db }
    }

    /// Records a link; never overwrites a different one (that is a conflict for a person).
    pub async fn link(&self, l: &Link) -> Result<Linked, sqlx::Error> {
        let now = Utc::now();
        let values = l.last_values.as_ref().map(|v| v.to_string());
        let inserted = match &self.db {
            Db::Postgres(p) => sqlx::query(
                "INSERT INTO sync_xref (object, salesforce_id, sage_system, sage_entity, sage_id, last_values, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
            )
            .bind(&l.object)
            .bind(&l.salesforce_id)
            .bind(&l.sage_system)
            .bind(&l.sage_entity)
            .bind(&l.sage_id)
            .bind(&values)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected(),
            Db::Sqlite(s) => sqlx::query(
                "INSERT INTO sync_xref (object, salesforce_id, sage_system, sage_entity, sage_id, last_values, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT DO NOTHING",
            )
            .bind(&l.object)
            .bind(&l.salesforce_id)
            .bind(&l.sage_system)
            .bind(&l.sage_entity)
            .bind(&l.sage_id)
            .bind(&values)
            .bind(ts(now))
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        if inserted == 1 {
            return Ok(Linked::Created);
        }
        let by_sf = self
            .by_salesforce(&l.object, &l.salesforce_id, &l.sage_system)
            .await?;
        let existing = match by_sf {
            Some(e) => e,
            None => match self
                .by_sage(&l.sage_system, &l.object, &l.sage_entity, &l.sage_id)
                .await?
            {
                Some(e) => e,
                // Raced with a delete (there are none today): try once more.
                None => return Box::pin(self.link(l)).await,
            },
        };
        if existing.salesforce_id == l.salesforce_id
            && existing.sage_entity == l.sage_entity
            && existing.sage_id == l.sage_id
        {
            Ok(Linked::Existing)
        } else {
            Ok(Linked::Conflict(existing))
        }
    }

    pub async fn by_salesforce(
        &self,
        object: &str,
        salesforce_id: &str,
        sage_system: &str,
    ) -> Result<Option<Link>, sqlx::Error> {
        let row: Option<Row> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE object = $1 AND salesforce_id = $2 AND sage_system = $3"
                )))
                .bind(object)
                .bind(salesforce_id)
                .bind(sage_system)
                .fetch_optional(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE object = ? AND salesforce_id = ? AND sage_system = ?"
                )))
                .bind(object)
                .bind(salesforce_id)
                .bind(sage_system)
                .fetch_optional(&s.pool)
                .await?
            }
        };
        Ok(row.map(link_of))
    }

    pub async fn by_sage(
        &self,
        sage_system: &str,
        object: &str,
        sage_entity: &str,
        sage_id: &str,
    ) -> Result<Option<Link>, sqlx::Error> {
        let row: Option<Row> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE sage_system = $1 AND object = $2 AND sage_entity = $3 AND sage_id = $4"
                )))
                .bind(sage_system)
                .bind(object)
                .bind(sage_entity)
                .bind(sage_id)
                .fetch_optional(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE sage_system = ? AND object = ? AND sage_entity = ? AND sage_id = ?"
                )))
                .bind(sage_system)
                .bind(object)
                .bind(sage_entity)
                .bind(sage_id)
                .fetch_optional(&s.pool)
                .await?
            }
        };
        Ok(row.map(link_of))
    }

    /// The links of one Salesforce object in one Sage system, in Salesforce id order, after
    /// `after` (keyset paging), at most `limit`.
    pub async fn list(
        &self,
        sage_system: &str,
        object: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Link>, sqlx::Error> {
        let rows: Vec<Row> = match &self.db {
            Db::Postgres(p) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE sage_system = $1 AND object = $2 AND salesforce_id > $3 \
                     ORDER BY salesforce_id LIMIT $4"
                )))
                .bind(sage_system)
                .bind(object)
                .bind(after)
                .bind(limit)
                .fetch_all(p)
                .await?
            }
            Db::Sqlite(s) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM sync_xref WHERE sage_system = ? AND object = ? AND salesforce_id > ? \
                     ORDER BY salesforce_id LIMIT ?"
                )))
                .bind(sage_system)
                .bind(object)
                .bind(after)
                .bind(limit)
                .fetch_all(&s.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(link_of).collect())
    }

    /// Stores the field values just synced for a link.
    pub async fn set_last_values(
        &self,
        object: &str,
        salesforce_id: &str,
        sage_system: &str,
        values: &serde_json::Value,
    ) -> Result<bool, sqlx::Error> {
        let now = Utc::now();
        let text = values.to_string();
        let n = match &self.db {
            Db::Postgres(p) => sqlx::query(
                "UPDATE sync_xref SET last_values = $1, updated_at = $2 WHERE object = $3 AND salesforce_id = $4 AND sage_system = $5",
            )
            .bind(&text)
            .bind(now)
            .bind(object)
            .bind(salesforce_id)
            .bind(sage_system)
            .execute(p)
            .await?
            .rows_affected(),
            Db::Sqlite(s) => sqlx::query(
                "UPDATE sync_xref SET last_values = ?, updated_at = ? WHERE object = ? AND salesforce_id = ? AND sage_system = ?",
            )
            .bind(&text)
            .bind(ts(now))
            .bind(object)
            .bind(salesforce_id)
            .bind(sage_system)
            .execute(&s.pool)
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }
}
