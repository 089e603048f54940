//! The Cobra `__complete` protocol that kubectl (>= 1.26) uses for plugins: kubectl runs
//! `kubectl_complete-hybridnet ARGS... PARTIAL`, which runs `kubectl-hybridnet __complete ARGS...
//! PARTIAL`; we print one candidate per line (`value\tdescription`) and a last line `:DIRECTIVE`.

use clap::{Arg, Command};

/// Cobra's ShellCompDirective bits.
pub mod directive {
    pub const DEFAULT: u32 = 0;
    pub const NO_FILE_COMP: u32 = 4;
}

/// Names only the cluster knows, fetched on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dynamic {
    Network,
    Subnet,
    Pod,
    Node,
    Namespace,
    Context,
}

/// The answer to one completion request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub candidates: Vec<(String, String)>,
    pub directive: u32,
}

impl Completion {
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (v, d) in &self.candidates {
            if d.is_empty() {
                s.push_str(v);
            } else {
                s.push_str(&format!("{v}\t{d}"));
            }
            s.push('\n');
        }
        s.push_str(&format!(":{}\n", self.directive));
        s
    }
}

fn first_line(s: Option<&clap::builder::StyledStr>) -> String {
    s.map(|x| x.to_string().lines().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn find_arg<'a>(cmd: &'a Command, word: &str) -> Option<&'a Arg> {
    if let Some(long) = word.strip_prefix("--") {
        let long = long.split_once('=').map(|(l, _)| l).unwrap_or(long);
        cmd.get_arguments().find(|a| a.get_long() == Some(long))
    } else if let Some(short) = word.strip_prefix('-') {
        let c = short.chars().next()?;
        cmd.get_arguments().find(|a| a.get_short() == Some(c))
    } else {
        None
    }
}

fn takes_value(a: &Arg) -> bool {
    a.get_action().takes_values() && a.get_num_args().is_none_or(|r| r.min_values() > 0)
}

fn dynamic_for_flag(long: &str) -> Option<Dynamic> {
    match long {
        "network" => Some(Dynamic::Network),
        "subnet" => Some(Dynamic::Subnet),
        "pod" | "to" => Some(Dynamic::Pod),
        "node" => Some(Dynamic::Node),
        "namespace" | "agent-namespace" => Some(Dynamic::Namespace),
        "context" => Some(Dynamic::Context),
        _ => None,
    }
}

fn dynamic_for_positional(path: &[String]) -> Option<Dynamic> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["network" | "networks" | "net", "get" | "delete" | "rm"] => Some(Dynamic::Network),
        ["subnet" | "subnets", "get" | "delete" | "rm"] => Some(Dynamic::Subnet),
        ["trace"] => Some(Dynamic::Pod),
        _ => None,
    }
}

fn values_of(arg: &Arg) -> Vec<(String, String)> {
    arg.get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| (v.get_name().to_string(), first_line(v.get_help())))
        .collect()
}

/// Completes `words` (the last one is the word being typed, maybe empty) against `root`.
/// `lookup` answers dynamic names; it may return nothing (e.g. the cluster is unreachable).
pub fn complete(
    root: &Command,
    words: &[String],
    lookup: &mut dyn FnMut(Dynamic) -> Vec<String>,
) -> Completion {
    let mut root = root.clone();
    root.build();
    let (partial, done) = match words.split_last() {
        Some((p, d)) => (p.as_str(), d),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    let mut path: Vec<String> = Vec::new();
    let mut skip_value = false;
    for w in done {
        if skip_value {
            skip_value = false;
            continue;
        }
        if w.starts_with('-') {
            if let Some(a) = find_arg(cmd, w)
                && takes_value(a)
                && !w.contains('=')
                && !(w.starts_with('-') && !w.starts_with("--") && w.len() > 2)
            {
                skip_value = true;
            }
            continue;
        }
        if let Some(sub) = cmd.find_subcommand(w) {
            cmd = sub;
            path.push(w.clone());
        }
    }
    let filter = |c: Vec<(String, String)>, prefix: &str| -> Vec<(String, String)> {
        c.into_iter()
            .filter(|(v, _)| v.starts_with(prefix))
            .collect()
    };
    let named = |names: Vec<String>| {
        names
            .into_iter()
            .map(|n| (n, String::new()))
            .collect::<Vec<_>>()
    };

    // The value of the flag before.
    if skip_value && let Some(prev) = done.last() {
        let Some(a) = find_arg(cmd, prev) else {
            return Completion {
                candidates: vec![],
                directive: directive::NO_FILE_COMP,
            };
        };
        let vals = values_of(a);
        if !vals.is_empty() {
            return Completion {
                candidates: filter(vals, partial),
                directive: directive::NO_FILE_COMP,
            };
        }
        if let Some(d) = a.get_long().and_then(dynamic_for_flag) {
            return Completion {
                candidates: filter(named(lookup(d)), partial),
                directive: directive::NO_FILE_COMP,
            };
        }
        let wants_path = matches!(
            a.get_value_hint(),
            clap::ValueHint::FilePath | clap::ValueHint::DirPath | clap::ValueHint::AnyPath
        ) || matches!(a.get_long(), Some("kubeconfig" | "kubectl-helper"));
        return Completion {
            candidates: vec![],
            directive: if wants_path {
                directive::DEFAULT
            } else {
                directive::NO_FILE_COMP
            },
        };
    }
    // `--flag=value`.
    if let Some(rest) = partial.strip_prefix("--")
        && let Some((long, value)) = rest.split_once('=')
    {
        let Some(a) = cmd.get_arguments().find(|a| a.get_long() == Some(long)) else {
            return Completion {
                candidates: vec![],
                directive: directive::NO_FILE_COMP,
            };
        };
        let mut vals = values_of(a);
        if vals.is_empty()
            && let Some(d) = dynamic_for_flag(long)
        {
            vals = named(lookup(d));
        }
        let vals = filter(vals, value)
            .into_iter()
            .map(|(v, d)| (format!("--{long}={v}"), d))
            .collect();
        return Completion {
            candidates: vals,
            directive: directive::NO_FILE_COMP,
        };
    }
    if partial.starts_with('-') {
        let mut flags: Vec<(String, String)> = Vec::new();
        for a in cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_positional())
        {
            let help = first_line(a.get_help());
            if let Some(l) = a.get_long() {
                flags.push((format!("--{l}"), help.clone()));
            }
            if let Some(s) = a.get_short() {
                flags.push((format!("-{s}"), help));
            }
        }
        flags.sort();
        return Completion {
            candidates: filter(flags, partial),
            directive: directive::NO_FILE_COMP,
        };
    }
    let mut cands: Vec<(String, String)> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| (s.get_name().to_string(), first_line(s.get_about())))
        .collect();
    if cands.is_empty() {
        if let Some(d) = dynamic_for_positional(&path) {
            cands = named(lookup(d));
        } else if let Some(pos) = cmd.get_arguments().find(|a| a.is_positional()) {
            cands = values_of(pos);
        }
    }
    Completion {
        candidates: filter(cands, partial),
        directive: directive::NO_FILE_COMP,
    }
}

