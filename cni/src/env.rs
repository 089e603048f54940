//! The runtime's environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, parsed and validated per command.

use crate::error::CniError;
use crate::protocol::PodRef;
use crate::validate;

/// A CNI command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// ADD, DEL and CHECK act on one attachment (container id + ifname + pod).
    pub fn is_attachment_command(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// The parsed `CNI_ARGS` (`K=V;K=V`): the Kubernetes pod identity, other keys ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. Empty pairs are skipped; a pair without `=` or a K8S value that is
    /// not a valid Kubernetes name is an invalid-environment error (code 4).
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut out = CniArgs::default();
        for pair in s.split(';') {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::invalid_env(format!(
                    "CNI_ARGS entry {:?} is not KEY=VALUE",
                    pair.chars().take(80).collect::<String>()
                ))
            })?;
            match k {
                "K8S_POD_NAMESPACE" => {
                    validate::dns_label("K8S_POD_NAMESPACE", v).map_err(CniError::invalid_env)?;
                    out.pod_namespace = Some(v.to_string());
                }
                "K8S_POD_NAME" => {
                    validate::dns_subdomain("K8S_POD_NAME", v).map_err(CniError::invalid_env)?;
                    out.pod_name = Some(v.to_string());
                }
                "K8S_POD_UID" if !v.is_empty() => {
                    validate::pod_uid(v).map_err(CniError::invalid_env)?;
                    out.pod_uid = Some(v.to_string());
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The pod, when both namespace and name are present.
    pub fn pod(&self) -> Result<PodRef, CniError> {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(name)) => Ok(PodRef {
                namespace: ns.clone(),
                name: name.clone(),
                uid: self.pod_uid.clone(),
            }),
            _ => Err(CniError::invalid_env(
                "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME (hybridnet wires Kubernetes pods only; kubelet/containerd/cri-o set them)",
            )),
        }
    }
}

/// The validated runtime environment for one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: CniArgs,
    /// The pod (ADD/DEL/CHECK only).
    pub pod: Option<PodRef>,
}

impl RuntimeEnv {
    /// Reads and validates the environment through `get` (which returns `Err` for a value that
    /// is not valid UTF-8). What each command requires follows spec 1.1.
    pub fn from_lookup(
        get: impl Fn(&str) -> Result<Option<String>, String>,
    ) -> Result<RuntimeEnv, CniError> {
        let var = |k: &str| -> Result<Option<String>, CniError> {
            get(k)
                .map_err(|e| CniError::invalid_env(format!("{k}: {e}")))
                .map(|v| v.filter(|s| !s.is_empty()))
        };
        let command_str = var("CNI_COMMAND")?.ok_or_else(|| {
            CniError::invalid_env(
                "CNI_COMMAND is not set; this is a CNI plugin, run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION",
            )
        })?;
        let command = Command::parse(&command_str).ok_or_else(|| {
            CniError::invalid_env(format!(
                "CNI_COMMAND {:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION",
                command_str.chars().take(40).collect::<String>()
            ))
        })?;
        let mut env = RuntimeEnv {
            command,
            container_id: None,
            netns: None,
            ifname: None,
            args: CniArgs::default(),
            pod: None,
        };
        if !command.is_attachment_command() {
            return Ok(env);
        }

        let cid = var("CNI_CONTAINERID")?.ok_or_else(|| {
            CniError::invalid_env(format!(
                "CNI_CONTAINERID is required for {}",
                command.as_str()
            ))
        })?;
        validate::container_id(&cid).map_err(CniError::invalid_env)?;
        env.container_id = Some(cid);

        let ifname = var("CNI_IFNAME")?.ok_or_else(|| {
            CniError::invalid_env(format!("CNI_IFNAME is required for {}", command.as_str()))
        })?;
        validate::ifname(&ifname).map_err(CniError::invalid_env)?;
        env.ifname = Some(ifname);

        // DEL may come without a netns (the sandbox is already gone); ADD and CHECK need one.
        match var("CNI_NETNS")? {
            Some(ns) => {
                validate::absolute_path("CNI_NETNS", &ns).map_err(CniError::invalid_env)?;
                env.netns = Some(ns);
            }
            None if command != Command::Del => {
                return Err(CniError::invalid_env(format!(
                    "CNI_NETNS is required for {}",
                    command.as_str()
                )));
            }
            None => {}
        }

        env.args = CniArgs::parse(&var("CNI_ARGS")?.unwrap_or_default())?;
        env.pod = Some(env.args.pod()?);
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> Result<RuntimeEnv, CniError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RuntimeEnv::from_lookup(|k| Ok(m.get(k).cloned()))
    }

    const ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=0b0e4b5a-3c2d-4f8e-9a7b-1c2d3e4f5a6b";

    fn full(cmd: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", ARGS),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    #[test]
    fn add_env_parses() {
        let e = env_of(&full("ADD")).unwrap();
        assert_eq!(e.command, Command::Add);
        let pod = e.pod.unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("default", "web-0")
        );
        assert_eq!(
            pod.uid.as_deref(),
            Some("0b0e4b5a-3c2d-4f8e-9a7b-1c2d3e4f5a6b")
        );
    }

    #[test]
    fn del_without_netns_is_fine_add_is_not() {
        let mut v = full("DEL");
        v.retain(|(k, _)| *k != "CNI_NETNS");
        assert!(env_of(&v).unwrap().netns.is_none());
        let mut v = full("ADD");
        v.retain(|(k, _)| *k != "CNI_NETNS");
        assert_eq!(
            env_of(&v).unwrap_err().kind(),
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn status_gc_version_need_only_the_command() {
        for c in ["STATUS", "GC", "VERSION"] {
            assert!(env_of(&[("CNI_COMMAND", c)]).is_ok());
        }
    }

    #[test]
    fn hostile_and_missing_values_are_code_4() {
        let cases: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", ""),
            ("CNI_COMMAND", "add"),
            ("CNI_COMMAND", "RM -RF"),
            ("CNI_CONTAINERID", "../../x"),
            ("CNI_CONTAINERID", ""),
            ("CNI_IFNAME", "eth0/../../x"),
            ("CNI_IFNAME", "averyveryverylongname"),
            ("CNI_NETNS", "../../proc/1/ns/net"),
            ("CNI_NETNS", "/var/run/netns/../../../proc/1/ns/net"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../x"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=../..;K8S_POD_NAME=web"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default"),
            ("CNI_ARGS", ""),
            ("CNI_ARGS", "garbage"),
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_UID=../x",
            ),
        ];
        for (k, v) in cases {
            let mut e = full("ADD");
            e.retain(|(kk, _)| *kk != k);
            if !(k == "CNI_COMMAND" && v.is_empty()) {
                e.push((k, v));
            }
            let err = env_of(&e).unwrap_err();
            assert_eq!(err.kind(), ErrorCode::InvalidEnvironment, "{k}={v}: {err}");
        }
    }

    #[test]
    fn non_utf8_is_code_4() {
        let err = RuntimeEnv::from_lookup(|k| {
            if k == "CNI_COMMAND" {
                Err("not valid UTF-8".into())
            } else {
                Ok(None)
            }
        })
        .unwrap_err();
        assert_eq!(err.code, 4);
    }
}
