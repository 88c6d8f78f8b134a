//! Sage 100 (on-premise only): the agent side of the loop. The server queues commands
//! (`crate::agent_queue`); `cashloop agent`, on the customer's network, executes them through
//! the eBusiness Web Services (`soap`), writes cash receipts as Visual Integrator import files,
//! and keeps an idempotency record so each command acts once (`agent`). `simulator` is a
//! protocol-faithful stand-in for the web services.

pub mod agent;
pub mod simulator;
pub mod soap;
