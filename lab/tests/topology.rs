//! The lab's topology in real network namespaces: every host reaches its neighbours, and `destroy`
//! leaves nothing behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use hybridnet_lab::netns::{exec_in, list_with_prefix};
use hybridnet_lab::topology::{self, Role};
use hybridnet_test_support::require_root;

struct Lab(String);
impl Drop for Lab {
    fn drop(&mut self) {
        let _ = topology::destroy(&self.0);
    }
}

#[test]
fn hosts_reach_each_other_and_destroy_cleans_up() {
    if !require_root("hosts_reach_each_other_and_destroy_cleans_up") {
        return;
    }
    let id = format!("t{}", std::process::id());
    let layout = topology::layout_with(&id, 2, 1);
    let guard = Lab(id.clone());
    topology::build(&layout).unwrap();

    let n1 = layout.host(&Role::Node(1)).unwrap().netns.clone();
    let out = layout.host(&Role::Outside).unwrap().netns.clone();
    // Node 3 is a BGP node on its own routed link: it reaches the ToR's BGP address on-link and
    // the control plane through the ToR.
    let n3 = layout.host(&Role::Node(3)).unwrap().netns.clone();
    for (from, to) in [
        (&n3, "198.18.1.1"),
        (&n3, "198.18.0.2"),
        (&n3, "fd00:18::2"),
        (&out, "198.18.2.1"),
        (&n1, "198.18.0.12"),
        (&n1, "198.18.0.1"),
        (&n1, "198.19.0.2"),
        (&out, "198.18.0.11"),
        (&n1, "fd00:18::12"),
        (&out, "fd00:18::11"),
    ] {
        exec_in(from, "ping", &["-c1", "-W2", to])
            .unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
    }
    drop(guard);
    assert!(
        list_with_prefix(&format!("hl{id}-")).unwrap().is_empty(),
        "namespaces left behind"
    );
}
