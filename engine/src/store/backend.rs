//! The two databases the store runs on, and what differs between them.
//!
//! Every query is written once, generic over the database, through `sqlx::QueryBuilder` (which
//! writes `?` placeholders for SQLite and `$1` for PostgreSQL). What remains different is said
//! here: how JSON text becomes the `data` column, and each backend's migrations.

use sqlx::migrate::Migrator;
use sqlx::{Postgres, Sqlite};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// A database the store runs on.
pub trait Backend: sqlx::Database {
    /// The schema migrations.
    fn migrator() -> &'static Migrator;
    /// Written after a JSON text parameter that goes into `records.data`.
    const JSON_PARAM_SUFFIX: &'static str;
    /// Written after `data` to read it back as text.
    const JSON_TEXT_SUFFIX: &'static str;
    /// Ends a `SELECT` that picks a row to claim: PostgreSQL skips rows another transaction is
    /// claiming; SQLite has one writer, so claims never race there.
    const SKIP_LOCKED: &'static str;
    /// How many rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Backend for Sqlite {
    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATIONS
    }
    const JSON_PARAM_SUFFIX: &'static str = "";
    const JSON_TEXT_SUFFIX: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Backend for Postgres {
    fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATIONS
    }
    const JSON_PARAM_SUFFIX: &'static str = "::jsonb";
    const JSON_TEXT_SUFFIX: &'static str = "::text";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}
