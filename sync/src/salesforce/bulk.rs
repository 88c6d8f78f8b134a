//! Bulk API 2.0 on [`SalesforceClient`]: ingest jobs (create → PUT CSV → `UploadComplete` →
//! poll → `successfulResults` / `failedResults`) and query jobs (create → poll → results CSV
//! paged by `Sforce-Locator` until it is the string `null`). CSV is RFC 4180 with LF line
//! endings: values holding commas, quotes or newlines are quoted and round-trip.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;

use super::client::{Body, SalesforceClient, encode_path_segment};
use super::error::SalesforceError;
use super::wire::{JobInfo, Record, Value};

/// Salesforce's cap on one ingest upload (150 MB base64-encoded ≈ 100 MB raw).
pub const INGEST_UPLOAD_MAX_BYTES: usize = 100 * 1024 * 1024;

/// What an ingest job does with its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkOperation {
    Insert,
    Update,
    Upsert,
    Delete,
    HardDelete,
}

impl BulkOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkOperation::Insert => "insert",
            BulkOperation::Update => "update",
            BulkOperation::Upsert => "upsert",
            BulkOperation::Delete => "delete",
            BulkOperation::HardDelete => "hardDelete",
        }
    }
}

/// A table to upload: column names, then rows of the same width. An empty cell leaves the
/// field alone; `#N/A` sets it to null (Bulk API convention).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CsvTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl CsvTable {
    /// A table from records: `columns` in order, each value rendered as Bulk CSV text
    /// (numbers exact, booleans `true`/`false`, null as `#N/A`, missing as empty).
    pub fn from_records(columns: &[&str], records: &[Record]) -> CsvTable {
        CsvTable {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: records
                .iter()
                .map(|r| {
                    columns
                        .iter()
                        .map(|c| match r.get(c) {
                            None => String::new(),
                            Some(v) => csv_text(v),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    pub fn to_csv(&self) -> Result<Vec<u8>, SalesforceError> {
        write_csv(&self.columns, &self.rows)
    }

    /// Parses CSV with a header row.
    pub fn parse(bytes: &[u8]) -> Result<CsvTable, csv::Error> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let columns = reader.headers()?.iter().map(str::to_owned).collect();
        let mut rows = Vec::new();
        for row in reader.records() {
            rows.push(row?.iter().map(str::to_owned).collect());
        }
        Ok(CsvTable { columns, rows })
    }

    /// Each row as a map from column name to cell.
    pub fn maps(&self) -> Vec<BTreeMap<String, String>> {
        self.rows
            .iter()
            .map(|row| {
                self.columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect()
            })
            .collect()
    }
}

/// A value as Bulk CSV text.
pub fn csv_text(v: &Value) -> String {
    match v {
        Value::Null => "#N/A".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(d) => d.normalize().to_string(),
        Value::Text(s) => s.clone(),
        Value::Record(_) | Value::Json(_) => String::new(),
    }
}

/// CSV with LF line endings, quoting only where needed.
pub fn write_csv(columns: &[String], rows: &[Vec<String>]) -> Result<Vec<u8>, SalesforceError> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let err = |e: csv::Error| SalesforceError::Invalid(format!("csv: {e}"));
    w.write_record(columns).map_err(err)?;
    for row in rows {
        if row.len() != columns.len() {
            return Err(SalesforceError::Invalid(format!(
                "csv row has {} cells for {} columns",
                row.len(),
                columns.len()
            )));
        }
        w.write_record(row).map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| SalesforceError::Invalid(format!("csv: {e}")))
}

/// A row of `successfulResults`: the record id, whether it was created, and the input cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkSuccess {
    pub id: String,
    pub created: bool,
    pub fields: BTreeMap<String, String>,
}

/// A row of `failedResults`: the id if any, Salesforce's `sf__Error`
/// (`CODE:message:fields --`) and the input cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkFailure {
    pub id: Option<String>,
    pub error: String,
    pub fields: BTreeMap<String, String>,
}

/// A finished ingest job.
#[derive(Clone, Debug)]
pub struct IngestOutcome {
    pub job: JobInfo,
    pub successful: Vec<BulkSuccess>,
    pub failed: Vec<BulkFailure>,
}

/// A finished query job's rows, and how many result pages (locator calls) it took.
#[derive(Clone, Debug)]
pub struct QueryOutcome {
    pub job: JobInfo,
    pub table: CsvTable,
    pub pages: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateIngest<'a> {
    object: &'a str,
    operation: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id_field_name: Option<&'a str>,
    content_type: &'a str,
    line_ending: &'a str,
    column_delimiter: &'a str,
}

#[derive(Serialize)]
struct CreateQuery<'a> {
    operation: &'a str,
    query: &'a str,
}

impl SalesforceClient {
    fn jobs_path(&self, kind: &str) -> String {
        format!("{}/jobs/{kind}", self.data_path())
    }

