//! Runs real containers through the docker executor, against the engine of
//! this host and the local image `ganger-test-busybox:latest` (built once by
//! `scripts/test-image`, no registry needed).
//!
//! Without a reachable engine every test prints a skip line and passes,
//! unless `GANGER_REQUIRE_DOCKER=1`, which makes that a failure. Tests run
//! in parallel: each uses its own agent id, so label filters see only its
//! own containers. Nothing sleeps to synchronise: tests wait on the
//! executor's return or poll with a deadline.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ganger_executor::{
    ContainerSpec, DockerEngine, DockerError, KillMode, LogLine, LogSink, Outcome, Owner,
    PullPolicy, Resources, ServiceSpec, Stream, Termination,
};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::time::Instant;

const IMAGE: &str = "ganger-test-busybox:latest";
const NETWORK: &str = "ganger-test";

/// Upper bound for anything a test waits for; only there so that a bug
/// fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// Connects and makes sure the test image and network exist; `None` (after
/// a skip line) when there is no engine and it is not required.
async fn engine(test: &str) -> Option<DockerEngine> {
    let engine = match DockerEngine::connect().await {
        Ok(engine) => engine,
        Err(error) => {
            assert!(
                std::env::var("GANGER_REQUIRE_DOCKER").as_deref() != Ok("1"),
                "GANGER_REQUIRE_DOCKER=1 but the engine is unreachable: {error}"
            );
            eprintln!("skipping {test}: no Docker engine ({error})");
            return None;
        }
    };
    static IMAGE_BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = IMAGE_BUILT.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-image");
        let output = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|error| format!("cannot run {}: {error}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}{}",
                script.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(error) = built {
        panic!("the test image is needed: {error}");
    }
    engine
        .ensure_network(NETWORK)
        .await
        .expect("ensure test network");
    Some(engine)
}

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn line(&self, line: &LogLine) {
        self.0.lock().expect("sink lock").push(line.clone());
    }
}

impl Collect {
    fn texts(&self, stream: Stream) -> Vec<String> {
        self.0
            .lock()
            .expect("sink lock")
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.clone())
            .collect()
    }
}

struct Fixture {
    engine: DockerEngine,
    dir: TempDir,
    sink: Arc<Collect>,
    agent: String,
}

impl Fixture {
    async fn new(test: &str) -> Option<Fixture> {
        let engine = engine(test).await?;
        Some(Fixture {
            engine,
            dir: tempfile::tempdir().expect("tempdir"),
            sink: Arc::default(),
            agent: unique(test),
        })
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn spec(&self, script: &str) -> ContainerSpec {
        ContainerSpec {
            image: IMAGE.to_owned(),
            pull: PullPolicy::Never,
            script: Some(script.to_owned()),
            command: None,
            entrypoint: None,
            env: vec![("PATH".to_owned(), "/bin".to_owned())],
            workdir: None,
            workspace: self.workspace(),
            output_path: self.dir.path().join("attempt/output"),
            log_path: self.dir.path().join("attempt/log"),
            log_cap: None,
            kill_grace: Duration::from_secs(20),
            network: NETWORK.to_owned(),
            user: None,
            volumes: Vec::new(),
            services: Vec::new(),
            resources: Resources::default(),
            owner: Owner {
                agent: self.agent.clone(),
                run: "run1".to_owned(),
                task: "task/one".to_owned(),
                attempt: "1".to_owned(),
            },
            labels: vec![("test".to_owned(), "docker".to_owned())],
            extra_hosts: Vec::new(),
            init: true,
        }
    }

    async fn run(&self, spec: ContainerSpec) -> Outcome {
        let (_requests, kill) = watch::channel(None);
        let started = AtomicBool::new(false);
        let outcome = bounded(self.engine.run(spec, self.sink.clone(), kill, || {
            started.store(true, Ordering::SeqCst);
        }))
        .await;
        if matches!(outcome.termination, Termination::Exited(_)) {
            assert!(started.load(Ordering::SeqCst), "started was not called");
        }
        outcome
    }

    /// Containers and networks labelled with this test's agent id.
    fn leftovers(&self) -> Vec<String> {
        leftovers(&self.agent)
    }
}

fn leftovers(agent: &str) -> Vec<String> {
    let filter = format!("label=ganger.agent={agent}");
    let mut found = Vec::new();
    for args in [
        vec!["ps", "-a", "-q", "--filter", &filter],
        vec!["network", "ls", "-q", "--filter", &filter],
    ] {
        let output = Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI");
        assert!(output.status.success(), "docker {args:?} failed");
        found.extend(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .map(|id| format!("{} {id}", args[0])),
        );
    }
    found
}

fn unique(test: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "test-{test}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out")
}

