//! What a `true` task costs from start to end in a container, next to the
//! same task as a process: each attempt is timed from the executor call to
//! its outcome (for a container: create, attach, start, wait, remove).
//!
//! `cargo bench -p ganger-executor --bench docker [-- RUNS]` (default 20).
//! Needs the Docker engine and builds `ganger-test-busybox` with
//! `scripts/test-image` when missing.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ganger_executor::{
    ContainerSpec, DockerEngine, LogLine, LogSink, Owner, ProcessSpec, PullPolicy, Resources,
    Termination, spawn,
};
use tokio::sync::watch;

struct Discard;

impl LogSink for Discard {
    fn line(&self, _: &LogLine) {}
}

async fn processes(dir: &Path, runs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let spec = ProcessSpec {
            script: "true".into(),
            env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
            workspace: dir.join("ws"),
            log_path: dir.join(format!("p/{i}.log")),
            output_path: dir.join(format!("p/{i}.out")),
            kill_grace: Duration::from_secs(1),
            log_cap: None,
        };
        let started = Instant::now();
        let child = spawn(spec, Arc::new(Discard)).expect("spawn works");
        let (_tx, rx) = watch::channel(None);
        let outcome = child.wait(rx).await;
        times.push(started.elapsed());
        assert_eq!(outcome.termination, Termination::Exited(0));
    }
    times
}

async fn containers(engine: &DockerEngine, dir: &Path, runs: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let spec = ContainerSpec {
            image: "ganger-test-busybox:latest".into(),
            pull: PullPolicy::IfMissing,
            script: Some("true".into()),
            command: None,
            entrypoint: None,
            env: vec![("PATH".into(), "/bin".into())],
            workdir: None,
            workspace: dir.join("ws"),
            output_path: dir.join(format!("c/{i}.out")),
            log_path: dir.join(format!("c/{i}.log")),
            log_cap: None,
            kill_grace: Duration::from_secs(1),
            network: "ganger-bench".into(),
            user: None,
            volumes: Vec::new(),
            services: Vec::new(),
            resources: Resources::default(),
            owner: Owner {
                agent: format!("bench-{}", std::process::id()),
                run: "bench".into(),
                task: "true".into(),
                attempt: i.to_string(),
            },
            labels: Vec::new(),
            extra_hosts: Vec::new(),
            init: true,
        };
        let started = Instant::now();
        let (_tx, rx) = watch::channel(None);
        let outcome = engine.run(spec, Arc::new(Discard), rx, || {}).await;
        times.push(started.elapsed());
        assert_eq!(outcome.termination, Termination::Exited(0), "{outcome:?}");
    }
    times
}

fn summary(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{name:<12} {:>10.2?} {:>10.2?} {:>10.2?} {:>10.2?}",
        times[0],
        pct(0.5),
        mean,
        pct(0.9)
    );
    pct(0.5)
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-image");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .expect("run test-image");
    assert!(status.success(), "{} failed", script.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    runtime.block_on(async {
        let engine = DockerEngine::connect().await.expect("a Docker engine");
        engine
            .ensure_network("ganger-bench")
            .await
            .expect("network");
        // Warm up both paths (page cache, the engine's first container).
        processes(dir.path(), 3).await;
        containers(&engine, dir.path(), 2).await;
        let process = processes(dir.path(), runs).await;
        let container = containers(&engine, dir.path(), runs).await;
        println!("`true` from executor call to outcome, {runs} sequential runs each");
        println!(
            "{:<12} {:>10} {:>10} {:>10} {:>10}",
            "executor", "min", "p50", "mean", "p90"
        );
        let p = summary("process", process);
        let c = summary("docker", container);
        println!(
            "ratio p50 (docker / process): {:.0}",
            c.as_secs_f64() / p.as_secs_f64()
        );
    });
}
