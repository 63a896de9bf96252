//! `connector`: validate, test and run Hypernet connectors.
//!
//! Exit status: 0 on success, 1 when what was checked has problems (a sync that imported
//! nothing to the end), 2 on usage errors (bad flags, missing files), 3 when a sync was partial
//! (some streams failed, the others imported).

/// `println!` for the command's output. Output nobody reads any more (`connector sync ... |
/// head`) is dropped: the command still finishes what it was asked and exits with its own
/// status, where `println!` panicked (exit 101, after the sync had stored everything).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

mod commands;

/// The import allocates and frees many small values (decoded pages, mapped records) on one
/// thread and frees some on another (the writer); mimalloc does that about 25% faster than
/// glibc's allocator on the import bench, at the same peak memory (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (`mimalloc.h`); libmimalloc-sys names
/// the options around it but not this one.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before giving them back, in milliseconds. Its default,
/// 1000, holds on to what an import's pipeline frees for a second: a 1M-play Spotify import
/// peaked at 75 MiB resident with a heap of about 24 MiB. 100 ms gave 60-66 MiB, 50 ms 62-65,
/// 25 ms 57-58 MiB, and Apple Health's 2M records 43-48 MiB instead of 56, at the same speed;
/// 0 cost seconds of system time (BENCHMARKS.md). `MIMALLOC_PURGE_DELAY` in the environment
/// still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 25;

fn tune_allocator() {
    // mimalloc reads its environment when the process loads, before `main`: a default set now
    // would never apply, so the option is set unless the environment gave one.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option before any other thread exists (mimalloc's option
        // setters are not thread safe); the value is in the option's range.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

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
    /// Run connectors against their recorded fixtures and compare with their snapshots.
    Test(commands::test::Args),
    /// Import a connector's records into the database (SQLite or PostgreSQL), from the sandbox or
    /// the real API; resumes an interrupted run.
    Sync(commands::sync::Args),
    /// Import a data export the person downloaded (a zip, tar.gz or folder: Apple Health,
    /// Spotify's extended history, a Takeout) into the database; resumes an interrupted import,
    /// and a re-import writes only what changed.
    Import(commands::import::Args),
    /// Connect an account through OAuth on this machine; tokens are stored encrypted.
    Auth(commands::auth::Args),
    /// Revoke and delete an account's tokens; optionally delete its imported records.
    Disconnect(commands::disconnect::Args),
    /// Show an integration's sync runs and audit log.
    History(commands::history::Args),
    /// Remove from the blob store the content no record refers to, and staged downloads a
    /// crash left behind.
    Gc(commands::gc::Args),
    /// Print the connector JSON Schema, or write and check all generated files.
    Schema(commands::schema::Args),
    /// Run the service: connect accounts through OAuth, sync them on a schedule, and show it
    /// all in a JSON API and a web page (`--sandbox`: every connector on its fixtures).
    Serve(commands::serve::Args),
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
    /// A sync imported some streams while others failed (exit 3).
    Partial,
}

/// Why a command stopped early: printed once by `main` as `error: {message}` (or, for a
/// [`Failure::verbatim`] one, as the message alone), and mapped onto the exit status by its
/// outcome.
///
/// A message of several lines (an `error:` line, then `  what to do: ...` lines) is one
/// message with `\n` between the lines; only its first line gets the prefix.
#[derive(Debug)]
pub struct Failure {
    /// The exit status to end with.
    pub outcome: Outcome,
    /// What went wrong, without the `error: ` prefix.
    pub message: String,
    /// Whether `main` prints `error: ` before the message; false for messages that already
    /// carry their own form (a spec's `file:line:column: ...` diagnostics).
    pub prefixed: bool,
}

impl Failure {
    /// The command could not run as asked (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::UsageError,
            message: message.into(),
            prefixed: true,
        }
    }

    /// What was checked has problems, or something failed (exit 1).
    pub fn problem(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Problems,
            message: message.into(),
            prefixed: true,
        }
    }

    /// A failure printed exactly as `message`, without the `error: ` prefix: for messages that
    /// are already a complete report, such as an invalid spec's `file:line:column: ...` lines.
    pub fn verbatim(outcome: Outcome, message: impl Into<String>) -> Self {
        Self {
            outcome,
            message: message.into(),
            prefixed: false,
        }
    }
}

/// Runs `work` to completion on a new multi-threaded runtime.
fn with_runtime(
    work: impl std::future::Future<Output = Result<Outcome, Failure>>,
) -> Result<Outcome, Failure> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => Err(Failure::problem(format!(
            "cannot start the async runtime: {error}"
        ))),
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    // Structured events (retries, rate-limit waits) go to stderr; RUST_LOG=info shows them.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // The metadata reader logs every file without EXIF (most files) as an error: a file
        // without metadata is no problem of the person's, so it stays quiet unless asked for.
        // sqlx warns of each statement slower than a second, SQL text and all: a large import's
        // commits and checkpoints are, and the person can do nothing about it (RUST_LOG shows
        // them to whoever measures).
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,nom_exif=off,sqlx::query=error".into()),
        )
        .init();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Schema(args) => commands::schema::run(&args),
        Command::Test(args) => with_runtime(commands::test::run(&args)),
        Command::Sync(args) => with_runtime(commands::sync::run(&args)),
        Command::Import(args) => with_runtime(commands::import::run(&args)),
        Command::Auth(args) => with_runtime(commands::auth::run(&args)),
        Command::Disconnect(args) => with_runtime(commands::disconnect::run(&args)),
        Command::Gc(args) => with_runtime(commands::gc::run(&args)),
        Command::History(args) => with_runtime(commands::history::run(&args)),
        Command::Serve(args) => with_runtime(commands::serve::run(&args)),
    };
    // The one place a command's early exit is printed.
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(failure) => {
            if failure.prefixed {
                eprintln!("error: {}", failure.message);
            } else {
                eprintln!("{}", failure.message);
            }
            failure.outcome
        }
    };
    match outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Problems => ExitCode::from(1),
        Outcome::UsageError => ExitCode::from(2),
        Outcome::Partial => ExitCode::from(3),
    }
}

/// Writes one line of output (see [`say!`]).
fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{line}") {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        // A full disk under a redirect is worth saying, once, where it can still be read.
        if error.kind() != std::io::ErrorKind::BrokenPipe
            && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("error: writing the output failed: {error}");
        }
    }
}
