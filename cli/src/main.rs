//! `connector`: validate, test and run Hypernet connectors.
//!
//! Exit status: 0 on success, 1 when what was checked has problems, 2 on usage errors (bad
//! flags, missing files).

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Validate, test and run Hypernet connectors.
#[derive(Debug, Parser)]
#[command(name = "connector", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check connector specs and report every problem as file:line:column.
    Validate(commands::validate::Args),
    /// Print the connector JSON Schema, or write and check all generated files.
    Schema(commands::schema::Args),
}

/// How a command ended; mapped onto the process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out.
    Success,
    /// What was checked has problems (exit 1).
    Problems,
    /// The command could not run as asked (exit 2).
    UsageError,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Schema(args) => commands::schema::run(&args),
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Problems => ExitCode::from(1),
        Outcome::UsageError => ExitCode::from(2),
    }
}
