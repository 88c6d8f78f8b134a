//! `/agent/v1/*`: the protocol an on-premise agent (`cashloop agent`, a Sage 100 executor)
//! speaks with the server. Outside `/v1` and its OpenAPI document: these routes open only with
//! an agent key (`[[agents]]`), never with an API key.
//!
//! * `POST /agent/v1/poll` `{"wait_ms": N}` — long-polls up to `wait_ms` (capped below the
//!   request timeout) and answers `200 {"command": {id, kind, payload, idempotency_key,
//!   deliveries}}` with the agent's next command, leased for the agent's `lease_ms`, or
//!   `200 {"command": null}` when there is none.
//! * `POST /agent/v1/results/{id}` `{"status": "done", "result": {…}}` or `{"status":
//!   "failed", "error": "…"}` — records the outcome; `{"recorded": true}` the first time,
//!   `{"recorded": false}` for an already finished command (idempotent), 404 for a command that
//!   is not this agent's. When the agent serves the installation's Sage line
//!   (`[sync.sage100]` / `[sync.businessworks]`), the result is handed to the loop as a
//!   `{line}.agent_result` job, once per command (also when re-sent).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sync::agent_queue::{self, Outcome, QueueError};

use crate::config::AgentKey;
use crate::server::{AppError, AppState};

/// The longest a poll waits for a command.
const MAX_WAIT_MS: u64 = 25_000;
/// How often a waiting poll looks at the queue again.
const POLL_STEP: Duration = Duration::from_millis(100);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agent/v1/poll", post(poll))
        .route("/agent/v1/results/{id}", post(result))
}

fn agent(state: &AppState, headers: &HeaderMap) -> Result<AgentKey, AppError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(AppError::Unauthorized(
            "send the agent key as `Authorization: Bearer <key>`",
        ))?;
    // Every configured key is compared (constant-time each), whichever matches.
    let mut found = None;
    for a in &state.config.agents {
        if a.matches(presented) && found.is_none() {
            found = Some(a.clone());
        }
    }
    found.ok_or(AppError::Unauthorized("unknown agent key"))
}

fn storage(e: QueueError) -> AppError {
    match e {
        QueueError::NotFound(id) => AppError::Api {
            status: StatusCode::NOT_FOUND,
            code: "command_not_found",
            field: None,
            message: format!("there is no command {id} for this agent"),
        },
        e => AppError::Internal(e.to_string()),
    }
}

fn invalid(message: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: "invalid_request",
        field: None,
        message: message.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollBody {
    #[serde(default)]
    wait_ms: u64,
}

async fn poll(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let agent = agent(&state, &headers)?;
    let req: PollBody = if body.is_empty() {
        PollBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| invalid(format!("poll body: {e}")))?
    };
    // Answer well before the request timeout cuts the connection.
    let cap = MAX_WAIT_MS.min(state.config.request_timeout_ms.saturating_mul(2) / 3);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(cap));
    loop {
        if let Some(c) = agent_queue::lease(&state.db, &agent.name, agent.lease_ms)
            .await
            .map_err(storage)?
        {
            tracing::info!(agent = %agent.name, command = c.id, kind = %c.kind, deliveries = c.deliveries, "agent command leased");
            return Ok(Json(json!({ "command": c })));
        }
        if tokio::time::Instant::now() + POLL_STEP > deadline {
            return Ok(Json(json!({ "command": null })));
        }
        tokio::time::sleep(POLL_STEP).await;
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    status: String,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

async fn result(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AppError> {
    let agent = agent(&state, &headers)?;
    let req: ResultBody =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("result body: {e}")))?;
    let outcome = match (req.status.as_str(), req.result, req.error) {
        ("done", Some(r), None) => Outcome::Done(r),
        ("failed", None, Some(e)) => Outcome::Failed(e),
        _ => {
            return Err(invalid(
                "send {\"status\": \"done\", \"result\": …} or {\"status\": \"failed\", \"error\": \"…\"}",
            ));
        }
    };
    let recorded = agent_queue::finish(&state.db, &agent.name, id, &outcome)
        .await
        .map_err(storage)?;
    // The loop continues in a job, queued once per command. Also for a result already
    // recorded: an agent re-sending it after a failure here heals the gap.
    if let Some(line) = state
        .config
        .sync
        .agent_line()
        .filter(|l| l.config.agent == agent.name)
    {
        sync::agent_loop::queue_result(&state.jobs, line.config.line, id)
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?;
    }
    tracing::info!(agent = %agent.name, command = id, status = %req.status, recorded, "agent command result");
    Ok(Json(json!({ "recorded": recorded })))
}
