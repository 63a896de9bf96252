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

/// `impl<DB> Store<DB> { ... }`, `impl<DB> Sink for Store<DB> { ... }`, or `impl<DB> T<DB> { ... }`
/// for a type of another crate that queries the store's database (the service's own tables):
/// what sqlx needs of a database to run the store's queries, said once, for every [`Backend`].
/// Both backends have all of it; each block uses some.
#[macro_export]
macro_rules! on_every_backend {
    (impl Store { $($body:tt)* }) => {
        $crate::on_every_backend!(@impl [$crate::store::Store<DB>] $($body)*);
    };
    (impl Sink for Store { $($body:tt)* }) => {
        $crate::on_every_backend!(@impl [$crate::store::Sink for $crate::store::Store<DB>] $($body)*);
    };
    (impl $name:ident { $($body:tt)* }) => {
        $crate::on_every_backend!(@impl [$name<DB>] $($body)*);
    };
    (@impl [$($header:tt)*] $($body:tt)*) => {
        impl<DB> $($header)*
        where
            DB: $crate::store::Backend,
            for<'c> &'c mut DB::Connection: $crate::__sqlx::Executor<'c, Database = DB>,
            for<'c> &'c $crate::__sqlx::Pool<DB>: $crate::__sqlx::Executor<'c, Database = DB>,
            DB::Arguments: $crate::__sqlx::IntoArguments<DB>,
            for<'q> &'q str: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> std::sync::Arc<str>: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> Option<&'q str>: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> &'q [u8]: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> Option<&'q [u8]>: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> i64: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'q> Option<i64>: $crate::__sqlx::Encode<'q, DB> + $crate::__sqlx::Type<DB>,
            for<'r> String: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            for<'r> Option<String>: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            for<'r> i64: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            for<'r> Option<i64>: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            for<'r> Vec<u8>: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            for<'r> Option<Vec<u8>>: $crate::__sqlx::Decode<'r, DB> + $crate::__sqlx::Type<DB>,
            usize: $crate::__sqlx::ColumnIndex<DB::Row>,
        {
            $($body)*
        }
    };
}
