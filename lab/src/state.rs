//! Where a lab keeps its files: `/run/hybridnet-lab/<id>/` (kubeconfigs, logs, pid files, each
//! node's CNI directories and agent socket); in a lab of two clusters, the second cluster's in
//! `/run/hybridnet-lab/<id>/c1/`. `down` removes the whole folder.

use std::path::{Path, PathBuf};

/// Root of every lab's state.
pub const STATE_ROOT: &str = "/run/hybridnet-lab";

/// The files of one lab.
#[derive(Debug, Clone)]
pub struct LabDirs {
    pub root: PathBuf,
}

impl LabDirs {
    pub fn new(id: &str) -> Self {
        Self::under(Path::new(STATE_ROOT), id)
    }

    pub fn under(base: &Path, id: &str) -> Self {
        Self {
            root: base.join(id),
        }
    }

    /// The files of cluster `cluster` of the lab (cluster 0's are the lab's own).
    pub fn cluster(&self, cluster: u32) -> LabDirs {
        match cluster {
            0 => self.clone(),
            c => LabDirs {
                root: self.root.join(format!("c{c}")),
            },
        }
    }

    /// In a lab of several clusters: a kubeconfig with one context per cluster (`c0`, `c1`) and
    /// the servers' addresses inside the lab, for kubectl run in a lab namespace (`cluster
    /// connect` writes these addresses into the RemoteClusters).
    pub fn clusters_kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig.clusters")
    }

    /// Kubeconfig for the host's kubectl (server on 127.0.0.1).
    pub fn host_kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig")
    }

    /// Kubeconfig for processes inside the lab (server on the node segment).
    pub fn lab_kubeconfig(&self) -> PathBuf {
        self.root.join("kubeconfig.lab")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn pids(&self) -> PathBuf {
        self.root.join("pids")
    }

    /// Per-node folder: `cni/bin`, `cni/net.d`, `run` (agent socket).
    pub fn node(&self, node: &str) -> PathBuf {
        self.root.join("nodes").join(node)
    }

    pub fn cni_bin(&self, node: &str) -> PathBuf {
        self.node(node).join("cni/bin")
    }

    pub fn cni_conf(&self, node: &str) -> PathBuf {
        self.node(node).join("cni/net.d")
    }

    pub fn agent_run(&self, node: &str) -> PathBuf {
        self.node(node).join("run")
    }

    pub fn create(&self) -> std::io::Result<()> {
        for d in [self.logs(), self.pids()] {
            std::fs::create_dir_all(d)?;
        }
        Ok(())
    }
}
