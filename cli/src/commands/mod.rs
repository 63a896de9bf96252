//! One module per `connector` subcommand.

pub mod progress;
pub mod schema;
pub mod sync;
pub mod test;
pub mod validate;
