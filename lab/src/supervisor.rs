//! Starting the lab's long-running processes inside namespaces, and stopping every one of them
//! again (also after `up` crashed: the pid files say what was started).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::state::LabDirs;

/// A process to start: its name (for logs and pid files), namespace and command line.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    /// Network namespace to run in (None: the host's, for the lab daemon only).
    pub netns: Option<String>,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

fn command_of(spec: &ProcessSpec) -> Command {
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts a process in the background (its own session, output to `logs/<name>.log`) and records
/// its pid. Returns the pid.
pub fn start(dirs: &LabDirs, spec: &ProcessSpec) -> anyhow::Result<u32> {
    let log_path = dirs.logs().join(format!("{}.log", spec.name));
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let err = log.try_clone()?;
    let mut cmd = command_of(spec);
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // A session of its own: the process outlives `hybridnet-lab up` and ^C of the terminal.
    // SAFETY: the closure runs in the forked child before exec and calls only setsid(2), which is
    // async-signal-safe, and allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    let pid = child.id();
    std::fs::write(dirs.pids().join(&spec.name), pid.to_string())?;
    Ok(pid)
}

/// Whether the process recorded as `name` is still running.
pub fn alive(dirs: &LabDirs, name: &str) -> bool {
    read_pid(&dirs.pids().join(name)).is_some_and(|p| kill(Pid::from_raw(p), None).is_ok())
}

/// The pid recorded for `name` (None: not started by the lab, or stopped).
pub fn pid(dirs: &LabDirs, name: &str) -> Option<i32> {
    read_pid(&dirs.pids().join(name))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Stops one recorded process: SIGTERM to its session, then SIGKILL after `grace`.
pub fn stop(dirs: &LabDirs, name: &str, grace: Duration) {
    let path = dirs.pids().join(name);
    if let Some(pid) = read_pid(&path) {
        // The process leads its own session and group: signal the whole group (ip netns exec
        // execs the program, so the pid is the program itself).
        let group = Pid::from_raw(-pid);
        let _ = kill(group, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && kill(Pid::from_raw(pid), None).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(group, Signal::SIGKILL);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(path);
}

/// Stops every recorded process of the lab.
pub fn stop_all(dirs: &LabDirs, grace: Duration) {
    let Ok(entries) = std::fs::read_dir(dirs.pids()) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(name) = e.file_name().to_str() {
            stop(dirs, name, grace);
        }
    }
}

/// Recorded process names.
pub fn names(dirs: &LabDirs) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dirs.pids())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    v.sort();
    v
}
