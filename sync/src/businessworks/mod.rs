//! Sage BusinessWorks (Pervasive / Actian Zen) through the on-premise agent.
//!
//! BusinessWorks has no API (`protocols.md` §5): the agent reads it over ODBC (the Actian Zen
//! driver; the SQLite ODBC driver in tests) with table and column names from configuration
//! ([`names`]), detects changes by row hash ([`reads`], [`state`]), and writes through
//! BusinessWorks' own import utility: customers and orders as comma-delimited import files whose
//! log it reads back ([`import`]). [`executor::BwExecutor`] answers the shared agent command
//! contract ([`crate::agent_contract`]), so the server's agent loop drives BusinessWorks as it
//! drives Sage 100. [`simulator`] stands in for BusinessWorks and its import in tests and the
//! sandbox; [`layout`] builds its tables.

pub mod executor;
pub mod import;
pub mod layout;
pub mod names;
pub mod reads;
pub mod simulator;
pub mod state;

pub use executor::BwExecutor;
pub use import::ImportFolder;
pub use names::BwNames;
pub use reads::Reader;
pub use simulator::Simulator;
pub use state::BwState;
