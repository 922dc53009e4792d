//! Shared by the `holdfast admin` CLI tests: a real admin API on a real SQLite file in a
//! temporary directory (loopback listener), and running `holdfast admin` against it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

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

/// `holdfast admin --url URL --token TOKEN ARGS` with `env` (and without an inherited
/// `HOLDFAST_TENANT` or `RUST_BACKTRACE`): (success, stdout, stderr).
pub fn admin(
    url: &str,
    token: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("admin")
        .args(["--url", url, "--token", token])
        .args(args)
        .env_remove("HOLDFAST_TENANT")
        .env_remove("RUST_BACKTRACE")
        .envs(env.iter().copied())
        .output()
        .expect("holdfast runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
