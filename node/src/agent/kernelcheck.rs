//! The kernel features the agent needs, checked once at start so a missing one stops the agent
//! with a message naming it instead of failing later in the middle of a data-plane apply.
//!
//! The probes run in a throwaway network namespace (a dedicated thread unshares its network
//! namespace; it and everything created in it go away with the thread), so the node's own
//! namespace is never touched: a VXLAN device is created, the IPv4 policy rules are listed, and
//! `nft --check` runs a transaction with an `inet` NAT chain that the kernel validates and aborts.

use std::process::Stdio;

use hybridnet_api::constants::{annotation, field_manager};
use hybridnet_api::v1::{IpVersion, NodeInfo};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rtnetlink::{Handle, LinkVxlan};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::dataplane::kernel;

/// Feature names, as the refusal message spells them.
pub const VXLAN: &str = "VXLAN devices (CONFIG_VXLAN)";
pub const POLICY_ROUTING: &str = "policy routing (CONFIG_IP_MULTIPLE_TABLES)";
pub const NFT_INET_NAT: &str =
    "nftables inet NAT (CONFIG_NF_TABLES_INET, CONFIG_NFT_NAT) and the nft program";

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub feature: &'static str,
    pub outcome: Result<(), String>,
}

/// Longest detail kept per probe in the message.
const MAX_DETAIL: usize = 200;

/// Turns the probe outcomes into the agent's verdict: every missing feature named, with what the
/// kernel said.
pub fn verdict(probes: &[Probe]) -> Result<(), String> {
    let missing: Vec<String> = probes
        .iter()
        .filter_map(|p| {
            p.outcome.as_ref().err().map(|why| {
                let why: String = why
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(MAX_DETAIL)
                    .collect();
                format!("{} ({})", p.feature, why.trim())
            })
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this kernel lacks what the node agent needs: {}; see docs/operations.md, \"Kubernetes floor\" (--check-kernel=false skips this check)",
            missing.join("; ")
        ))
    }
}

/// The nft script of the NAT probe: a table and an `inet` NAT base chain.
pub const NFT_PROBE: &str = "add table inet hybridnet_probe\nadd chain inet hybridnet_probe post { type nat hook postrouting priority 100 ; }\n";