/// The executable kubectl looks for on PATH to complete `kubectl hybridnet ...`.
pub const KUBECTL_HELPER_NAME: &str = "kubectl_complete-hybridnet";

/// Its content: hand every word to `kubectl-hybridnet __complete`.
pub const KUBECTL_HELPER_SCRIPT: &str = "#!/usr/bin/env sh\n# kubectl (>= 1.26) runs this for `kubectl hybridnet <TAB>`; written by\n# `kubectl hybridnet completion --kubectl-helper DIR`. Keep it next to kubectl-hybridnet on PATH.\nexec kubectl-hybridnet __complete \"$@\"\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn run(words: &[&str]) -> Completion {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        complete(&Cli::command(), &w, &mut |d| match d {
            Dynamic::Network => vec!["overlay".into(), "vlan100".into()],
            Dynamic::Pod => vec!["web-0".into(), "web-1".into()],
            _ => vec![],
        })
    }

    fn values(c: &Completion) -> Vec<&str> {
        c.candidates.iter().map(|(v, _)| v.as_str()).collect()
    }

    #[test]
    fn subcommands() {
        let c = run(&[""]);
        let v = values(&c);
        for want in [
            "network",
            "subnet",
            "ip",
            "cluster",
            "trace",
            "status",
            "install",
            "version",
            "completion",
        ] {
            assert!(v.contains(&want), "{want} in {v:?}");
        }
        assert_eq!(c.directive, directive::NO_FILE_COMP);
        assert_eq!(values(&run(&["ip", "u"])), vec!["usage"]);
        assert!(c.render().ends_with(":4\n"));
        assert!(c.render().contains("network\tNetworks"));
    }

    #[test]
    fn flags_and_values() {
        let v = run(&["ip", "ls", "--ne"]);
        assert_eq!(values(&v), vec!["--network"]);
        let v = run(&["ip", "ls", "--"]);
        assert!(values(&v).contains(&"--kubeconfig"), "globals propagate");
        let v = run(&["ip", "ls", "--network", ""]);
        assert_eq!(values(&v), vec!["overlay", "vlan100"]);
        let v = run(&["network", "create", "x", "--mode", "v"]);
        assert_eq!(values(&v), vec!["vxlan", "vlan"]);
        let v = run(&["ip", "ls", "--network=vl"]);
        assert_eq!(values(&v), vec!["--network=vlan100"]);
        let v = run(&["ip", "ls", "--kubeconfig", ""]);
        assert_eq!(v.directive, directive::DEFAULT, "paths complete as files");
    }

    proptest::proptest! {
        /// Any words (typed by a user, or garbage) give an answer with a valid directive.
        #[test]
        fn never_panics(words in proptest::collection::vec("[-a-z=/ ]{0,12}", 0..6)) {
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            let c = run(&w);
            proptest::prop_assert!(c.directive == directive::DEFAULT || c.directive == directive::NO_FILE_COMP);
            let tail = format!(":{}\n", c.directive);
            proptest::prop_assert!(c.render().ends_with(&tail));
        }
    }

    #[test]
    fn dynamic_positionals() {
        assert_eq!(values(&run(&["network", "get", "o"])), vec!["overlay"]);
        assert_eq!(values(&run(&["trace", ""])), vec!["web-0", "web-1"]);
        assert_eq!(
            values(&run(&["trace", "-n", "default", "w"])),
            vec!["web-0", "web-1"]
        );
        assert_eq!(values(&run(&["completion", "z"])), vec!["zsh"]);
    }
}
