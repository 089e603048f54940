//! hybridnet lab: the whole system on one Linux host, with nodes, a ToR and pods as network
//! namespaces, the real operator, node agents and CNI plugin, and kube-lite as the API server.

pub mod cluster;
pub mod cni_runtime;
pub mod containerd;
pub mod cri;
pub mod cri_agent;
pub mod cri_node;
pub mod demo;
pub mod kubelet;
pub mod netns;
pub mod proxy;
pub mod scheduler;
pub mod state;
pub mod supervisor;
pub mod topology;
