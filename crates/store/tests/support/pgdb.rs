//! A fresh PostgreSQL database per test, dropped when the test ends (even
//! when it panics), so tests run in parallel and leave nothing behind.
//! Shared by the integration tests and the unit tests of `src/pg.rs`.
//!
//! The server comes from `GANGER_TEST_POSTGRES_URL` (start one with
//! `eval "$(scripts/postgres)"`). When it is unset, tests that need it pass
//! without running, after one line on stderr, unless
//! `GANGER_REQUIRE_POSTGRES=1`, which makes them fail instead.

use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// One database created for one test; dropped with it.
pub struct TestDb {
    admin_url: String,
    pub name: String,
    /// The URL of this database.
    pub url: String,
}

/// The server's URL, or `None` to skip (see the module doc).
pub fn server_url() -> Option<String> {
    match std::env::var("GANGER_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("GANGER_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "GANGER_REQUIRE_POSTGRES=1 but GANGER_TEST_POSTGRES_URL is unset: \
                     start a server with eval \"$(scripts/postgres)\""
                );
            }
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                // Straight to the process's stderr: libtest captures only
                // the print macros, and this line should be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "note: skipping the PostgreSQL tests: GANGER_TEST_POSTGRES_URL is unset \
                     (eval \"$(scripts/postgres)\" to run them; GANGER_REQUIRE_POSTGRES=1 \
                     makes them fail instead)"
                );
            });
            None
        }
    }
}

/// `url` with its database replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{db}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl TestDb {
    /// Creates a database with a name no other test (or test process) uses.
    pub async fn create() -> Option<TestDb> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin_url = server_url()?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "ganger_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to GANGER_TEST_POSTGRES_URL: {e}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = admin.close().await;
        Some(TestDb {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async (or inside a runtime that cannot block):
        // a thread with a runtime of its own does the async work.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                // FORCE: the store's pool may still hold connections.
                sqlx::query(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        let outcome = done.unwrap_or_else(|_| Err("the cleanup thread panicked".into()));
        if let Err(e) = outcome {
            let _ = writeln!(
                std::io::stderr(),
                "warning: cannot drop test database {}: {e}",
                self.name
            );
        }
    }
}
