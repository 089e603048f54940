//! The real `hybridnet-node` binary refusing to start on a kernel check failure (an nft that the
//! kernel refuses, as a kernel without inet NAT answers): it exits non-zero and, before that,
//! records why on its NodeInfo (`hybridnet.io/kernel-check`, what `kubectl hybridnet status`
//! lists). Started again with a working nft, it removes the report and runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;
use hybridnet_api::v1::NodeInfo;
use hybridnet_node::agent::kernelcheck::KERNEL_CHECK_ANNOTATION;
use hybridnet_node::plan::ROUTE_TABLES_ANNOTATION;
use kube::Api;

fn annotations(cp: &ControlPlane) -> Option<std::collections::BTreeMap<String, String>> {
    cp.run(|c| async move {
        Api::<NodeInfo>::all(c)
            .get_opt("n1")
            .await
            .unwrap()
            .map(|n| n.metadata.annotations.unwrap_or_default())
    })
}

#[test]
fn a_refused_start_is_recorded_on_the_nodeinfo_and_cleared_by_a_passing_one() {
    if !require_root("a_refused_start_is_recorded_on_the_nodeinfo_and_cleared_by_a_passing_one")
        || !may_run("kernel_check_agent", &["ip", "nft"])
    {
        return;
    }
    let (_sw, cpns, n1) = l2_segment();
    let cp = ControlPlane::start(&cpns, "198.18.0.250");
    cp.create(&node_object("n1", &["198.18.0.11"]));

    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: No such file or directory' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.to_string_lossy().to_string();

    let mut agent = start_agent(&n1, "n1", &cp.kubeconfig, 11021, &["--nft-binary", &fake]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "{status}");
    let log = std::fs::read_to_string(&agent.1).unwrap();
    assert!(log.contains("nftables inet NAT"), "{log}");
    let a = annotations(&cp).expect("the refusal created the NodeInfo");
    let report = &a[KERNEL_CHECK_ANNOTATION];
    assert!(
        report.contains("nftables inet NAT") && report.contains("Could not process rule"),
        "{report}"
    );
    assert!(
        !report.contains("VXLAN ("),
        "only the missing feature: {report}"
    );
    drop(agent);

    // The kernel is fine after all (a working nft): the report goes, the agent runs and
    // publishes its own annotations.
    let _agent = start_agent(&n1, "n1", &cp.kubeconfig, 11021, &[]);
    let a = wait_for("the kernel check report removed", 60, || {
        annotations(&cp).filter(|a| {
            !a.contains_key(KERNEL_CHECK_ANNOTATION) && a.contains_key(ROUTE_TABLES_ANNOTATION)
        })
    });
    assert!(!a.contains_key(KERNEL_CHECK_ANNOTATION), "{a:?}");
}
