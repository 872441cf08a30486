use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Scripts above this size go through a file: a long `-c` argument can hit
/// the kernel's limit on one argument (128 KiB on Linux) or on argv+envp.
pub(crate) const INLINE_SCRIPT_MAX: usize = 100 * 1024;

/// The shell that runs scripts, resolved to an absolute path.
///
/// The path must be absolute: the child's environment is replaced, and when a
/// replaced environment carries `PATH` and the program is a bare name, std
/// gives up on `posix_spawn` and forks (see `process.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shell {
    pub(crate) path: PathBuf,
    /// Options before the script: fail on the first failing command, and with
    /// bash on a failure anywhere in a pipeline.
    pub(crate) flags: &'static [&'static str],
}

/// Where the script comes from.
pub(crate) enum Script<'a> {
    Inline(&'a str),
    File(&'a Path),
}

impl Shell {
    /// Arguments after the program name.
    pub(crate) fn args(&self, script: &Script<'_>) -> Vec<OsString> {
        let mut args: Vec<OsString> = self.flags.iter().map(OsString::from).collect();
        match script {
            Script::Inline(text) => {
                args.push("-c".into());
                args.push(text.into());
            }
            Script::File(path) => args.push(path.as_os_str().to_owned()),
        }
        args
    }
}

/// The shell for this process, looked up on the server's own `PATH` once:
/// the lookup touches the file system and the answer does not change.
pub(crate) fn shell() -> &'static Shell {
    static SHELL: OnceLock<Shell> = OnceLock::new();
    SHELL.get_or_init(|| resolve(std::env::var_os("PATH").as_deref()))
}

pub(crate) fn resolve(path_var: Option<&OsStr>) -> Shell {
    if let Some(bash) = find_executable("bash", path_var) {
        return Shell {
            path: bash,
            flags: &["-eo", "pipefail"],
        };
    }
    Shell {
        // POSIX guarantees /bin/sh, so it is the answer even when PATH is
        // empty or unset.
        path: find_executable("sh", path_var).unwrap_or_else(|| PathBuf::from("/bin/sh")),
        flags: &["-e"],
    }
}

fn find_executable(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    std::env::split_paths(path_var)
        // A relative PATH entry would resolve against whatever the cwd is when
        // a task starts; only absolute ones give a stable answer.
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn prefers_bash_with_pipefail() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["bash", "sh"] {
            symlink("/bin/sh", dir.path().join(name)).expect("symlink");
        }
        let shell = resolve(Some(dir.path().as_os_str()));
        assert_eq!(shell.path, dir.path().join("bash"));
        assert_eq!(shell.flags, &["-eo", "pipefail"]);
    }

    #[test]
    fn falls_back_to_sh_without_bash() {
        let dir = tempfile::tempdir().expect("tempdir");
        symlink("/bin/sh", dir.path().join("sh")).expect("symlink");
        // A non-executable "bash" must not be picked.
        std::fs::write(dir.path().join("bash"), "").expect("write");
        let shell = resolve(Some(dir.path().as_os_str()));
        assert_eq!(shell.path, dir.path().join("sh"));
        assert_eq!(shell.flags, &["-e"]);
    }

    #[test]
    fn falls_back_to_bin_sh_without_path() {
        assert_eq!(resolve(None).path, PathBuf::from("/bin/sh"));
        let empty = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            resolve(Some(empty.path().as_os_str())).path,
            PathBuf::from("/bin/sh")
        );
    }

    #[test]
    fn builds_arguments() {
        let shell = Shell {
            path: "/bin/bash".into(),
            flags: &["-eo", "pipefail"],
        };
        assert_eq!(
            shell.args(&Script::Inline("echo hi")),
            ["-eo", "pipefail", "-c", "echo hi"].map(OsString::from)
        );
        assert_eq!(
            shell.args(&Script::File(Path::new("/tmp/s.sh"))),
            ["-eo", "pipefail", "/tmp/s.sh"].map(OsString::from)
        );
    }
}
