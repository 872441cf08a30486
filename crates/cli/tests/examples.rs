//! The shipped examples run green with `ganger run`, offline, as the README
//! promises; the Formicary one also shows its failure path (undo).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Case, examples};

fn example(name: &str) -> Case {
    Case::file(examples().join(name)).no_dir()
}

#[test]
fn prunner_pipeline_runs_green() {
    let run = example("prunner-pipeline.yml").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("fetch_content", "succeeded"),
            ("render_pages", "succeeded"),
            ("render_assets", "succeeded"),
            ("publish", "succeeded"),
        ],
    );
    let published = run.case.workdir().join("publish/public");
    for file in ["index.html", "about.html", "blog.html", "site.css"] {
        assert!(published.join(file).exists(), "{file} not published\n{run}");
    }
}

#[test]
fn formicary_routing_runs_green() {
    let run = example("formicary-routing.yml").run();
    run.expect_code(0).expect(
        "succeeded",
        &[
            ("fetch", "succeeded"),
            ("lint", "failed"),
            ("lint-report", "succeeded"),
            ("test", "failed"),
            ("quarantine-report", "succeeded"),
            ("deploy", "succeeded"),
            ("smoke-test", "succeeded"),
            ("page-on-call", "skipped"),
            ("cleanup", "succeeded"),
        ],
    );
    assert_eq!(run.task("fetch")["attempt"], 2, "retried once\n{run}");
    assert_eq!(run.task("test")["exit_code"], 101, "\n{run}");
    assert!(
        run.case.workdir().join("releases/app-1.4.2.txt").exists(),
        "\n{run}"
    );
}

#[test]
fn formicary_routing_undoes_the_deploy_when_the_smoke_test_fails() {
    let run = example("formicary-routing.yml")
        .param("smoke_test", "fail")
        .run();
    run.expect_code(1).expect(
        "failed",
        &[
            ("deploy", "succeeded"),
            ("smoke-test", "failed"),
            ("page-on-call", "succeeded"),
            ("cleanup", "succeeded"),
        ],
    );
    assert_eq!(run.task("deploy")["undo"]["status"], "succeeded", "\n{run}");
    assert!(
        !run.case.workdir().join("releases/app-1.4.2.txt").exists(),
        "the undo removed the release\n{run}"
    );
}
