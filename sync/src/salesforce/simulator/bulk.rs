//! Bulk API 2.0 in the simulator: `/jobs/ingest` and `/jobs/query`.
//!
//! Ingest rows are applied at `UploadComplete` through the same write rules as the REST API;
//! the first poll after that answers `InProgress`, the next `JobComplete`, so clients
//! exercise their poll loop. Query jobs run at creation; results are paged by `maxRecords`,
//! the locator being the base64 of the next row offset (as Salesforce's look), `null` at
//! the end.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::org::Upsert;
use super::schema::FieldType;
use super::{Shared, State, error, errors, json_response};
use crate::salesforce::bulk::{CsvTable, csv_text, write_csv};
use crate::salesforce::soql::format_datetime;
use crate::salesforce::wire::{ApiError, JobInfo, Value};

/// Rows returned per results page when `maxRecords` is absent.
const DEFAULT_MAX_RECORDS: usize = 50_000;

pub(crate) struct Job {
    info: JobInfo,
    upload: Option<Vec<u8>>,
    polls_left_in_progress: u32,
    successful: CsvTable,
    failed: CsvTable,
    results: CsvTable,
}

fn csv_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/csv")], bytes).into_response()
}

pub(crate) fn route(
    shared: &Shared,
    state: &mut State,
    method: &Method,
    segs: &[&str],
    params: &HashMap<String, String>,
    body: &Bytes,
) -> Response {
    match (method.clone(), segs) {
        (Method::POST, ["ingest"]) => create_ingest(shared, state, body),
        (Method::POST, ["query"]) => create_query(shared, state, body),
        (Method::GET, [kind @ ("ingest" | "query"), id]) => match state.jobs.get_mut(*id) {
            Some(job) if job_kind(job) == *kind => {
                if job.info.state == "InProgress" {
                    if job.polls_left_in_progress == 0 {
                        job.info.state = "JobComplete".into();
                    } else {
                        job.polls_left_in_progress -= 1;
                    }
                }
                json_response(200, &job.info)
            }
            _ => not_found(),
        },
        (Method::PATCH, ["ingest", id]) => {
            let state_req: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let wanted = state_req
                .get("state")
                .and_then(|s| s.as_str())
                .unwrap_or("");
            let user = shared.config.api_user_id.clone();
            let Some(job) = state.jobs.get_mut(*id) else {
                return not_found();
            };
            match (job.info.state.as_str(), wanted) {
                ("Open", "UploadComplete") => {
                    let upload = job.upload.take().unwrap_or_default();
                    let info = job.info.clone();
                    let (ok, failed) = process(state, &info, &upload, &user);
                    let job = state.jobs.get_mut(*id).expect("job exists");
                    job.info.number_records_processed =
                        Some((ok.rows.len() + failed.rows.len()) as u64);
                    job.info.number_records_failed = Some(failed.rows.len() as u64);
                    job.info.state = "InProgress".into();
                    job.polls_left_in_progress = 1;
                    job.successful = ok;
                    job.failed = failed;
                    let mut answer = job.info.clone();
                    answer.state = "UploadComplete".into();
                    json_response(200, &answer)
                }
                ("Open", "Aborted") => {
                    job.info.state = "Aborted".into();
                    json_response(200, &job.info)
                }
                _ => error(
                    400,
                    "INVALIDJOBSTATE",
                    &format!(
                        "Invalid state transition from {} to {wanted}",
                        job.info.state
                    ),
                ),
            }
        }
        (Method::PUT, ["ingest", id, "batches"]) => match state.jobs.get_mut(*id) {
            Some(job) if job.info.state == "Open" && job.upload.is_none() => {
                job.upload = Some(body.to_vec());
                StatusCode::CREATED.into_response()
            }
            Some(_) => error(
                409,
                "INVALIDJOBSTATE",
                "Data can only be uploaded once, to an Open job",
            ),
            None => not_found(),
        },
        (
            Method::GET,
            [
                "ingest",
                id,
                which @ ("successfulResults" | "failedResults"),
            ],
        ) => match state.jobs.get(*id) {
            Some(job) if job.info.state == "JobComplete" => {
                let t = if *which == "successfulResults" {
                    &job.successful
                } else {
                    &job.failed
                };
                match write_csv(&t.columns, &t.rows) {
                    Ok(b) => csv_response(StatusCode::OK, b),
                    Err(e) => error(500, "UNKNOWN_EXCEPTION", &e.to_string()),
                }
            }
            Some(_) => error(400, "INVALIDJOBSTATE", "Job is not complete"),
            None => not_found(),
        },
        (Method::GET, ["query", id, "results"]) => {
            let Some(job) = state.jobs.get(*id) else {
                return not_found();
            };
            if job.info.state != "JobComplete" {
                return error(400, "INVALIDJOBSTATE", "Job is not complete");
            }
            let offset = match params.get("locator") {
                None => 0,
                Some(l) => match STANDARD
                    .decode(l)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    Some(o) => o,
                    None => return error(400, "INVALIDLOCATOR", "Invalid locator"),
                },
            };
            let max = params
                .get("maxRecords")
                .and_then(|m| m.parse::<usize>().ok())
                .filter(|m| *m > 0)
                .unwrap_or(DEFAULT_MAX_RECORDS);
            let total = job.results.rows.len();
            let end = offset.saturating_add(max).min(total);
            let rows = job.results.rows.get(offset..end).unwrap_or_default();
            let bytes = match write_csv(&job.results.columns, rows) {
                Ok(b) => b,
                Err(e) => return error(500, "UNKNOWN_EXCEPTION", &e.to_string()),
            };
            let locator = if end < total {
                STANDARD.encode(end.to_string())
            } else {
                "null".into()
            };
            let mut r = csv_response(StatusCode::OK, bytes);
            if let Ok(v) = HeaderValue::from_str(&locator) {
                r.headers_mut().insert("Sforce-Locator", v);
            }
            r.headers_mut()
                .insert("Sforce-NumberOfRecords", HeaderValue::from(rows.len()));
            r
        }
        _ => not_found(),
    }
}

