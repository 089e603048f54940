//! Cluster lifecycle: HybridnetCluster reconciler, manifest rendering, certificates, OLM bundle (issue 7).
