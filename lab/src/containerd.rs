//! A private containerd (Debian's package, with runc) for one lab node or one test: its own root,
//! state, socket and configuration under one folder, running in a network namespace that it entered
//! alone. `ip netns exec` would also remount /sys in a mount namespace of its own, which hides the
//! cgroup mounts runc needs (docs/images.md), so the namespace is entered with `nsenter --net=`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The CRI plugin's settings (None in [`ContainerdSpec::cri`]: the plugin is disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriSpec {
    pub cni_bin_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    /// The image of pod sandboxes (already imported: nothing is pulled).
    pub sandbox_image: String,
}

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdSpec {
    /// Holds `root/`, `state/`, `containerd.sock`, `config.toml` and `containerd.log`.
    pub dir: PathBuf,
    /// Named network namespace (`/run/netns/<name>`) to run in; None: the caller's.
    pub netns: Option<String>,
    pub cri: Option<CriSpec>,
}

impl ContainerdSpec {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
}

fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The configuration file (version 2) of `spec`.
pub fn config_toml(spec: &ContainerdSpec) -> String {
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    let mut out = String::from("version = 2\n");
    let _ = writeln!(out, "root = {}", path(&spec.dir.join("root")));
    let _ = writeln!(out, "state = {}", path(&spec.dir.join("state")));
    match &spec.cri {
        None => out.push_str("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"),
        Some(cri) => {
            let _ = write!(
                out,
                "\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = {}\n  \
                 restrict_oom_score_adj = true\n\
                 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {}\n  conf_dir = {}\n  \
                 max_conf_num = 1\n",
                toml_string(&cri.sandbox_image),
                path(&cri.cni_bin_dir),
                path(&cri.cni_conf_dir),
            );
        }
    }
    let _ = write!(out, "\n[grpc]\n  address = {}\n", path(&spec.socket()));
    out
}

/// The image reference containerd imports an OCI archive of `make images` as (the
/// `io.containerd.image.name` annotation of its one manifest, docs/images.md).
pub fn archive_image_name(archive: &Path) -> anyhow::Result<String> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("./index.json")
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "reading index.json of {}: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let index: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("index.json of {}", archive.display()))?;
    match index["manifests"].as_array().map(Vec::as_slice) {
        Some([m]) => m["annotations"]["io.containerd.image.name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "{}: the manifest has no io.containerd.image.name annotation",
                    archive.display()
                )
            }),
        _ => bail!(
            "{}: want exactly one manifest in index.json",
            archive.display()
        ),
    }
}

/// A running private containerd. [`Containerd::stop`] (or drop) removes every container it runs,
/// stops it and its shims, and removes its folder.
#[derive(Debug)]
pub struct Containerd {
    spec: ContainerdSpec,
    child: Option<Child>,
    /// ctr namespaces used through [`Containerd::ctr`] (their cgroup folders are removed at stop).
    namespaces: BTreeSet<String>,
}

impl Containerd {
    /// Writes the configuration and starts containerd; returns once its socket answers.
    pub fn start(spec: ContainerdSpec, timeout: Duration) -> anyhow::Result<Containerd> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let config = spec.dir.join("config.toml");
        std::fs::write(&config, config_toml(&spec))
            .with_context(|| format!("writing {}", config.display()))?;
        let log_path = spec.dir.join("containerd.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = match &spec.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .context("starting containerd (nsenter, containerd)")?;
        let mut me = Containerd {
            spec,
            child: Some(child),
            namespaces: BTreeSet::new(),
        };
        let deadline = Instant::now() + timeout;
        while UnixStream::connect(me.socket()).is_err() {
            if let Some(c) = me.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "containerd exited ({status}) before serving: {}",
                    me.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not serve {} within {timeout:?}: {}",
                    me.socket().display(),
                    me.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    pub fn socket(&self) -> PathBuf {
        self.spec.socket()
    }

    pub fn spec(&self) -> &ContainerdSpec {
        &self.spec
    }

    /// The last lines of containerd's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.spec.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// `ctr --address <socket> --namespace <namespace> ARGS`: its stdout, or an error with its
    /// output; a `ctr` still running after two minutes is killed and reported.
    pub fn ctr(&mut self, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
        let what = format!("ctr -n {namespace} {}", args.join(" "));
        let out_path = self
            .spec
            .dir
            .join(format!("ctr-{}.out", std::process::id()));
        let err_path = self
            .spec
            .dir
            .join(format!("ctr-{}.err", std::process::id()));
        let mut child = self
            .ctr_command(namespace, args)
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?)
            .spawn()
            .context("running ctr")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&err_path);
        match status {
            Some(s) if s.success() => Ok(stdout),
            Some(s) => bail!("{what} ({s}): {}{}", stdout.trim(), stderr.trim()),
            None => bail!(
                "{what}: still running after 120 s: {}{}",
                stdout.trim(),
                stderr.trim()
            ),
        }
    }

