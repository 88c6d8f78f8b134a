//! Sage 100 (on-premise only): the agent side of the loop. The server queues commands
//! (`crate::agent_queue`); `cashloop agent`, on the customer's network, executes them through
//! the eBusiness Web Services (`soap`), writes cash receipts as Visual Integrator import files,
//! reads invoices, receipts and items over ODBC (`reads`), and keeps an idempotency record so
//! each command acts once (`agent`). `simulator` is a protocol-faithful stand-in for the web
//! services whose books are a database in Sage 100's File Layout (`layout`), read through the
//! SQLite ODBC driver in tests.

pub mod agent;
pub mod layout;
pub mod reads;
pub mod simulator;
pub mod soap;
