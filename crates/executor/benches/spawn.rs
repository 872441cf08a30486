//! How long `spawn` holds the caller, with a small heap and with gigabytes
//! resident. fork+exec would grow with the parent's size (page tables are
//! copied); posix_spawn (vfork semantics) must not. Prints both and the ratio.
//!
//! `cargo bench -p ganger-executor --bench spawn [-- GIB]` (default 4 GiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganger_executor::{LogLine, LogSink, ProcessSpec, spawn};

struct Discard;

impl LogSink for Discard {
    fn line(&self, _: &LogLine) {}
}

const SPAWNS: usize = 300;

async fn measure(dir: &std::path::Path) -> Vec<Duration> {
    let mut times = Vec::with_capacity(SPAWNS);
    for i in 0..SPAWNS {
        let spec = ProcessSpec {
            script: "true".into(),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            workspace: dir.join("ws"),
            log_path: dir.join(format!("logs/{i}.log")),
            output_path: dir.join(format!("out/{i}")),
            kill_grace: Duration::from_secs(1),
            log_cap: None,
        };
        let started = Instant::now();
        let child = spawn(spec, Arc::new(Discard)).expect("spawn works");
        times.push(started.elapsed());
        let (_tx, rx) = tokio::sync::watch::channel(None);
        child.wait(rx).await;
    }
    times.sort();
    times
}

fn pct(times: &[Duration], p: f64) -> Duration {
    times[((times.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let gib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let small = runtime.block_on(measure(dir.path()));
    // Touch every page so the memory is really resident.
    let ballast: Vec<u8> = vec![1u8; gib << 30];
    let resident: u64 = ballast.iter().step_by(4096).map(|&b| u64::from(b)).sum();
    let large = runtime.block_on(measure(dir.path()));
    println!("spawn() time of the caller, {SPAWNS} spawns of `true` each");
    println!("{:<28} {:>10} {:>10}", "parent", "p50", "p99");
    println!(
        "{:<28} {:>10.3?} {:>10.3?}",
        "small heap",
        pct(&small, 0.5),
        pct(&small, 0.99)
    );
    println!(
        "{:<28} {:>10.3?} {:>10.3?}",
        format!("{gib} GiB resident ({resident} pages)"),
        pct(&large, 0.5),
        pct(&large, 0.99)
    );
    println!(
        "ratio p50 (large / small): {:.2}",
        pct(&large, 0.5).as_secs_f64() / pct(&small, 0.5).as_secs_f64()
    );
    drop(ballast);
}
