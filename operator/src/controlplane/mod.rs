//! Network control plane: IPAM controllers, status, node labels and taints, leak detection, leadership (issue 5).
