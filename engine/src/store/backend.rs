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

/// `impl<DB> Store<DB> { ... }` (or `impl<DB> Sink for Store<DB> { ... }`) for every backend:
/// what sqlx needs of a database to run the store's queries, said once. Both backends have all
/// of it; each block uses some.
macro_rules! on_every_backend {
    (impl Store { $($body:tt)* }) => {
        on_every_backend!(@impl [super::Store<DB>] $($body)*);
    };
    (impl Sink for Store { $($body:tt)* }) => {
        on_every_backend!(@impl [super::Sink for super::Store<DB>] $($body)*);
    };
    (@impl [$($header:tt)*] $($body:tt)*) => {
        impl<DB> $($header)*
        where
            DB: super::Backend,
            for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
            for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
            DB::Arguments: sqlx::IntoArguments<DB>,
            for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> std::sync::Arc<str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> &'q [u8]: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> Option<&'q [u8]>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'q> Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
            for<'r> String: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            for<'r> Option<String>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            for<'r> Option<i64>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            for<'r> Vec<u8>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            for<'r> Option<Vec<u8>>: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
            usize: sqlx::ColumnIndex<DB::Row>,
        {
            $($body)*
        }
    };
}
pub(super) use on_every_backend;