fn not_found() -> Response {
    error(404, "NOT_FOUND", "The requested resource does not exist")
}

fn job_kind(job: &Job) -> &'static str {
    if job.info.job_type.as_deref() == Some("V2Query") {
        "query"
    } else {
        "ingest"
    }
}

fn new_job(shared: &Shared, state: &mut State, mut info: JobInfo) -> JobInfo {
    info.id = state.org.new_id("750");
    let now = format_datetime(state.org.now());
    info.created_by_id = Some(shared.config.api_user_id.clone());
    info.created_date = Some(now.clone());
    info.system_modstamp = Some(now);
    info.concurrency_mode = Some("Parallel".into());
    info.content_type = Some("CSV".into());
    info.line_ending = Some("LF".into());
    info.column_delimiter = Some("COMMA".into());
    info
}

fn create_ingest(shared: &Shared, state: &mut State, body: &Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Create {
        object: String,
        operation: String,
        external_id_field_name: Option<String>,
        line_ending: Option<String>,
        column_delimiter: Option<String>,
    }
    let c: Create = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return error(400, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let Some(object) = state.org.schema.object(&c.object).map(|o| o.name.clone()) else {
        return error(
            400,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid object name: {}", c.object),
        );
    };
    if !["insert", "update", "upsert", "delete", "hardDelete"].contains(&c.operation.as_str()) {
        return error(
            400,
            "INVALIDJOB",
            &format!("InvalidJob : Invalid operation: {}", c.operation),
        );
    }
    if c.operation == "upsert" && c.external_id_field_name.is_none() {
        return error(
            400,
            "INVALIDJOB",
            "InvalidJob : External ID was blank for upsert",
        );
    }
    if c.column_delimiter.as_deref().is_some_and(|d| d != "COMMA") {
        return error(
            400,
            "INVALIDJOB",
            "InvalidJob : the simulator supports columnDelimiter COMMA only",
        );
    }
    let mut info = new_job(
        shared,
        state,
        JobInfo {
            operation: c.operation,
            object,
            state: "Open".into(),
            external_id_field_name: c.external_id_field_name,
            ..JobInfo::default()
        },
    );
    info.line_ending = Some(c.line_ending.unwrap_or_else(|| "LF".into()));
    info.content_url = Some(format!(
        "services/data/v{}/jobs/ingest/{}/batches",
        shared.config.api_version, info.id
    ));
    state.jobs.insert(
        info.id.clone(),
        Job {
            info: info.clone(),
            upload: None,
            polls_left_in_progress: 0,
            successful: CsvTable::default(),
            failed: CsvTable::default(),
            results: CsvTable::default(),
        },
    );
    json_response(200, &info)
}

fn create_query(shared: &Shared, state: &mut State, body: &Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Create {
        operation: String,
        query: String,
    }
    let c: Create = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => return error(400, "JSON_PARSER_ERROR", &e.to_string()),
    };
    let all = match c.operation.as_str() {
        "query" => false,
        "queryAll" => true,
        other => {
            return error(
                400,
                "INVALIDJOB",
                &format!("InvalidJob : Invalid operation: {other}"),
            );
        }
    };
    let page = match shared.run_query(state, &c.query, all, usize::MAX) {
        Ok(p) => p,
        Err(e) => return errors(400, vec![e]),
    };
    let q = match super::soql::parse(&c.query, &state.org.schema) {
        Ok(q) => q,
        Err(e) => return errors(400, vec![e]),
    };
    let results = CsvTable {
        columns: q.fields.clone(),
        rows: page
            .records
            .iter()
            .map(|r| {
                q.fields
                    .iter()
                    .map(|f| match r.get(f) {
                        None | Some(Value::Null) => String::new(),
                        Some(v) => csv_text(v),
                    })
                    .collect()
            })
            .collect(),
    };
    let mut info = new_job(
        shared,
        state,
        JobInfo {
            operation: c.operation,
            object: q.object.clone(),
            state: "UploadComplete".into(),
            job_type: Some("V2Query".into()),
            ..JobInfo::default()
        },
    );
    info.number_records_processed = Some(results.rows.len() as u64);
    let mut stored = info.clone();
    stored.state = "InProgress".into();
    state.jobs.insert(
        info.id.clone(),
        Job {
            info: stored,
            upload: None,
            polls_left_in_progress: 1,
            successful: CsvTable::default(),
            failed: CsvTable::default(),
            results,
        },
    );
    json_response(200, &info)
}

