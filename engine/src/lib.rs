//! The Hypernet Connect engine: it interprets connector specs to import a person's data.
//!
//! Data flows one way: spec → credentials → source (pages) → records → map → validate → store,
//! with the run driving it. The modules form layers, and none uses one from a layer above its
//! own (`tests/architecture.rs` holds this; the README draws it). Lowest first:
//!
//! - the language and the values every stage passes on: [`spec`] (the connector spec, its
//!   loader and checks), [`models`] (the Hypernet models records map onto), [`schema`] (the
//!   generated JSON Schemas and reference pages), [`template`] (the sandbox templates run in),
//!   [`extract`] (JSONPath), [`validate`] (model checks), [`decode`] (framing × format, and the
//!   decoded document), [`record`] (mapped records and their JSON), [`state`] (checkpoints and
//!   resume points), [`events`] (what a run reports), [`ratelimit`] (the provider's limits);
//! - [`http`]: sending requests (allowed hosts, rate limits, retries);
//! - [`credentials`]: what signs requests (API keys, OAuth 2.0, OAuth 1.0a), sealed at rest;
//! - [`source`]: where records come from, a page at a time (the provider's API);
//! - [`map`]: raw records → model records;
//! - [`store`]: where mapped records go (SQLite, PostgreSQL, memory, a records API), with runs,
//!   checkpoints and the audit log; [`blobs`]: where their content goes (photos, attachments,
//!   files), each stored once under its hash;
//! - [`account`]: a connected account, and the use cases the CLI and the service share
//!   (preparing a run, saving a connection, revoking);
//! - [`run`]: one run of a connector for one integration;
//! - [`sandbox`]: a connector's fixtures standing in for its provider (`connector test`,
//!   `--sandbox`).

pub mod account;
pub mod blobs;
mod convert;
pub mod credentials;
pub mod decode;
pub mod events;
pub mod extract;
pub mod http;
pub mod map;
pub mod models;
pub mod ratelimit;
pub mod record;
mod replay;
pub mod run;
pub mod sandbox;
pub mod schema;
pub mod source;
pub mod spec;
pub mod state;
pub mod store;
pub mod template;
pub mod validate;

// For `on_every_backend!`, which names sqlx's traits from the crates that use it.
#[doc(hidden)]
pub use sqlx as __sqlx;