    async fn bulk_json<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        value: &T,
    ) -> Result<JobInfo, SalesforceError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| SalesforceError::Invalid(format!("request body: {e}")))?;
        self.send("bulk", method, path, Body::Json(body), &[])
            .await?
            .check()?
            .json()
    }

    /// Runs one ingest job to its end and reads its results.
    pub async fn bulk_ingest(
        &self,
        object: &str,
        operation: BulkOperation,
        external_id_field: Option<&str>,
        table: &CsvTable,
    ) -> Result<IngestOutcome, SalesforceError> {
        let csv = table.to_csv()?;
        if csv.len() > INGEST_UPLOAD_MAX_BYTES {
            return Err(SalesforceError::Invalid(format!(
                "ingest upload of {} bytes exceeds {INGEST_UPLOAD_MAX_BYTES}: split the rows",
                csv.len()
            )));
        }
        if operation == BulkOperation::Upsert && external_id_field.is_none() {
            return Err(SalesforceError::Invalid(
                "upsert needs an external id field".into(),
            ));
        }
        let base = self.jobs_path("ingest");
        let job = self
            .bulk_json(
                Method::POST,
                &base,
                &CreateIngest {
                    object,
                    operation: operation.as_str(),
                    external_id_field_name: external_id_field,
                    content_type: "CSV",
                    line_ending: "LF",
                    column_delimiter: "COMMA",
                },
            )
            .await?;
        let job_path = format!("{base}/{}", encode_path_segment(&job.id));
        self.send(
            "bulk",
            Method::PUT,
            &format!("{job_path}/batches"),
            Body::Csv(csv),
            &[],
        )
        .await?
        .check()?;
        self.bulk_json(
            Method::PATCH,
            &job_path,
            &serde_json::json!({"state": "UploadComplete"}),
        )
        .await?;
        let job = self.bulk_wait(&job_path).await?;
        if job.state != "JobComplete" {
            return Err(SalesforceError::BulkJob {
                job_id: job.id,
                state: job.state,
                message: job.error_message.unwrap_or_default(),
            });
        }
        let ok = self
            .bulk_csv(&format!("{job_path}/successfulResults/"))
            .await?;
        let failed = self.bulk_csv(&format!("{job_path}/failedResults/")).await?;
        let successful = ok
            .maps()
            .into_iter()
            .map(|mut m| BulkSuccess {
                id: m.remove("sf__Id").unwrap_or_default(),
                created: m.remove("sf__Created").is_some_and(|c| c == "true"),
                fields: m,
            })
            .collect();
        let failed = failed
            .maps()
            .into_iter()
            .map(|mut m| BulkFailure {
                id: m.remove("sf__Id").filter(|s| !s.is_empty()),
                error: m.remove("sf__Error").unwrap_or_default(),
                fields: m,
            })
            .collect();
        Ok(IngestOutcome {
            job,
            successful,
            failed,
        })
    }

    /// Runs a query job (`query`, or `queryAll` with `include_deleted`) and reads every
    /// result page, `max_records` rows at a time.
    pub async fn bulk_query(
        &self,
        soql: &str,
        include_deleted: bool,
        max_records: u32,
    ) -> Result<QueryOutcome, SalesforceError> {
        let base = self.jobs_path("query");
        let job = self
            .bulk_json(
                Method::POST,
                &base,
                &CreateQuery {
                    operation: if include_deleted { "queryAll" } else { "query" },
                    query: soql,
                },
            )
            .await?;
        let job_path = format!("{base}/{}", encode_path_segment(&job.id));
        let job = self.bulk_wait(&job_path).await?;
        if job.state != "JobComplete" {
            return Err(SalesforceError::BulkJob {
                job_id: job.id,
                state: job.state,
                message: job.error_message.unwrap_or_default(),
            });
        }
        let mut table = CsvTable::default();
        let mut locator: Option<String> = None;
        let mut pages = 0u32;
        loop {
            let mut path = format!("{job_path}/results?maxRecords={max_records}");
            if let Some(l) = &locator {
                path.push_str("&locator=");
                path.push_str(&encode_path_segment(l));
            }
            let answer = self
                .send("bulk", Method::GET, &path, Body::Empty, &[])
                .await?
                .check()?;
            pages += 1;
            let page = CsvTable::parse(&answer.body).map_err(|e| answer.malformed(e))?;
            if table.columns.is_empty() {
                table.columns = page.columns;
            }
            table.rows.extend(page.rows);
            let next = answer
                .headers
                .get("Sforce-Locator")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match next {
                Some(l) if l != "null" && !l.is_empty() => locator = Some(l),
                Some(_) => break,
                None => return Err(answer.malformed("no Sforce-Locator header")),
            }
        }
        Ok(QueryOutcome { job, table, pages })
    }

    async fn bulk_wait(&self, job_path: &str) -> Result<JobInfo, SalesforceError> {
        let config = self.config();
        let deadline = Instant::now() + Duration::from_millis(config.bulk_timeout_ms);
        loop {
            let job: JobInfo = self
                .send("bulk", Method::GET, job_path, Body::Empty, &[])
                .await?
                .check()?
                .json()?;
            if matches!(job.state.as_str(), "JobComplete" | "Failed" | "Aborted") {
                return Ok(job);
            }
            if Instant::now() >= deadline {
                return Err(SalesforceError::BulkJob {
                    job_id: job.id,
                    state: job.state,
                    message: format!("not finished after {} ms", config.bulk_timeout_ms),
                });
            }
            tokio::time::sleep(Duration::from_millis(config.bulk_poll_interval_ms)).await;
        }
    }

    async fn bulk_csv(&self, path: &str) -> Result<CsvTable, SalesforceError> {
        let answer = self
            .send("bulk", Method::GET, path, Body::Empty, &[])
            .await?
            .check()?;
        if answer.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(CsvTable::default());
        }
        CsvTable::parse(&answer.body).map_err(|e| answer.malformed(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip() {
        let table = CsvTable {
            columns: vec!["Name".into(), "Description".into()],
            rows: vec![
                vec!["Acme, Inc.".into(), "says \"hi\"\nand more".into()],
                vec!["Plain".into(), String::new()],
            ],
        };
        let bytes = table.to_csv().unwrap();
        assert_eq!(CsvTable::parse(&bytes).unwrap(), table);
    }
}