/// Applies every row; returns (successfulResults, failedResults).
fn process(state: &mut State, info: &JobInfo, upload: &[u8], user: &str) -> (CsvTable, CsvTable) {
    let mut ok = CsvTable::default();
    let mut failed = CsvTable::default();
    let table = match CsvTable::parse(upload) {
        Ok(t) => t,
        Err(e) => {
            failed.columns = vec!["sf__Id".into(), "sf__Error".into()];
            failed
                .rows
                .push(vec![String::new(), format!("INVALID_CSV:{e} --")]);
            return (ok, failed);
        }
    };
    ok.columns = ["sf__Id", "sf__Created"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(table.columns.iter().cloned())
        .collect();
    failed.columns = ["sf__Id", "sf__Error"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(table.columns.iter().cloned())
        .collect();
    let def = state.org.schema.object(&info.object).cloned();
    for row in &table.rows {
        let mut fields: BTreeMap<String, Value> = BTreeMap::new();
        for (col, cell) in table.columns.iter().zip(row) {
            if cell.is_empty() {
                continue;
            }
            let ftype = def
                .as_ref()
                .and_then(|d| d.field(col))
                .map(|f| f.field_type.clone());
            let v = if cell == "#N/A" {
                Value::Null
            } else {
                match ftype {
                    Some(FieldType::Boolean) => Value::Text(cell.to_lowercase()),
                    _ => Value::Text(cell.clone()),
                }
            };
            fields.insert(col.clone(), v);
        }
        let id_cell = fields.get("Id").and_then(Value::as_str).map(str::to_owned);
        let result: Result<(String, bool), ApiError> = match info.operation.as_str() {
            "insert" => state
                .org
                .create(&info.object, &fields, user)
                .map(|id| (id, true)),
            "update" => match &id_cell {
                None => Err(ApiError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                )
                .with_fields(&["Id"])),
                Some(id) => state
                    .org
                    .update(&info.object, id, &fields, user)
                    .map(|id| (id, false)),
            },
            "upsert" => {
                let field = info.external_id_field_name.clone().unwrap_or_default();
                match fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&field))
                    .and_then(|(_, v)| v.as_str().map(str::to_owned))
                {
                    None => Err(ApiError::new(
                        "MISSING_ARGUMENT",
                        format!("{field} not specified"),
                    )
                    .with_fields(&[&field])),
                    Some(value) => match state.org.upsert(
                        &info.object,
                        &field,
                        &value,
                        &fields,
                        user,
                    ) {
                        Ok(Upsert::Created(id)) => Ok((id, true)),
                        Ok(Upsert::Updated(id)) => Ok((id, false)),
                        Ok(Upsert::Multiple(ids)) => Err(ApiError::new(
                            "DUPLICATE_EXTERNAL_ID",
                            format!(
                                "{field}: more than one record found for external id field: [{}]",
                                ids.join(", ")
                            ),
                        )
                        .with_fields(&[&field])),
                        Err(e) => Err(e),
                    },
                }
            }
            _ => match &id_cell {
                None => Err(
                    ApiError::new("MISSING_ARGUMENT", "Id not specified in a delete call")
                        .with_fields(&["Id"]),
                ),
                Some(id) => state
                    .org
                    .delete(&info.object, id, user)
                    .map(|()| (id.clone(), false)),
            },
        };
        match result {
            Ok((id, created)) => ok.rows.push(
                [id, created.to_string()]
                    .into_iter()
                    .chain(row.iter().cloned())
                    .collect(),
            ),
            Err(e) => failed.rows.push(
                [
                    id_cell.unwrap_or_default(),
                    format!("{}:{}:{} --", e.error_code, e.message, e.fields.join(",")),
                ]
                .into_iter()
                .chain(row.iter().cloned())
                .collect(),
            ),
        }
    }
    (ok, failed)
}
