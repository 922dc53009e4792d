//! `holdfast check FILE` and `holdfast serve` argument handling, through the real binary:
//! every parse error with file, line, key and fix; warnings with their line; comments need no
//! variables; `--config` refuses the quick-mode flags it would ignore.

use std::path::PathBuf;
use std::process::Command;

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("holdfast-check-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write config");
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// (exit code, stdout, stderr)
fn holdfast(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(args)
        .env_remove("QA_NOT_SET")
        .output()
        .expect("holdfast runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_unknown_key_with_line_key_and_fix() {
    let file = TempFile::new(
        "c3.toml",
        "[server]\nlistne = [\"127.0.0.1:8080\"]\n\n[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\"]\nbalanse = \"round_robin\"\n\n[[routes]]\nfoo = 1\nupstream = \"a\"\n",
    );
    let (code, _, stderr) = holdfast(&["check", file.path()]);
    assert_eq!(code, 1, "{stderr}");
    let p = file.path();
    for want in [
        format!("{p}:2: `server.listne`: unknown key `listne` in `server` (fix: did you mean `listen`?"),
        format!("{p}:6: `upstreams.a.balanse`: unknown key `balanse` in `upstreams.a` (fix: did you mean `balance`?"),
        format!("{p}:9: `routes[0].foo`: unknown key `foo` in `routes[0]` (fix: remove it"),
        format!("{p}: 3 error(s)"),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn check_names_the_key_of_type_and_syntax_errors() {
    let typed = TempFile::new(
        "typed.toml",
        "[server]\nclient_idle_timeout_ms = \"abc\"\n[upstreams.a]\ntargets = [\"http://h:1\"]\n[[routes]]\nupstream = \"a\"\n",
    );
    let (code, _, stderr) = holdfast(&["check", typed.path()]);
    assert_eq!(code, 1, "{stderr}");
    let want = format!(
        "{}:2: `server.client_idle_timeout_ms`: expected a whole number",
        typed.path()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(stderr.contains("client_idle_timeout_ms = 5000"), "{stderr}");
    assert!(!stderr.contains("``"), "{stderr}");

    let syntax = TempFile::new(
        "syntax.toml",
        "[server]\nlisten = [\"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9901\"\n",
    );
    let (code, _, stderr) = holdfast(&["check", syntax.path()]);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("{}:2: `server.listen`: TOML syntax error", syntax.path());
    assert!(stderr.contains(&want), "{stderr}");
}

#[test]
fn check_ignores_variables_in_comments_and_puts_warnings_on_their_line() {
    let file = TempFile::new(
        "warn.toml",
        "# Set ${QA_NOT_SET} to your port\n[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\"] # ${QA_NOT_SET}\nidle_timeout_ms = 10000\nserver_keepalive_timeout_ms = 5000\n[[routes]]\nname = \"all\"\nupstream = \"a\"\n[[routes]]\nname = \"api\"\npath_prefix = \"/api/\"\nupstream = \"a\"\n",
    );
    let (code, stdout, stderr) = holdfast(&["check", file.path()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("2 warning(s)"), "{stdout}");
    let p = file.path();
    assert!(
        stderr.contains(&format!("{p}:4: warning: `upstreams.a.idle_timeout_ms`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:9: warning: `routes[1]`: route `api` can never match"
        )),
        "{stderr}"
    );
}

#[test]
fn check_refuses_listeners_that_serve_could_not_bind() {
    let file = TempFile::new(
        "bind.toml",
        "[server]\nlisten = [\"127.0.0.1:18080\", \"127.0.0.1:18080\"]\nadmin = \"127.0.0.1:18080\"\n[upstreams.a]\ntargets = [\"http://h:1\"]\n[[routes]]\nupstream = \"a\"\n",
    );
    let (code, _, stderr) = holdfast(&["check", file.path()]);
    assert_eq!(code, 1, "{stderr}");
    let p = file.path();
    assert!(
        stderr.contains(&format!("{p}:2: `server.listen[1]`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}:3: `server.admin`")),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_quick_mode_flags_with_a_config() {
    // The file does not even parse: were a flag accepted, serve would fail on the file
    // instead (exit 1) rather than on the arguments (clap's exit 2).
    let file = TempFile::new("serve.toml", "[server\n");
    for flags in [
        &["--listen", "127.0.0.1:0"][..],
        &["--admin", "127.0.0.1:0"][..],
        &["--demo"][..],
        &["--upstream", "http://127.0.0.1:9000"][..],
    ] {
        let mut args = vec!["serve", "--config", file.path()];
        args.extend_from_slice(flags);
        let (code, _, stderr) = holdfast(&args);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(
            stderr.contains("cannot be used with"),
            "{flags:?}: {stderr}"
        );
        assert!(stderr.contains(flags[0]), "{flags:?}: {stderr}");
    }
    // --workers still goes with --config.
    let (code, _, stderr) = holdfast(&["serve", "--config", file.path(), "--workers", "1"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("TOML syntax error"), "{stderr}");
}

#[test]
fn an_access_log_that_cannot_be_written_is_reported_on_its_line_without_creating_files() {
    let missing_dir =
        std::env::temp_dir().join(format!("holdfast-no-such-dir-{}", std::process::id()));
    let file = TempFile::new(
        "log.toml",
        &format!(
            "[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\"]\n\n[server]\naccess_log = \"{}/x.log\"\n\n[[routes]]\nupstream = \"a\"\n",
            missing_dir.display()
        ),
    );
    let (code, _, stderr) = holdfast(&["check", file.path()]);
    assert_eq!(code, 1, "{stderr}");
    let want = format!("{}:5: `server.access_log`: cannot append to", file.path());
    assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    assert!(!missing_dir.exists());
    // A writable place that does not hold the file yet: valid, and check does not create it.
    let log = std::env::temp_dir().join(format!("holdfast-check-log-{}.log", std::process::id()));
    let file = TempFile::new(
        "log2.toml",
        &format!(
            "[server]\naccess_log = \"{}\"\n[upstreams.a]\ntargets = [\"http://127.0.0.1:9000\"]\n[[routes]]\nupstream = \"a\"\n",
            log.display()
        ),
    );
    let (code, stdout, stderr) = holdfast(&["check", file.path()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!log.exists(), "check created {}", log.display());
}
