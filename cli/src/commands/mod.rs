//! One module per `connector` subcommand.

pub mod auth;
pub mod credentials;
pub mod disconnect;
pub mod progress;
pub mod schema;
pub mod sync;
pub mod test;
pub mod validate;
