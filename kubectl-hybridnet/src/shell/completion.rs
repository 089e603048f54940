//! `completion` (scripts and the kubectl helper) and the hidden `__complete` handler.

use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use clap_complete::Shell;
use hybridnet_api::v1::{Network, Subnet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::ListParams;

use kubectl_hybridnet::cli::{Cli, CompletionArgs, GlobalFlags, RequestTimeout, ShellFlag};
use kubectl_hybridnet::complete::{self, Dynamic, KUBECTL_HELPER_NAME, KUBECTL_HELPER_SCRIPT};

use super::connect::{Ctx, Failure, Res, exit};
use super::print;

pub fn completion(a: &CompletionArgs) -> Res<i32> {
    if let Some(dir) = &a.kubectl_helper {
        let path = write_helper(dir)?;
        eprintln!(
            "wrote {}; keep its directory on PATH next to kubectl-hybridnet (kubectl >= 1.26 then completes `kubectl hybridnet <TAB>`)",
            path.display()
        );
    }
    if let Some(shell) = a.shell {
        let shell = match shell {
            ShellFlag::Bash => Shell::Bash,
            ShellFlag::Zsh => Shell::Zsh,
            ShellFlag::Fish => Shell::Fish,
        };
        let mut cmd = Cli::command();
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "kubectl-hybridnet", &mut buf);
        print::out(&String::from_utf8_lossy(&buf))?;
    }
    Ok(exit::OK)
}

fn write_helper(dir: &std::path::Path) -> Res<PathBuf> {
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "--kubectl-helper {}: not a directory",
            dir.display()
        )));
    }
    #[cfg(windows)]
    let (path, body) = (
        dir.join(format!("{KUBECTL_HELPER_NAME}.cmd")),
        "@echo off\r\nkubectl-hybridnet __complete %*\r\n".to_string(),
    );
    #[cfg(not(windows))]
    let (path, body) = (
        dir.join(KUBECTL_HELPER_NAME),
        KUBECTL_HELPER_SCRIPT.to_string(),
    );
    std::fs::write(&path, body)
        .map_err(|e| Failure::error(format!("cannot write {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(|e| {
            Failure::error(format!("cannot make {} executable: {e}", path.display()))
        })?;
    }
    Ok(path)
}

/// Connection flags found among the words being completed.
fn flags_from_words(words: &[String]) -> GlobalFlags {
    let mut g = GlobalFlags {
        request_timeout: RequestTimeout(Some(Duration::from_secs(3))),
        ..Default::default()
    };
    let mut it = words.iter().peekable();
    while let Some(w) = it.next() {
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (w.as_str(), None),
        };
        let mut value = || inline.clone().or_else(|| it.peek().map(|s| s.to_string()));
        match flag {
            "--kubeconfig" => g.kubeconfig = value().map(PathBuf::from),
            "--context" => g.context = value(),
            "-n" | "--namespace" => g.namespace = value(),
            _ => {}
        }
    }
    g
}

async fn names(g: &GlobalFlags, what: Dynamic) -> Vec<String> {
    if what == Dynamic::Context {
        let kc = match &g.kubeconfig {
            Some(p) => kube::config::Kubeconfig::read_from(p).ok(),
            None => kube::config::Kubeconfig::read().ok(),
        };
        return kc
            .map(|k| k.contexts.into_iter().map(|c| c.name).collect())
            .unwrap_or_default();
    }
    let Ok(ctx) = Ctx::connect(g).await else {
        return Vec::new();
    };
    let lp = ListParams::default();
    let c = ctx.client.clone();
    fn n<K: kube::Resource>(items: Vec<K>) -> Vec<String> {
        items.iter().filter_map(|o| o.meta().name.clone()).collect()
    }
    let r = match what {
        Dynamic::Network => Api::<Network>::all(c).list(&lp).await.map(|l| n(l.items)),
        Dynamic::Subnet => Api::<Subnet>::all(c).list(&lp).await.map(|l| n(l.items)),
        Dynamic::Node => Api::<Node>::all(c).list(&lp).await.map(|l| n(l.items)),
        Dynamic::Namespace => Api::<Namespace>::all(c).list(&lp).await.map(|l| n(l.items)),
        Dynamic::Pod => Api::<Pod>::namespaced(c, &ctx.namespace)
            .list(&lp)
            .await
            .map(|l| n(l.items)),
        Dynamic::Context => Ok(Vec::new()),
    };
    let mut v = r.unwrap_or_default();
    v.sort();
    v
}

/// `kubectl-hybridnet __complete WORDS...`.
pub async fn complete_words(words: Vec<String>) -> i32 {
    let g = flags_from_words(&words);
    let mut cache: Vec<(Dynamic, Vec<String>)> = Vec::new();
    // The pure completer asks synchronously; resolve the (at most one) dynamic kind first.
    let probe = complete::complete(&Cli::command(), &words, &mut |d| {
        cache.push((d, Vec::new()));
        Vec::new()
    });
    let result = if let Some((d, _)) = cache.first().cloned() {
        let found = names(&g, d).await;
        complete::complete(&Cli::command(), &words, &mut |_| found.clone())
    } else {
        probe
    };
    let _ = print::out(&result.render());
    exit::OK
}
