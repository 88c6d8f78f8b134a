//! Authorize.Net: the connector ([`client::AuthorizeNet`]), its wire shapes ([`wire`]), inbound
//! webhook verification ([`webhook`]) and a protocol-faithful simulator ([`simulator`]) that the
//! tests drive the connector against over a real socket.

pub mod client;
pub mod simulator;
pub mod webhook;
pub mod wire;

pub use client::{AuthorizeNet, AuthorizeNetConfig, reference_code};
