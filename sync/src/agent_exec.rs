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
