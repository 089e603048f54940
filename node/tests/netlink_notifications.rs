//! The agent's rtnetlink notification socket (`agent::notification_connection`): with the agent's
//! receive buffer a burst of neighbour notifications arrives whole; with a small one it overflows,
//! the kernel reports `ENOBUFS`, and the notes say "everything may have changed", which makes the
//! next reconcile a full resync (read the host, plan from scratch, dump and diff everything).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use hybridnet_node::agent::{NOTIFICATION_RCVBUF, note_notification, notification_connection};
use hybridnet_node::dataplane::netns::run_in_netns;
use hybridnet_node::dataplane::{KernelChanges, KernelNotes};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;

/// Adds `n` permanent neighbour entries on `v0` of `ns` in one `ip -batch` (a burst).
fn burst(ns: &str, n: usize) {
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!(
            "neigh add 198.18.{}.{} lladdr 02:00:00:00:{:02x}:{:02x} dev v0 nud permanent\n",
            i / 250,
            1 + i % 250,
            i / 256,
            i % 256
        ));
    }
    let path = std::env::temp_dir().join(format!("{}.batch", unique_name("hn-nl")));
    std::fs::write(&path, batch).unwrap();
    let out = try_sh(&["ip", "-n", ns, "-batch", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    out.unwrap();
}

/// Subscribes in `ns` with `rcvbuf`, causes a burst of `n` neighbour notifications while nothing
/// reads, then reads. Returns the number of neighbour notifications received before an overrun,
/// whether an overrun came, and the notes.
fn subscribe_burst_read(ns: &Netns, rcvbuf: usize, n: usize) -> (usize, bool, KernelNotes) {
    let name = ns.name.clone();
    run_in_netns(&ns.name, move |_h| async move {
        let (conn, mut msgs) = notification_connection(rcvbuf)?;
        tokio::spawn(conn);
        // Blocks this (current-thread) runtime: nothing reads while the burst arrives.
        burst(&name, n);
        let mut notes = KernelNotes::default();
        let (mut neigh, mut overrun) = (0, false);
        // Every notification is already queued (or dropped): read until all arrived or the
        // overrun came; the bound is generous and only ends a failing test.
        while neigh < n && !overrun {
            let (m, _) = tokio::time::timeout(Duration::from_secs(30), msgs.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no notification within 30 s ({neigh} of {n} neighbour notifications)"
                    )
                })?
                .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
            match &m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(_)) => neigh += 1,
                NetlinkPayload::Overrun(_) => overrun = true,
                _ => {}
            }
            note_notification(&mut notes, &m, None);
        }
        Ok((neigh, overrun, notes))
    })
    .unwrap()
}

fn ns_with_veth(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.ip("link add v0 type veth peer name v1");
    ns.ip("link set v0 up");
    ns.ip("link set v1 up");
    ns
}

#[test]
fn the_agents_buffer_holds_a_burst() {
    if !may_run("the_agents_buffer_holds_a_burst", &["ip"]) {
        return;
    }
    let ns = ns_with_veth("nlbig");
    let n = 4000;
    let (neigh, overrun, notes) = subscribe_burst_read(&ns, NOTIFICATION_RCVBUF, n);
    assert!(!overrun, "ENOBUFS after {neigh} of {n} notifications");
    assert_eq!(neigh, n);
    assert!(!notes.changes.all, "{notes:?}");
}

#[test]
fn an_overflow_means_a_full_resync() {
    if !may_run("an_overflow_means_a_full_resync", &["ip"]) {
        return;
    }
    let ns = ns_with_veth("nlsmall");
    let n = 4000;
    let (neigh, overrun, notes) = subscribe_burst_read(&ns, 4096, n);
    assert!(
        overrun,
        "no ENOBUFS: all {neigh} notifications fit a 4 KiB buffer?"
    );
    assert!(neigh < n);
    assert_eq!(notes.changes, KernelChanges::EVERYTHING);
    assert!(notes.neighbours.is_empty());
}

#[test]
fn an_overrun_message_marks_everything() {
    let mut notes = KernelNotes::default();
    let msg: NetlinkMessage<RouteNetlinkMessage> =
        NetlinkMessage::new(Default::default(), NetlinkPayload::Overrun(Vec::new()));
    assert!(note_notification(&mut notes, &msg, Some(3)));
    assert_eq!(notes.changes, KernelChanges::EVERYTHING);
    assert!(
        notes.changes.host(),
        "the host is read again and the plan built from scratch"
    );
}
