//! The hybridnet image carries exactly the programs the agent runs (scripts/images/agent-tools.txt,
//! docs/images.md): this census fails when node/src starts a program the list does not name, or the
//! list names one nothing starts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use hybridnet_node::agent::AgentConfig;

/// Each source file of the agent that starts a program, and the program (the `nft` one takes the
/// program from `--nft-binary`, checked below to default to a bare name found on PATH).
const STARTS: &[(&str, &str)] = &[
    ("src/dataplane/nft.rs", "nft"),
    // NetworkPolicy drop counters are read with the same --nft-binary.
    ("src/agent/policy.rs", "nft"),
    // The kernel check at start runs `nft --check` with the same --nft-binary.
    ("src/agent/kernelcheck.rs", "nft"),
    // The removal of upstream's leftovers (docs/migration.md): both backends, both families.
    ("src/migrate/host.rs", "iptables-legacy-save"),
    ("src/migrate/host.rs", "iptables-legacy-restore"),
    ("src/migrate/host.rs", "ip6tables-legacy-save"),
    ("src/migrate/host.rs", "ip6tables-legacy-restore"),
    ("src/migrate/host.rs", "iptables-nft-save"),
    ("src/migrate/host.rs", "iptables-nft-restore"),
    ("src/migrate/host.rs", "ip6tables-nft-save"),
    ("src/migrate/host.rs", "ip6tables-nft-restore"),
    ("src/migrate/host.rs", "ipset"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn image_tools() -> BTreeSet<String> {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/images/agent-tools.txt");
    std::fs::read_to_string(&list)
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_image_tool_list_is_what_the_agent_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    // The agent binary's own sources and those of its BGP library.
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("bgp/src"), &mut files);
    let starting: BTreeSet<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.contains("Command::new(") || text.contains("process::Command")
        })
        .map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned())
        .collect();
    let known: BTreeSet<String> = STARTS.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(
        starting, known,
        "files of node/ that start programs changed: add each program to \
         scripts/images/agent-tools.txt and the file to STARTS"
    );
    let started: BTreeSet<String> = STARTS.iter().map(|(_, t)| t.to_string()).collect();
    assert_eq!(image_tools(), started, "scripts/images/agent-tools.txt");
    // Each program still appears in its file as a literal (nft comes from --nft-binary).
    for (file, program) in STARTS.iter().filter(|(_, p)| *p != "nft") {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.contains(&format!("\"{program}\"")),
            "{file} no longer names {program}: update STARTS and agent-tools.txt"
        );
    }

    let cfg = AgentConfig::try_parse_from(["hybridnet-node", "--node-name=n1"]).unwrap();
    assert_eq!(
        cfg.nft_binary, "nft",
        "the agent finds nft on PATH, as the image provides it"
    );
}
