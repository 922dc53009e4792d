//! One named network namespace and helpers to run commands inside it.

use std::process::{Child, Command, Output, Stdio};

use crate::capture::Recording;
use crate::error::LabError;

/// A network namespace owned by a [`crate::Lab`]. Commands run through `ip netns exec`.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn new(name: String) -> Self {
        Self { name }
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `Command` that runs `program args...` inside this namespace, not yet started.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args);
        command
    }

    /// Runs `program args...` in the namespace, waits, and fails on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, LabError> {
        run_checked(self.command(program, args))
    }

    /// Runs a shell snippet (`sh -c SCRIPT`) in the namespace and fails on a non-zero exit.
    pub fn sh(&self, script: &str) -> Result<Output, LabError> {
        self.run("sh", &["-c", script])
    }

    /// Starts `program args...` in the namespace in the background, with stdout and stderr
    /// piped. The caller owns the child; anything left running dies with the lab.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<Child, LabError> {
        let mut command = self.command(program, args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().map_err(|source| LabError::Spawn {
            command: describe(&command),
            source,
        })
    }

    /// Sets a sysctl inside the namespace, e.g. `("net.ipv4.tcp_syncookies", "0")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.run("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }

    /// Starts `tcpdump -i INTERFACE -w PATH FILTER...` in the namespace and waits until it
    /// listens. Stop it with [`Recording::stop`] to get a complete file.
    pub fn record(
        &self,
        interface: &str,
        path: &std::path::Path,
        filter: &[&str],
    ) -> Result<Recording, LabError> {
        Recording::start(self, interface, path, filter)
    }
}

/// Runs a command to completion and turns a failure exit into [`LabError::Failed`].
pub(crate) fn run_checked(mut command: Command) -> Result<Output, LabError> {
    let output = command.output().map_err(|source| LabError::Spawn {
        command: describe(&command),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::Failed {
            command: describe(&command),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The command line of `command`, for error messages.
pub(crate) fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
