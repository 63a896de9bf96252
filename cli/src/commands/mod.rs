//! One module per `connector` subcommand.

pub mod schema;
pub mod validate;
