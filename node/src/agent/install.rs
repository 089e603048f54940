//! Installs the CNI plugin binary and the conflist into the host's CNI directories, atomically
//! (write a temporary file in the target directory, fsync, rename), so a container runtime never
//! reads a half-written file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The conflist: the hybridnet plugin, chained with `bandwidth` and `portmap` when their binaries
/// are in the bin dir (kubelet's traffic shaping and hostPort need them).
pub fn render_conflist(server_socket: &Path, bin_dir: &Path) -> Value {
    let mut plugins = vec![json!({
        "type": "hybridnet",
        "server_socket": server_socket.to_string_lossy(),
    })];
    if bin_dir.join("bandwidth").is_file() {
        plugins.push(json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}));
    }
    if bin_dir.join("portmap").is_file() {
        plugins
            .push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    json!({"cniVersion": "1.0.0", "name": "hybridnet", "plugins": plugins})
}

/// Writes `bytes` to `dir/name` atomically with `mode`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|_| target)
}

/// Installs the binary (if given) and the conflist; removes other `*-hybridnet.conflist` files
/// (an old name must not shadow the new one). Returns the files written.
pub fn install_cni(
    source_binary: Option<&Path>,
    bin_dir: &Path,
    conf_dir: &Path,
    conflist_name: &str,
    server_socket: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if let Some(src) = source_binary {
        let bytes = std::fs::read(src)?;
        written.push(write_atomic(bin_dir, "hybridnet", &bytes, 0o755)?);
    }
    let conf = render_conflist(server_socket, bin_dir);
    let text = serde_json::to_vec_pretty(&conf).map_err(std::io::Error::other)?;
    written.push(write_atomic(conf_dir, conflist_name, &text, 0o644)?);
    if let Ok(entries) = std::fs::read_dir(conf_dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != conflist_name && n.ends_with("-hybridnet.conflist") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_chains_present_plugins() {
        let d = tempdir();
        let sock = Path::new("/run/cni/hybridnet.sock");
        let c = render_conflist(sock, &d);
        assert_eq!(c["plugins"].as_array().unwrap().len(), 1);
        std::fs::write(d.join("portmap"), b"").unwrap();
        std::fs::write(d.join("bandwidth"), b"").unwrap();
        let c = render_conflist(sock, &d);
        let types: Vec<&str> = c["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["hybridnet", "bandwidth", "portmap"]);
        assert_eq!(c["plugins"][0]["server_socket"], "/run/cni/hybridnet.sock");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn install_is_atomic_and_replaces_old_names() {
        let d = tempdir();
        let (bin, conf) = (d.join("bin"), d.join("net.d"));
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("05-hybridnet.conflist"), b"old").unwrap();
        std::fs::write(conf.join("10-other.conflist"), b"keep").unwrap();
        let src = d.join("plugin");
        std::fs::write(&src, b"#!/bin/true\n").unwrap();
        let w = install_cni(
            Some(&src),
            &bin,
            &conf,
            "06-hybridnet.conflist",
            Path::new("/s.sock"),
        )
        .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            std::fs::read(bin.join("hybridnet")).unwrap(),
            b"#!/bin/true\n"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(bin.join("hybridnet"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let conf_text = std::fs::read_to_string(conf.join("06-hybridnet.conflist")).unwrap();
        let v: Value = serde_json::from_str(&conf_text).unwrap();
        assert_eq!(v["name"], "hybridnet");
        assert!(!conf.join("05-hybridnet.conflist").exists());
        assert!(conf.join("10-other.conflist").exists());
        // No temporary files are left.
        assert!(
            std::fs::read_dir(&conf)
                .unwrap()
                .flatten()
                .all(|e| !e.file_name().to_string_lossy().starts_with('.'))
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn hostile_names_are_refused() {
        let d = tempdir();
        for bad in ["", "../x", "a/b", ".."] {
            assert!(write_atomic(&d, bad, b"x", 0o644).is_err(), "{bad}");
        }
        assert!(
            install_cni(
                Some(&d.join("missing")),
                &d,
                &d,
                "06-hybridnet.conflist",
                Path::new("/s")
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempdir() -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "hn-install-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
