//! `tcpdump` recordings inside a namespace.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::LabError;
use crate::netns::{describe, Netns};

/// How long tcpdump may take to report that it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `tcpdump`; [`Recording::stop`] ends it and flushes the file. Dropping it without
/// `stop` kills tcpdump too, but the file may then be incomplete.
#[derive(Debug)]
pub struct Recording {
    child: Option<Child>,
    path: PathBuf,
}

impl Recording {
    pub(crate) fn start(
        netns: &Netns,
        interface: &str,
        path: &Path,
        filter: &[&str],
    ) -> Result<Self, LabError> {
        let path_text = path.to_string_lossy().into_owned();
        let mut args = vec![
            "-i",
            interface,
            "-n",
            "-U",
            "-s",
            "0",
            "-w",
            path_text.as_str(),
        ];
        // tcpdump drops root privileges by default and then cannot write the file.
        args.extend(["-Z", "root"]);
        args.extend_from_slice(filter);
        let mut command = netns.command("tcpdump", &args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| LabError::Spawn {
            command: describe(&command),
            source,
        })?;
        let stderr = child.stderr.take();
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let Some(stderr) = stderr else { return };
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if ready_tx.send(line).is_err() {
                    // Nobody listens any more: keep draining so tcpdump never blocks.
                    continue;
                }
            }
        });
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match ready_rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LabError::RecorderNotReady {
                        netns: netns.name().to_string(),
                        seconds: READY_TIMEOUT.as_secs(),
                        detail: seen.trim().to_string(),
                    });
                }
            }
        }
        Ok(Self {
            child: Some(child),
            path: path.to_path_buf(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops tcpdump with SIGINT (so it flushes and closes the file) and waits for it.
    pub fn stop(mut self) -> Result<PathBuf, LabError> {
        // Give in-flight packets a moment to reach the capture buffer.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(child) = self.child.take() {
            interrupt_and_wait(child);
        }
        Ok(self.path.clone())
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            interrupt_and_wait(child);
        }
    }
}

/// Sends SIGINT to `child` (the `ip netns exec` process execs tcpdump, so the pid is tcpdump's)
/// and waits up to a few seconds before killing it.
fn interrupt_and_wait(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
    }
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
