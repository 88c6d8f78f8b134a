//! What the on-premise agent loop ([`crate::sage100::agent::run`]) needs of an executor, so
//! the same poll / execute / report loop drives every agent-backed line (Sage 100's
//! `sage100::agent::Executor`, BusinessWorks' `businessworks::BwExecutor`).

use std::future::Future;

use crate::agent_queue::{Command, Outcome};

/// Executes one leased command.
pub trait CommandExecutor {
    /// `Some(outcome)` to report; `None` to leave the command for a retry (the line or the
    /// local record unreachable, a result not there yet): its lease runs out and it comes back.
    fn execute(&self, cmd: &Command) -> impl Future<Output = Option<Outcome>> + Send;
}

/// How an execution failed: `Retry` leaves the command to come back (the line or the local
/// record unreachable, a result not there yet), `Fail` is its outcome.
#[derive(Debug)]
pub enum ExecError {
    Retry(String),
    Fail(String),
}

impl From<sqlx::Error> for ExecError {
    fn from(e: sqlx::Error) -> Self {
        ExecError::Retry(format!("local state: {e}"))
    }
}

/// What to report for `cmd` after an execution: its outcome, or `None` (logged) when it is
/// left for a retry.
pub fn outcome(cmd: &Command, result: Result<serde_json::Value, ExecError>) -> Option<Outcome> {
    match result {
        Ok(v) => Some(Outcome::Done(v)),
        Err(ExecError::Fail(e)) => Some(Outcome::Failed(e)),
        Err(ExecError::Retry(e)) => {
            tracing::warn!(command = cmd.id, error = %e, "command left for a retry");
            None
        }
    }
}
