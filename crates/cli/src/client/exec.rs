//! `ganger exec -- CMD [ARG]...`: one ad-hoc command as a one-task run.
//!
//! The API has no ad-hoc runs, so exec stores a fixed job named
//! `ganger.exec` whose one task evaluates its `command` parameter, then submits it with
//! the command line, shell-quoted, as that parameter. The definition only
//! changes with the tags, so repeated execs reuse one version.

use anyhow::{Context, bail};
use clap::Args;
use ganger_api::{ApplyResponse, SubmitRequest};

use super::conn::ConnArgs;
use super::submit::{WatchArgs, report, send};

/// The job that carries ad-hoc commands. Its name is one a person would
/// not pick, so `ganger exec` never versions over a user's own job.
pub(crate) const JOB: &str = "ganger.exec";

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// An agent label the command needs, as key=value or key (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = tag)]
    tags: Vec<String>,
    #[command(flatten)]
    watch: WatchArgs,
    #[command(flatten)]
    conn: ConnArgs,
    /// The command and its arguments (after `--` when they start with `-`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

pub(crate) async fn main(args: ExecArgs) -> anyhow::Result<u8> {
    let command = shell_line(&args.command)?;
    let api = args.conn.connect()?;
    let _: ApplyResponse = api
        .post_yaml(api.url(&["jobs"]), "ganger exec", definition(&args.tags))
        .await
        .context("cannot store the `exec` job that runs ad-hoc commands")?;
    let request = SubmitRequest {
        job: JOB.to_owned(),
        params: [("command".to_owned(), command)].into(),
        ..SubmitRequest::default()
    };
    let answer = send(&api, request).await?;
    report(&api, &answer, args.watch).await
}

/// The command line as one shell string that `eval` splits back into
/// exactly these words.
fn shell_line(argv: &[String]) -> anyhow::Result<String> {
    match shlex::try_join(argv.iter().map(String::as_str)) {
        Ok(line) => Ok(line),
        Err(e) => bail!("cannot pass this command to a shell: {e}"),
    }
}

/// A tag as job files accept it: `key` or `key=value`, the key of
/// letters, digits and `_./-`.
fn tag(s: &str) -> Result<String, String> {
    let key = s.split_once('=').map_or(s, |(k, _)| k);
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    if !key_ok {
        return Err(format!(
            "`{s}` is not a tag: write key=value or key, the key of letters, digits and `_./-`"
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("tag {s:?} holds a control character"));
    }
    Ok(s.to_owned())
}

/// The job file of `exec`. Each tag is written as a JSON string, which is
/// also a YAML double-quoted scalar, so no value can change the file's
/// structure.
fn definition(tags: &[String]) -> String {
    let mut yaml = String::from(
        r#"jobs:
  ganger.exec:
    description: ad-hoc commands started by `ganger exec`
    params:
      command: { required: true, description: "the command line, shell-quoted" }
    tasks:
      exec:
        run: eval "$GANGER_PARAM_COMMAND"
"#,
    );
    if !tags.is_empty() {
        let quoted: Vec<String> = tags
            .iter()
            .map(|t| serde_json::Value::from(t.as_str()).to_string())
            .collect();
        yaml.push_str(&format!("        tags: [{}]\n", quoted.join(", ")));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExecArgs,
    }

    #[test]
    fn takes_the_command_after_its_own_flags() -> anyhow::Result<()> {
        let a = Cli::try_parse_from([
            "exec", "--tag", "os=linux", "--wait", "--", "ls", "-l", "a b",
        ])?
        .args;
        assert_eq!(a.tags, ["os=linux"]);
        assert!(a.watch.wait);
        assert_eq!(a.command, ["ls", "-l", "a b"]);
        // Without `--`, flags after the command are the command's.
        let a = Cli::try_parse_from(["exec", "echo", "--wait"])?.args;
        assert!(!a.watch.wait);
        assert_eq!(a.command, ["echo", "--wait"]);
        assert!(Cli::try_parse_from(["exec"]).is_err());
        assert!(Cli::try_parse_from(["exec", "--tag", "bad key", "--", "true"]).is_err());
        Ok(())
    }

    #[test]
    fn the_command_line_is_quoted_word_for_word() -> anyhow::Result<()> {
        let argv: Vec<String> = ["printf", "%s\\n", "a b", "$HOME", "it's", ""]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let line = shell_line(&argv)?;
        assert_eq!(shlex::split(&line), Some(argv));
        assert!(shell_line(&["a\0b".to_owned()]).is_err());
        Ok(())
    }

    #[test]
    fn the_definition_is_a_valid_job() -> anyhow::Result<()> {
        for tags in [
            vec![],
            vec![
                "os=linux".to_owned(),
                "gpu".to_owned(),
                "q=\"x\": [y]".to_owned(),
            ],
        ] {
            let yaml = definition(&tags);
            let file = ganger_core::parse_job_file("exec", &yaml)
                .map_err(|d| anyhow::anyhow!("{d}\n{yaml}"))?;
            let job = &file.jobs[0];
            assert_eq!(job.name, JOB);
            assert_eq!(job.tasks.len(), 1);
            assert_eq!(job.tasks[0].name, "exec");
            assert_eq!(job.tasks[0].tags, tags);
        }
        Ok(())
    }
}
