//! Shared by the `holdfast admin` CLI tests: a real admin API on a real SQLite file in a
//! temporary directory (loopback listener), and running `holdfast admin` against it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use holdfast_admin::Management;
use holdfast_core::config::management::{AdminRole, AdminToken, ManagementConfig, StoreUrl};

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("holdfast-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A management config on `dir/m.db` with one super-admin `token`.
pub fn super_admin_config(dir: &TempDir, token: &str) -> ManagementConfig {
    ManagementConfig {
        store: StoreUrl::Sqlite(dir.0.join("m.db").to_string_lossy().into_owned()),
        secret: "cli-secret-0123456789abcdef".into(),
        admin_tokens: vec![AdminToken {
            token: token.into(),
            role: AdminRole::SuperAdmin,
            tenant: None,
        }],
        ..ManagementConfig::default()
    }
}

/// Starts `cfg`'s management and serves its admin API on a loopback listener: (its URL, the
/// management).
pub async fn start_admin(cfg: &ManagementConfig) -> (String, Arc<Management>) {
    let m = Management::start(cfg).await.expect("start");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let router = m.router();
    tokio::spawn(async move { axum::serve(l, router).await });
    (format!("http://{addr}"), m)
}

/// [`start_admin`] on `rt`: the admin API's URL.
pub fn serve_admin(rt: &tokio::runtime::Runtime, cfg: &ManagementConfig) -> String {
    rt.block_on(start_admin(cfg)).0
}

/// `holdfast admin --url URL --token TOKEN ARGS` with `env` (and without an inherited
/// `HOLDFAST_TENANT` or `RUST_BACKTRACE`): (success, stdout, stderr).
pub fn admin(
    url: &str,
    token: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("admin")
            .args(["--url", url, "--token", token])
            .args(args)
            .env_remove("HOLDFAST_TENANT")
            .env_remove("RUST_BACKTRACE")
            .envs(env.iter().copied()),
    )
}

/// `holdfast admin ARGS` with exactly these arguments (no `--url`/`--token` added) and no
/// inherited admin environment: (success, stdout, stderr).
pub fn admin_raw(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .arg("admin")
            .args(args)
            .env_remove("HOLDFAST_TENANT")
            .env_remove("HOLDFAST_ADMIN_URL")
            .env_remove("HOLDFAST_ADMIN_TOKEN")
            .env_remove("RUST_BACKTRACE")
            .envs(env.iter().copied()),
    )
}

/// Runs `command`: (success, stdout, stderr).
fn outcome(command: &mut Command) -> (bool, String, String) {
    let out = command.output().expect("holdfast runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
