//! The agent's start-up kernel check (`hybridnet_node::agent::kernelcheck`) against this kernel:
//! VXLAN, policy routing and nftables inet NAT are found; an nft that fails or is missing is
//! reported by name; the probes leave nothing in the test's namespace (they run in a throwaway
//! one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::os::unix::fs::PermissionsExt;

use hybridnet_node::agent::kernelcheck::{
    NFT_INET_NAT, POLICY_ROUTING, VXLAN, probe_kernel, verdict,
};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_test_support::{Netns, may_run, sh};

#[test]
fn this_kernel_has_what_the_agent_needs_and_failures_name_the_feature() {
    if !may_run("kernel_check", &["ip", "nft"]) {
        return;
    }
    // Run from inside a test namespace, so that "leaves nothing behind" is checked where the
    // probing thread started.
    let ns = Netns::new("kchk");
    let probes = run_in_netns(&ns.name, |_| async {
        probe_kernel("nft").map_err(anyhow::Error::msg)
    })
    .unwrap();
    let features: Vec<&str> = probes.iter().map(|p| p.feature).collect();
    assert_eq!(features, [VXLAN, POLICY_ROUTING, NFT_INET_NAT]);
    assert_eq!(verdict(&probes), Ok(()), "{probes:?}");
    let links = ns.ip("-o link show");
    assert!(!links.contains("hnprobe"), "{links}");
    let ruleset = sh(&["ip", "netns", "exec", &ns.name, "nft", "list", "ruleset"]);
    assert!(!ruleset.contains("hybridnet_probe"), "{ruleset}");

    // An nft that the kernel refuses (as a kernel without inet NAT answers) and a missing nft.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: No such file or directory' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_string_lossy().to_string();
    let missing = dir.path().join("no-such-nft").to_string_lossy().to_string();
    for (nft, said) in [
        (fake, "Could not process rule: No such file or directory"),
        (missing, "cannot run"),
    ] {
        let bin = nft.clone();
        let probes = run_in_netns(&ns.name, move |_| async move {
            probe_kernel(&bin).map_err(anyhow::Error::msg)
        })
        .unwrap();
        let e = verdict(&probes).unwrap_err();
        assert!(
            e.contains("nftables inet NAT") && e.contains(said),
            "{nft}: {e}"
        );
        assert!(!e.contains("VXLAN") && !e.contains("policy routing"), "{e}");
    }
}
