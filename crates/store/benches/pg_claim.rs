//! Claim latency of the PostgreSQL store against the depth of the queue:
//! one `claim` of one task with 1,000 and with 1,000,000 ready tasks.
//!
//!   eval "$(scripts/postgres)"
//!   cargo bench -p ganger-store --bench pg_claim [-- SIZE...]
//!
//! Each size gets a fresh database (dropped afterwards), filled in bulk
//! with `generate_series` (an insert path for this bench only), vacuumed
//! and analyzed (with 1,050 tasks more than SIZE, so that SIZE are still
//! queued at the last claim); then 1,000 claims run one after the other, each its own
//! transaction through `Store::claim`, and the figures are printed. Without
//! GANGER_TEST_POSTGRES_URL it says so and does nothing.

use std::time::{Duration, Instant};

use ganger_store::{ClaimRequest, PgStore, Store};
use sqlx::{Connection, PgConnection};

#[path = "../tests/support/pgdb.rs"]
mod pgdb;

const CLAIMS: usize = 1_000;
const WARMUP: usize = 50;

fn main() {
    // `cargo bench` passes `--bench`; sizes are the numeric arguments.
    let mut sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 1_000_000];
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pg_claim: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(&sizes)) {
        eprintln!("pg_claim: {e}");
        std::process::exit(1);
    }
}

async fn run(sizes: &[u64]) -> Result<(), Box<dyn std::error::Error>> {
    if pgdb::server_url().is_none() {
        println!("pg_claim: skipped (GANGER_TEST_POSTGRES_URL is unset)");
        return Ok(());
    }
    println!(
        "{:>10}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>8}",
        "queued", "fill", "p50", "p90", "p99", "max", "mean"
    );
    for &size in sizes {
        let Some(db) = pgdb::TestDb::create().await else {
            return Ok(());
        };
        let store = PgStore::connect(&db.url, 4).await?.without_notify();
        let started = Instant::now();
        // Enough that `size` tasks are still queued at the last claim.
        fill(&db.url, size + (WARMUP + CLAIMS) as u64).await?;
        let fill_time = started.elapsed();
        let req = ClaimRequest {
            agent: "bench".into(),
            labels: vec!["os=linux".into()],
            executors: vec!["process".into()],
            max: 1,
            now: 1_000,
            lease_until: 60_000,
        };
        for _ in 0..WARMUP {
            store.claim(req.clone()).await?;
        }
        let mut times = Vec::with_capacity(CLAIMS);
        for _ in 0..CLAIMS {
            let t = Instant::now();
            let got = store.claim(req.clone()).await?;
            times.push(t.elapsed());
            if got.len() != 1 {
                return Err(format!("claim returned {} tasks, expected 1", got.len()).into());
            }
        }
        times.sort();
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{size:>10}  {:>8.1}s  {:>9}  {:>9}  {:>9}  {:>9}  {:>8}",
            fill_time.as_secs_f64(),
            us(pct(50)),
            us(pct(90)),
            us(pct(99)),
            us(times[times.len() - 1]),
            us(mean)
        );
        store.close().await;
    }
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0}µs", d.as_secs_f64() * 1e6)
}

/// `size` ready tasks in one run, in priorities 0..3, a tenth of them
/// tagged, in one statement; then statistics and the visibility map are
/// brought up to date, as autovacuum would.
async fn fill(url: &str, size: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query(
        "INSERT INTO runs (id, job, version, status, priority, created_at, params_json, \
         state_json) VALUES ('bench', 'bench', 1, 'running', 0, 0, '{}', '{}')",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO claimables (run_id, task, phase, attempt, priority, tags, executor, \
         spec_json, ready_at) \
         SELECT 'bench', g, 'main', 1, g % 3, \
         CASE WHEN g % 10 = 0 THEN ARRAY['os=linux'] ELSE '{}'::text[] END, 'process', \
         '{\"run\":\"true\"}', 0 FROM generate_series(0, $1 - 1) AS g",
    )
    .bind(i64::try_from(size)?)
    .execute(&mut conn)
    .await?;
    sqlx::query("VACUUM ANALYZE claimables")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