async fn nft_check(nft_binary: &str) -> Result<(), String> {
    let mut child = Command::new(nft_binary)
        .args(["--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {nft_binary}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(NFT_PROBE.as_bytes())
            .await
            .map_err(|e| format!("write to {nft_binary}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("wait for {nft_binary}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft --check: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs the probes with `h`, a netlink handle of the namespace they may change.
pub async fn probes(h: &Handle, nft_binary: &str) -> Vec<Probe> {
    let vxlan = h
        .link()
        .add(LinkVxlan::new("hnprobe-vxlan", 42).port(4789).build())
        .execute()
        .await
        .map_err(|e| format!("create a VXLAN device: {e}"));
    let rules = kernel::rules(h, IpVersion::V4)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let nat = nft_check(nft_binary).await;
    vec![
        Probe {
            feature: VXLAN,
            outcome: vxlan,
        },
        Probe {
            feature: POLICY_ROUTING,
            outcome: rules,
        },
        Probe {
            feature: NFT_INET_NAT,
            outcome: nat,
        },
    ]
}

/// Runs [`probes`] in a throwaway network namespace. `Err` when no such namespace could be made
/// (then nothing was checked).
pub fn probe_kernel(nft_binary: &str) -> Result<Vec<Probe>, String> {
    let nft = nft_binary.to_string();
    std::thread::Builder::new()
        .name("kernel-check".into())
        .spawn(move || -> Result<Vec<Probe>, String> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare a network namespace for the kernel check: {e}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
                tokio::spawn(conn);
                Ok(probes(&handle, &nft).await)
            })
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the kernel check thread panicked".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(feature: &'static str, outcome: Result<(), &str>) -> Probe {
        Probe {
            feature,
            outcome: outcome.map_err(str::to_string),
        }
    }

    #[test]
    fn verdict_names_every_missing_feature() {
        assert_eq!(
            verdict(&[
                p(VXLAN, Ok(())),
                p(POLICY_ROUTING, Ok(())),
                p(NFT_INET_NAT, Ok(()))
            ]),
            Ok(())
        );
        let e = verdict(&[
            p(
                VXLAN,
                Err("create a VXLAN device: Operation not supported (os error 95)"),
            ),
            p(POLICY_ROUTING, Ok(())),
            p(
                NFT_INET_NAT,
                Err("nft --check: Error: Could not process rule: No such file or directory"),
            ),
        ])
        .unwrap_err();
        assert!(
            e.starts_with("this kernel lacks what the node agent needs: VXLAN devices (CONFIG_VXLAN) (create a VXLAN device: Operation not supported"),
            "{e}"
        );
        assert!(
            e.contains("nftables inet NAT") && e.contains("No such file"),
            "{e}"
        );
        assert!(!e.contains("policy routing"), "{e}");
        assert!(e.contains("--check-kernel=false"), "{e}");
        // A hostile or huge detail stays one short line.
        let long = format!("x\n{}", "y".repeat(10_000));
        let e = verdict(&[p(VXLAN, Err(&long))]).unwrap_err();
        assert!(!e.contains('\n') && e.len() < 600, "{}", e.len());
    }
}

/// NodeInfo annotation in which a node agent that refused to start says why (docs/operations.md,
/// "Kubernetes floor"); `kubectl hybridnet status` lists it.
pub const KERNEL_CHECK_ANNOTATION: &str = annotation::NODE_KERNEL_CHECK;

/// Longest report written (the verdict names at most three features with bounded details).
pub const MAX_REPORT_CHARS: usize = 2048;

/// The server-side apply body that records `refusal` on `node`'s NodeInfo (pure). It carries
/// an empty `spec` only so that a NodeInfo that does not exist yet can be created (the CRD
/// requires one); the agent's own publication owns what is inside it.
pub fn report_body(node: &str, refusal: &str) -> serde_json::Value {
    let text: String = refusal
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REPORT_CHARS)
        .collect();
    serde_json::json!({
        "apiVersion": "networking.alibaba.com/v1",
        "kind": "NodeInfo",
        "metadata": {"name": node, "annotations": {(KERNEL_CHECK_ANNOTATION): text}},
        "spec": {},
    })
}

/// Records the kernel check's outcome on the node's NodeInfo: `Some(refusal)` is written (the
/// agent then exits), `None` removes an earlier refusal. Only the annotation is touched.
pub async fn publish_verdict(
    client: &Client,
    node: &str,
    refusal: Option<&str>,
) -> kube::Result<()> {
    let api: Api<NodeInfo> = Api::all(client.clone());
    match refusal {
        Some(r) => {
            let pp = PatchParams::apply(field_manager::NODE_KERNEL_CHECK).force();
            api.patch(node, &pp, &Patch::Apply(&report_body(node, r)))
                .await?;
        }
        None => {
            let Some(found) = api.get_opt(node).await? else {
                return Ok(());
            };
            let has = found
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(KERNEL_CHECK_ANNOTATION));
            if has {
                let patch = serde_json::json!({
                    "metadata": {"annotations": {(KERNEL_CHECK_ANNOTATION): null}}
                });
                api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod report_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_report_is_the_verdict_on_one_line_and_bounded() {
        let b = report_body("n1", "lacks: VXLAN (x)\nnft: y\u{7}");
        assert_eq!(b["metadata"]["name"], "n1");
        assert_eq!(
            b["metadata"]["annotations"][KERNEL_CHECK_ANNOTATION],
            "lacks: VXLAN (x) nft: y "
        );
        assert_eq!(b["spec"], serde_json::json!({}));
        let long = report_body("n1", &"é".repeat(10_000));
        let v = long["metadata"]["annotations"][KERNEL_CHECK_ANNOTATION]
            .as_str()
            .unwrap();
        assert_eq!(v.chars().count(), MAX_REPORT_CHARS);
    }
}
