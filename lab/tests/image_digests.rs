//! `make images` is reproducible (docs/images.md, "Reproducible digests"): the same binaries and
//! host programs built twice give byte-identical archives and the same manifest digests, and the
//! digest depends on SOURCE_DATE_EPOCH (the control: the time does go into the image, fixed).
//! Runs `scripts/images/build.sh images debug` on the debug binaries `make test` built.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hybridnet_test_support::{may_run, skip, unique_name};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn static_dir() -> PathBuf {
    workspace().join(format!(
        "target/{}-unknown-linux-gnu/debug",
        std::env::consts::ARCH
    ))
}

/// Builds the three archives into a new folder with SOURCE_DATE_EPOCH `epoch`: (folder,
/// archive -> manifest digest from digests.txt).
fn build(epoch: u64) -> (PathBuf, BTreeMap<String, String>) {
    let out = std::env::temp_dir().join(unique_name("imgdigest"));
    std::fs::create_dir_all(&out).unwrap();
    let status = std::process::Command::new("scripts/images/build.sh")
        .args(["images", "debug"])
        .current_dir(workspace())
        .env("IMAGES_OUT", &out)
        .env("IMAGES_STATIC_DIR", static_dir())
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "build.sh images debug");
    let digests = std::fs::read_to_string(out.join("digests.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "{l}");
            (f[0].to_string(), f[2].to_string())
        })
        .collect();
    (out, digests)
}

struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[test]
fn image_archives_are_reproducible_and_carry_source_date_epoch() {
    let test = "image_archives_are_reproducible_and_carry_source_date_epoch";
    if !may_run(test, &["umoci", "tar", "strip", "ldd", "readelf"]) {
        return;
    }
    let needed = [
        workspace().join("target/debug/hybridnet-operator"),
        workspace().join("target/debug/hybridnet-node"),
        workspace().join("target/debug/kubectl-hybridnet"),
        static_dir().join("hybridnet"),
        static_dir().join("hybridnet-pause"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.is_file()) {
        skip(
            test,
            &format!(
                "{} missing: `cargo build --workspace --bins` and `scripts/images/static.sh debug` (make test does)",
                missing.display()
            ),
        );
        return;
    }
    let (a, da) = build(0);
    let mut cleanup = Cleanup(vec![a.clone()]);
    let (b, db) = build(0);
    cleanup.0.push(b.clone());
    let (c, dc) = build(86_400);
    cleanup.0.push(c.clone());

    assert_eq!(
        da.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bundle.oci.tar", "hybridnet.oci.tar", "pause.oci.tar"]
    );
    assert_eq!(da, db, "two builds of the same binaries");
    for name in da.keys() {
        assert!(
            da[name].starts_with("sha256:") && da[name].len() == 71,
            "{name}"
        );
        // Byte for byte, the archive itself too.
        assert_eq!(
            std::fs::read(a.join(name)).unwrap(),
            std::fs::read(b.join(name)).unwrap(),
            "{name}"
        );
        // Another time, another digest: the time is in the image, and it is the one given.
        assert_ne!(da[name], dc[name], "{name}");
        // `build.sh digest` reads the same digest back from the archive.
        let out = std::process::Command::new("scripts/images/build.sh")
            .arg("digest")
            .arg(a.join(name))
            .current_dir(workspace())
            .output()
            .unwrap();
        assert!(out.status.success(), "build.sh digest {name}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), da[name]);
    }
    // The image config's `created`, as SOURCE_DATE_EPOCH says.
    let member = |archive: &Path, m: &str| {
        let out = std::process::Command::new("tar")
            .arg("-xOf")
            .arg(archive)
            .arg(m)
            .output()
            .unwrap();
        assert!(out.status.success(), "{m}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let blob = |d: &str| format!("./blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let archive = c.join("hybridnet.oci.tar");
    let manifest = member(&archive, &blob(&dc["hybridnet.oci.tar"]));
    let config = member(
        &archive,
        &blob(manifest["config"]["digest"].as_str().unwrap()),
    );
    assert_eq!(config["created"], "1970-01-02T00:00:00Z", "{config}");
    for h in config["history"].as_array().unwrap() {
        assert_eq!(h["created"], "1970-01-02T00:00:00Z", "{config}");
    }
}
