//! The plugin that the agent copies onto every host is static (scripts/images/static.sh): it runs in
//! an empty root, with no libc and no dynamic loader, and answers VERSION. A dynamically linked
//! binary in the same kind of root does not start, which shows the root really is empty.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hybridnet_test_support::{may_run, skip};

/// The static plugin of the debug profile, as `make test` builds it before the tests.
fn static_plugin() -> PathBuf {
    if let Some(p) = std::env::var_os("HYBRIDNET_STATIC_PLUGIN") {
        return PathBuf::from(p);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let triple = if cfg!(target_arch = "x86_64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-gnu"
    };
    target.join(triple).join("debug").join("hybridnet")
}

/// Runs `binary`, alone in an otherwise empty root, as `/<name>` with only `env` set.
fn run_in_empty_root(binary: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let root = tempfile::tempdir().unwrap();
    let name = binary.file_name().unwrap();
    std::fs::copy(binary, root.path().join(name)).unwrap();
    let entries: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "the root holds only the binary");
    // Found on this process's PATH: the child's environment is cleared.
    let chroot = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("chroot"))
        .find(|p| p.is_file())
        .unwrap();
    let mut child = Command::new(chroot)
        .arg(root.path())
        .arg(Path::new("/").join(name))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A binary that never starts never reads: its broken pipe shows in the exit status instead.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn static_plugin_answers_version_in_an_empty_root() {
    let test = "static_plugin_answers_version_in_an_empty_root";
    if !may_run(test, &["chroot"]) {
        return;
    }
    let plugin = static_plugin();
    if !plugin.is_file() {
        skip(
            test,
            &format!(
                "{} missing: run `scripts/images/static.sh debug` (make test does)",
                plugin.display()
            ),
        );
        return;
    }
    let out = run_in_empty_root(
        &plugin,
        &[("CNI_COMMAND", "VERSION")],
        br#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(
        out.status.success(),
        "VERSION in an empty root: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let supported: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(supported.contains(&"1.0.0"), "{v}");
    assert!(supported.contains(&"0.4.0"), "{v}");
    assert_eq!(
        v["cniVersion"], "1.0.0",
        "answers in the version asked: {v}"
    );

    // The control, in the same test (a binary copied while another test thread forks can be
    // "busy" at exec): this test program is linked dynamically against glibc.
    let me = std::env::current_exe().unwrap();
    let out = run_in_empty_root(&me, &[], b"");
    assert_eq!(
        out.status.code(),
        Some(127),
        "chroot cannot find the dynamic loader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
