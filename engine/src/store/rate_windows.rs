//! Rate-limit windows counted in the database ([`crate::ratelimit::SharedWindows`]): one row per
//! limit and window, taken one request at a time by an upsert that refuses a full window, so
//! that processes sharing the database never spend more than the window allows between them.

use std::time::{Duration, SystemTime};

use sqlx::{QueryBuilder, Row};

use super::{AnyStore, StoreError};
use crate::on_every_backend;
use crate::ratelimit::{SharedWindow, SharedWindows, Taking, window_at};

/// Windows this much older than their own length are deleted when a new window of their limit
/// begins.
const KEPT_WINDOWS: u64 = 2;

on_every_backend! {
impl Store {
    /// Takes one request from `limit`'s window at `now`: `Ok(Err(wait))` when it is full.
    pub async fn take_window(
        &self,
        limit: &SharedWindow,
        now: SystemTime,
    ) -> Result<Result<(), Duration>, StoreError> {
        let (start, left) = window_at(now, limit.per);
        let start = i64::try_from(start).unwrap_or(i64::MAX);
        // One statement: a new window starts at 1; an existing one counts up only while it has
        // room, and returns nothing when it is full.
        let mut query = QueryBuilder::<DB>::new(
            "INSERT INTO rate_windows (key, window_start, used, integration_id) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(limit.key.as_str())
            .push_bind(start)
            .push_bind(1_i64)
            .push_bind(limit.integration_id.as_deref());
        query
            .push(") ON CONFLICT (key, window_start) DO UPDATE SET used = rate_windows.used + 1 WHERE rate_windows.used < ")
            .push_bind(i64::from(limit.requests))
            .push(" RETURNING used");
        let Some(row) = query.build().fetch_optional(&self.pool).await? else {
            return Ok(Err(left.max(Duration::from_millis(10))));
        };
        let used: i64 = row.try_get(0usize)?;
        if used == 1 {
            // A new window: the ones before it are no longer needed.
            let window = i64::try_from(limit.per.as_secs().max(1)).unwrap_or(i64::MAX);
            let mut forget =
                QueryBuilder::<DB>::new("DELETE FROM rate_windows WHERE key = ");
            forget
                .push_bind(limit.key.as_str())
                .push(" AND window_start < ")
                .push_bind(start.saturating_sub(window.saturating_mul(KEPT_WINDOWS as i64)));
            forget.build().execute(&self.pool).await?;
        }
        Ok(Ok(()))
    }
}
}

impl SharedWindows for AnyStore {
    fn take<'a>(&'a self, limit: &'a SharedWindow) -> Taking<'a> {
        Box::pin(async move {
            let now = SystemTime::now();
            let taken = match self {
                Self::Sqlite(store) => store.take_window(limit, now).await,
                Self::Postgres(store) => store.take_window(limit, now).await,
            };
            taken.map_err(|error: StoreError| error.to_string())
        })
    }
}
