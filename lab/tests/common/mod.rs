//! The lab harness the lab's test suites share: a lab that is always taken down, and kubectl
//! against it with the workspace's kubectl plugin on PATH.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use hybridnet_lab::state::LabDirs;

pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hybridnet-lab"))
}

/// A lab that is always taken down, also when the test fails.
pub struct Lab {
    pub id: String,
}

impl Lab {
    /// `hybridnet-lab up` under an id of `prefix` and this process; on failure the panic carries
    /// the tail of every log of the lab.
    pub fn up(prefix: &str, nodes: u32, underlay: u32, bgp: u32) -> Self {
        Self::up_with(prefix, nodes, underlay, bgp, &[])
    }

    /// [`Lab::up`] with more arguments of `up` (e.g. `--runtime containerd`).
    pub fn up_with(prefix: &str, nodes: u32, underlay: u32, bgp: u32, extra: &[&str]) -> Self {
        let lab = Lab {
            id: format!("{prefix}{}", std::process::id() % 1000),
        };
        let out = Command::new(lab_bin())
            .args([
                "--id",
                &lab.id,
                "up",
                "--nodes",
                &nodes.to_string(),
                "--underlay-nodes",
                &underlay.to_string(),
                "--bgp-nodes",
                &bgp.to_string(),
            ])
            .args(extra)
            .output()
            .unwrap();
        if !out.status.success() {
            let logs = LabDirs::new(&lab.id).logs();
            let mut all = String::new();
            for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                all.push_str(&format!(
                    "--- {}\n{}\n",
                    e.path().display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            panic!(
                "lab up failed: {}\n{all}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lab
    }

    pub fn dirs(&self) -> LabDirs {
        LabDirs::new(&self.id)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(lab_bin())
            .args(["--id", &self.id, "down"])
            .status();
    }
}

/// Runs kubectl against the lab (the host kubeconfig, the workspace's `kubectl-hybridnet` on
/// PATH): exit code and stdout followed by stderr.
pub fn kubectl_status(dirs: &LabDirs, args: &[&str]) -> (i32, String) {
    let bin_dir = lab_bin().parent().unwrap().to_path_buf();
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", dirs.host_kubeconfig())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// [`kubectl_status`] when only the output matters.
pub fn kubectl(dirs: &LabDirs, args: &[&str]) -> String {
    kubectl_status(dirs, args).1
}