async fn wait_until<T>(mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn failure(outcome: &Outcome) -> &str {
    match &outcome.termination {
        Termination::FailedToStart(message) => message,
        other => panic!("expected FailedToStart, got {other:?} ({outcome:?})"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lines_and_exit_code() {
    let Some(f) = Fixture::new("exit").await else {
        return;
    };
    let outcome = f
        .run(f.spec("echo hi; echo oops >&2; printf 'no newline'; exit 3"))
        .await;
    assert_eq!(outcome.termination, Termination::Exited(3), "{outcome:?}");
    assert_eq!(f.sink.texts(Stream::Stdout), ["hi", "no newline"]);
    assert_eq!(f.sink.texts(Stream::Stderr), ["oops"]);
    let log = std::fs::read_to_string(f.dir.path().join("attempt/log")).expect("log file");
    assert!(
        log.contains(" out hi\n") && log.contains(" err oops\n"),
        "{log}"
    );
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_workspace_and_outputs() {
    let Some(f) = Fixture::new("env").await else {
        return;
    };
    let mut spec = f.spec(
        "pwd; echo \"$FOO\" > \"$GANGER_WORKSPACE/made.txt\"; \
         echo \"foo=$FOO\" >> \"$GANGER_OUTPUT\"; echo \"ws=$GANGER_WORKSPACE\" >> \"$GANGER_OUTPUT\"",
    );
    spec.env.push(("FOO".to_owned(), "bar baz".to_owned()));
    // The executor's own variables win over the caller's.
    spec.env
        .push(("GANGER_OUTPUT".to_owned(), "/elsewhere".to_owned()));
    let outcome = f.run(spec).await;
    assert_eq!(outcome.termination, Termination::Exited(0), "{outcome:?}");
    assert_eq!(f.sink.texts(Stream::Stdout), ["/workspace"]);
    let made = std::fs::read_to_string(f.workspace().join("made.txt")).expect("file on host");
    assert_eq!(made, "bar baz\n");
    assert_eq!(
        outcome.outputs.get("foo").map(String::as_str),
        Some("bar baz")
    );
    assert_eq!(
        outcome.outputs.get("ws").map(String::as_str),
        Some("/workspace")
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_argv_form() {
    let Some(f) = Fixture::new("argv").await else {
        return;
    };
    let mut spec = f.spec("");
    spec.script = None;
    spec.command = Some(vec![
        "echo".to_owned(),
        "two words".to_owned(),
        "$NOT_EXPANDED".to_owned(),
    ]);
    spec.workdir = Some("/tmp".to_owned());
    let outcome = f.run(spec).await;
    assert_eq!(outcome.termination, Termination::Exited(0), "{outcome:?}");
    assert_eq!(f.sink.texts(Stream::Stdout), ["two words $NOT_EXPANDED"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_kill_stops_and_removes_the_container() {
    let Some(f) = Fixture::new("kill").await else {
        return;
    };
    // Long grace: the SIGTERM itself must end it (the init passes it on).
    let spec = f.spec("echo ready; sleep 300");
    let (requests, kill) = watch::channel(None);
    let run = f.engine.run(spec, f.sink.clone(), kill, || {});
    let killer = async {
        wait_until(|| {
            f.sink
                .texts(Stream::Stdout)
                .contains(&"ready".to_owned())
                .then_some(())
        })
        .await;
        assert_eq!(f.leftovers().len(), 1, "the task container runs");
        let sent = Instant::now();
        requests.send_replace(Some(KillMode::Graceful));
        sent
    };
    let started = Instant::now();
    let (outcome, sent) = bounded(async { tokio::join!(run, killer) }).await;
    assert_eq!(
        outcome.termination,
        Termination::Signaled(15),
        "{outcome:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "SIGTERM did not end it: {:?} after the request ({:?} in all)",
        sent.elapsed(),
        started.elapsed()
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

/// An agent that abandons an attempt (its task aborted) still leaves no
/// container or network behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_removes_its_containers() {
    let Some(f) = Fixture::new("dropped").await else {
        return;
    };
    let mut spec = f.spec("echo ready; sleep 300");
    spec.services = vec![ServiceSpec {
        name: "idle".to_owned(),
        image: IMAGE.to_owned(),
        env: Vec::new(),
        command: Some(vec!["sleep".to_owned(), "300".to_owned()]),
    }];
    let (engine, sink) = (f.engine.clone(), f.sink.clone());
    let task = tokio::spawn(async move {
        let (_requests, kill) = watch::channel(None);
        engine.run(spec, sink, kill, || {}).await
    });
    wait_until(|| {
        f.sink
            .texts(Stream::Stdout)
            .contains(&"ready".to_owned())
            .then_some(())
    })
    .await;
    assert_eq!(f.leftovers().len(), 3, "task, sidecar and network exist");
    task.abort();
    assert!(task.await.is_err(), "aborted");
    wait_until(|| f.leftovers().is_empty().then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_kill_of_a_task_that_ignores_sigterm() {
    let Some(f) = Fixture::new("sigkill").await else {
        return;
    };
    let spec = f.spec("trap '' TERM; echo ready; while true; do sleep 1; done");
    let (requests, kill) = watch::channel(None);
    let run = f.engine.run(spec, f.sink.clone(), kill, || {});
    let killer = async {
        wait_until(|| {
            f.sink
                .texts(Stream::Stdout)
                .contains(&"ready".to_owned())
                .then_some(())
        })
        .await;
        requests.send_replace(Some(KillMode::Graceful));
        requests.send_replace(Some(KillMode::Immediate));
    };
    let (outcome, ()) = bounded(async { tokio::join!(run, killer) }).await;
    assert_eq!(outcome.termination, Termination::Signaled(9), "{outcome:?}");
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

/// Two attempts at once, each with a sidecar named `web`: each task reaches
/// its own by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_are_reachable_by_name_and_private() {
    let Some(f) = Fixture::new("sidecar").await else {
        return;
    };
    let Some(g) = Fixture::new("sidecar2").await else {
        return;
    };
    let spec = |fixture: &Fixture, body: &str| {
        // Debian's static busybox cannot resolve names through libc (static
        // glibc has no NSS; its wget crashes), so the task asks Docker's DNS
        // with nslookup, which has its own resolver, and speaks HTTP with nc.
        let mut spec = fixture.spec(
            "for i in $(seq 100); do \
               ip=$(nslookup web 2>/dev/null | sed -n 's/^Address: *\\([0-9.]*\\)$/\\1/p' | tail -n 1); \
               if [ -n \"$ip\" ]; then \
                 body=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc \"$ip\" 8080 2>/dev/null | tail -n 1); \
                 if [ -n \"$body\" ]; then echo \"$body\"; exit 0; fi; \
               fi; \
               sleep 0.1; \
             done; echo 'web never answered' >&2; exit 1",
        );
        spec.services = vec![ServiceSpec {
            name: "web".to_owned(),
            image: IMAGE.to_owned(),
            env: vec![("BODY".to_owned(), body.to_owned())],
            command: Some(vec![
                "sh".to_owned(),
                "-c".to_owned(),
                "mkdir -p /www && echo \"$BODY\" > /www/index.html && \
                 exec httpd -f -p 8080 -h /www"
                    .to_owned(),
            ]),
        }];
        spec
    };
    let (one, two) = tokio::join!(f.run(spec(&f, "first")), g.run(spec(&g, "second")));
    let stderr = (f.sink.texts(Stream::Stderr), g.sink.texts(Stream::Stderr));
    assert_eq!(
        one.termination,
        Termination::Exited(0),
        "{one:?} {stderr:?}"
    );
    assert_eq!(
        two.termination,
        Termination::Exited(0),
        "{two:?} {stderr:?}"
    );
    assert_eq!(f.sink.texts(Stream::Stdout), ["first"]);
    assert_eq!(g.sink.texts(Stream::Stdout), ["second"]);
    assert_eq!(f.leftovers(), Vec::<String>::new());
    assert_eq!(g.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_apply() {
    let Some(f) = Fixture::new("limits").await else {
        return;
    };
    let mut spec = f.spec(
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max; \
         cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max",
    );
    spec.resources = Resources {
        cpu: Some(0.5),
        memory: Some(64 << 20),
        pids: Some(50),
    };
    let outcome = f.run(spec).await;
    assert_eq!(outcome.termination, Termination::Exited(0), "{outcome:?}");
    assert_eq!(f.sink.texts(Stream::Stdout), ["67108864", "50", "50000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_orphans_removes_what_a_dead_agent_left() {
    let Some(f) = Fixture::new("orphans").await else {
        return;
    };
    let label = format!("ganger.agent={}", f.agent);
    let network = format!("{}-net", f.agent);
    for args in [
        vec!["network", "create", "--label", &label, &network],
        vec!["run", "-d", "--label", &label, IMAGE, "sleep", "300"],
        vec!["create", "--label", &label, IMAGE, "true"],
    ] {
        let status = Command::new("docker")
            .args(&args)
            .output()
            .expect("docker CLI")
            .status;
        assert!(status.success(), "docker {args:?}");
    }
    assert_eq!(f.leftovers().len(), 3);
    let removed = bounded(f.engine.remove_orphans(&f.agent))
        .await
        .expect("remove orphans");
    assert_eq!(removed, 3);
    assert_eq!(f.leftovers(), Vec::<String>::new());
    // Another agent's containers are not touched: there are none of ours left
    // to remove, and a second call finds nothing.
    assert_eq!(f.engine.remove_orphans(&f.agent).await.expect("again"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_with_pull_never_fails_clearly() {
    let Some(f) = Fixture::new("noimage").await else {
        return;
    };
    let mut spec = f.spec("true");
    spec.image = "ganger-test-missing:never".to_owned();
    spec.services = vec![ServiceSpec {
        name: "db".to_owned(),
        image: IMAGE.to_owned(),
        env: Vec::new(),
        command: Some(vec!["sleep".to_owned(), "300".to_owned()]),
    }];
    let outcome = f.run(spec).await;
    let message = failure(&outcome);
    assert!(
        message.contains("`ganger-test-missing:never` is not on this host")
            && message.contains("pull: never")
            && message.contains("docker load"),
        "{message}"
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_start_leaves_nothing() {
    let Some(f) = Fixture::new("badservice").await else {
        return;
    };
    let mut spec = f.spec("true");
    spec.services = vec![
        ServiceSpec {
            name: "ok".to_owned(),
            image: IMAGE.to_owned(),
            env: Vec::new(),
            command: Some(vec!["sleep".to_owned(), "300".to_owned()]),
        },
        ServiceSpec {
            name: "broken".to_owned(),
            image: IMAGE.to_owned(),
            env: Vec::new(),
            command: Some(vec!["/no/such/program".to_owned()]),
        },
    ];
    let outcome = f.run(spec).await;
    let message = failure(&outcome);
    assert!(
        message.contains("service `broken`") && message.contains("/no/such/program"),
        "{message}"
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_fails_to_start_and_leaves_nothing() {
    let Some(f) = Fixture::new("baduser").await else {
        return;
    };
    let mut spec = f.spec("true");
    spec.user = Some("nosuchuser".to_owned());
    let outcome = f.run(spec).await;
    let message = failure(&outcome);
    assert!(
        message.contains("cannot start") && message.contains("nosuchuser"),
        "{message}"
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_volumes_fail_before_anything_is_created() {
    let Some(f) = Fixture::new("volume").await else {
        return;
    };
    let mut spec = f.spec("true");
    spec.volumes = vec!["relative/path:/x".to_owned(), "::".to_owned()];
    let outcome = f.run(spec).await;
    let message = failure(&outcome);
    assert!(
        message.contains("\"relative/path:/x\"")
            && message.contains("relative paths are not allowed")
            && message.contains("\"::\""),
        "{message}"
    );
    assert_eq!(f.leftovers(), Vec::<String>::new());
    assert!(!f.workspace().exists(), "nothing is prepared either");
}

#[tokio::test]
async fn unreachable_engine_is_a_clear_connect_error() {
    let error = DockerEngine::connect_with_host("unix:///nonexistent")
        .await
        .expect_err("no engine there");
    assert!(matches!(error, DockerError::NoSocket { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("/nonexistent") && message.contains("DOCKER_HOST"),
        "{message}"
    );

    let error = DockerEngine::connect_with_host("tcp://127.0.0.1:2375")
        .await
        .expect_err("tcp is not supported");
    assert!(error.to_string().contains("unix socket only"), "{error}");

    // A socket that exists but where no engine listens.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let error = DockerEngine::connect_with_host(&format!("unix://{}", path.display()))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(error, DockerError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("docker info"), "{error}");
}
