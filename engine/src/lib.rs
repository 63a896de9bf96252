//! The Hypernet Connect engine.
//!
//! Data flows one way: spec → auth → request → page → records → map → validate → store. Each
//! stage is one module with a small public surface. Built so far:
//!
//! - [`spec`]: the connector spec language, and the loader that validates it;
//! - [`models`]: the Hypernet models that records map onto;
//! - [`template`]: the sandbox that templates and conditions run in;
//! - [`schema`]: the generated JSON Schemas and reference pages.

pub mod account;
pub mod convert;
pub mod credentials;
pub mod decode;
pub mod events;
pub mod extract;
pub mod http;
pub mod map;
pub mod models;
pub mod ratelimit;
pub mod record;
pub mod replay;
pub mod run;
pub mod sandbox;
pub mod schema;
pub mod source;
pub mod spec;
pub mod state;
pub mod store;
pub mod template;
pub mod validate;