    /// The `ctr` command line for `namespace` and `args`, to spawn it in the background. Its stdin
    /// is empty: `ctr run` hands its stdin to the container, whose program may read it to the end.
    pub fn ctr_command(&mut self, namespace: &str, args: &[&str]) -> Command {
        self.namespaces.insert(namespace.to_string());
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Removes every task and container, stops containerd and any shim serving its socket,
    /// unmounts what is left under its folder, removes its cgroup namespace folders and the folder.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let mut problems = Vec::new();
        if let Ok(list) = self
            .ctr_command("default", &["namespaces", "ls", "-q"])
            .output()
        {
            for ns in String::from_utf8_lossy(&list.stdout).split_whitespace() {
                self.namespaces.insert(ns.to_string());
            }
        }
        for ns in self.namespaces.clone() {
            let ids = self
                .ctr(&ns, &["containers", "ls", "-q"])
                .unwrap_or_default();
            for id in ids.split_whitespace() {
                // A task may not exist (never started, or already deleted): errors are expected.
                let _ = self.ctr(&ns, &["tasks", "kill", "-s", "SIGKILL", id]);
                let _ = wait_task_gone(self, &ns, id);
                if let Err(e) = self.ctr(&ns, &["containers", "rm", id]) {
                    problems.push(format!("{e}"));
                }
            }
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        for pid in shims_of(&self.socket()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for m in mounts_under(&self.spec.dir) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                problems.push(format!("unmounting {}: {e}", m.display()));
            }
        }
        for ns in &self.namespaces {
            remove_cgroup_folders(ns);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.spec.dir) {
            problems.push(format!("removing {}: {e}", self.spec.dir.display()));
        }
        if !problems.is_empty() {
            bail!("stopping containerd: {}", problems.join("; "));
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e:#}");
        }
    }
}

fn wait_task_gone(c: &mut Containerd, ns: &str, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = c.ctr(ns, &["tasks", "ls", "-q"])?;
        if !tasks.split_whitespace().any(|t| t == id) {
            return Ok(());
        }
        // A killed task stays STOPPED until it is deleted.
        let _ = c.ctr(ns, &["tasks", "delete", id]);
        if Instant::now() > deadline {
            bail!("task {id} still exists");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of containerd shims started for `socket` (their command line has `-address <socket>`).
pub fn shims_of(socket: &Path) -> Vec<i32> {
    let want = socket.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                    && args.windows(2).any(|w| w[0] == b"-address" && w[1] == want)
            })
        })
        .collect()
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// Removes the (empty) cgroup folders runc left for ctr namespace `ns` in every v1 hierarchy.
fn remove_cgroup_folders(ns: &str) {
    if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
        return;
    }
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        let d = c.path().join(ns);
        if d.is_dir() {
            // Fails while another containerd still has containers there: they remove it later.
            let _ = std::fs::remove_dir(&d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_without_cri_disables_the_plugin_and_keeps_everything_in_the_folder() {
        let spec = ContainerdSpec {
            dir: PathBuf::from("/tmp/lab/n1"),
            netns: Some("n1".into()),
            cri: None,
        };
        assert_eq!(
            config_toml(&spec),
            "version = 2\nroot = \"/tmp/lab/n1/root\"\nstate = \"/tmp/lab/n1/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n[grpc]\n  \
             address = \"/tmp/lab/n1/containerd.sock\"\n"
        );
    }

    #[test]
    fn config_with_cri_names_the_node_cni_folders_and_sandbox_image() {
        let spec = ContainerdSpec {
            dir: PathBuf::from("/x"),
            netns: None,
            cri: Some(CriSpec {
                cni_bin_dir: PathBuf::from("/lab/n1/opt/cni/bin"),
                cni_conf_dir: PathBuf::from("/lab/n1/etc/cni/net.d"),
                sandbox_image: "docker.io/hybridnet/hybridnet-pause:v0.1.0".into(),
            }),
        };
        let c = config_toml(&spec);
        assert!(!c.contains("disabled_plugins"), "{c}");
        assert!(c.contains("sandbox_image = \"docker.io/hybridnet/hybridnet-pause:v0.1.0\""));
        // Without CAP_SYS_RESOURCE (this machine's containers) runc cannot lower a sandbox's
        // oom_score_adj to -998 (docs/images.md).
        assert!(c.contains("restrict_oom_score_adj = true"), "{c}");
        assert!(c.contains("bin_dir = \"/lab/n1/opt/cni/bin\""));
        assert!(c.contains("conf_dir = \"/lab/n1/etc/cni/net.d\""));
    }

    #[test]
    fn hostile_paths_are_quoted_not_injected() {
        let spec = ContainerdSpec {
            dir: PathBuf::from("/tmp/a\"\n[evil]\nx=\"1"),
            netns: None,
            cri: None,
        };
        let c = config_toml(&spec);
        assert!(!c.lines().any(|l| l == "[evil]"), "{c}");
        assert!(
            c.contains(r#"root = "/tmp/a\"\n[evil]\nx=\"1/root""#),
            "{c}"
        );
    }
}
