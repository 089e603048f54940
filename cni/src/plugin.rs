//! The plugin's logic: (environment, stdin, agent) -> (stdout, exit code).

use serde_json::json;

use crate::client::Agent;
use crate::config::{NetConf, sniff_version};
use crate::env::{Command, RuntimeEnv};
use crate::error::{CniError, ErrorCode};
use crate::protocol::{AgentCommand, AgentRequest, PROTOCOL_VERSION};
use crate::result::prev_result_ips;
use crate::version::CniVersion;

/// What the plugin process prints and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub exit_code: i32,
}

impl Output {
    fn json(v: &serde_json::Value) -> Output {
        let mut stdout = serde_json::to_vec_pretty(v).unwrap_or_default();
        stdout.push(b'\n');
        Output {
            stdout,
            exit_code: 0,
        }
    }

    fn empty() -> Output {
        Output {
            stdout: Vec::new(),
            exit_code: 0,
        }
    }

    fn error(e: &CniError, version: CniVersion) -> Output {
        let mut out = Output::json(&e.to_json(version));
        out.exit_code = 1;
        out
    }
}

/// Runs one plugin invocation. `stdin` is what was read (at most [`crate::MAX_INPUT_BYTES`]
/// plus one byte, so that oversize input is detected); `agent_for` builds the agent client
/// from the validated config.
pub fn run<A: Agent>(
    get_env: impl Fn(&str) -> Result<Option<String>, String>,
    stdin: &[u8],
    agent_for: impl FnOnce(&NetConf) -> A,
) -> Output {
    let reply_version = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
    match run_inner(get_env, stdin, agent_for) {
        Ok(out) => out,
        Err(e) => Output::error(&e, reply_version),
    }
}

fn run_inner<A: Agent>(
    get_env: impl Fn(&str) -> Result<Option<String>, String>,
    stdin: &[u8],
    agent_for: impl FnOnce(&NetConf) -> A,
) -> Result<Output, CniError> {
    let env = RuntimeEnv::from_lookup(get_env)?;
    if env.command == Command::Version {
        let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
        let v = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
        return Ok(Output::json(&json!({
            "cniVersion": v.as_str(),
            "supportedVersions": supported,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let version = conf.cni_version;
    let command = match env.command {
        Command::Add => AgentCommand::Add,
        Command::Del => AgentCommand::Del,
        Command::Check if version.has_check() => AgentCommand::Check,
        Command::Status if version.has_status_and_gc() => AgentCommand::Status,
        Command::Gc if version.has_status_and_gc() => AgentCommand::Gc,
        Command::Check | Command::Status | Command::Gc => {
            return Err(CniError::incompatible_version(format!(
                "{} is not part of CNI {version}; it needs cniVersion {} or later",
                env.command.as_str(),
                if env.command == Command::Check {
                    "0.4.0"
                } else {
                    "1.1.0"
                }
            )));
        }
        Command::Version => return Ok(Output::empty()),
    };
    let valid_attachments = if command == AgentCommand::Gc {
        // Without the list every attachment would look stale: refuse rather than guess.
        conf.valid_attachments.clone().ok_or_else(|| {
            CniError::invalid_config(
                "GC needs cni.dev/valid-attachments in the network configuration (the runtime adds it)",
            )
        })?
    } else {
        Vec::new()
    };
    // CHECK compares with what ADD returned; parse it before talking to the agent.
    let expected_ips = match (command, &conf.prev_result) {
        (AgentCommand::Check, Some(prev)) => Some(prev_result_ips(prev).map_err(|e| {
            CniError::invalid_config(format!("prevResult is not a CNI result: {e}"))
        })?),
        _ => None,
    };
    let req = AgentRequest {
        version: PROTOCOL_VERSION,
        command,
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        pod: env.pod.clone(),
        valid_attachments,
    };
    let agent = agent_for(&conf);
    let outcome = agent.call(&req);
    match command {
        AgentCommand::Add => {
            let result = outcome?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::AgentProtocol,
                    "the hybridnet agent answered ADD without a result",
                )
            })?;
            Ok(Output::json(&result.to_json(version)))
        }
        AgentCommand::Check => {
            let live = outcome?.ok_or_else(|| {
                CniError::new(
                    ErrorCode::AgentProtocol,
                    "the hybridnet agent answered CHECK without a result",
                )
            })?;
            if let Some(expected) = expected_ips {
                let got = live.container_ips();
                if got != expected {
                    return Err(CniError::new(
                        ErrorCode::CheckFailed,
                        format!(
                            "container {} has addresses {got:?} but ADD returned {expected:?}",
                            env.container_id.as_deref().unwrap_or("")
                        ),
                    ));
                }
            }
            Ok(Output::empty())
        }
        AgentCommand::Status => match outcome {
            Ok(_) => Ok(Output::empty()),
            // STATUS speaks its own codes: the agent not answering means "not available".
            Err(e) if matches!(e.kind(), ErrorCode::TryAgainLater | ErrorCode::Io) => {
                Err(CniError::new(ErrorCode::PluginNotAvailable, e.msg).with_details(e.details))
            }
            Err(e) => Err(e),
        },
        AgentCommand::Del | AgentCommand::Gc => outcome.map(|_| Output::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{CniResult, Interface, IpConfig};
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records requests and answers from a script: these tests are about the plugin's own
    /// decisions; the real agent is exercised by the node crate's tests.
    struct Scripted {
        seen: RefCell<Vec<AgentRequest>>,
        answer: Result<Option<CniResult>, CniError>,
    }

    impl Agent for &Scripted {
        fn call(&self, req: &AgentRequest) -> Result<Option<CniResult>, CniError> {
            self.seen.borrow_mut().push(req.clone());
            self.answer.clone()
        }
    }

    fn result() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "hybrx".into(),
                    mac: "ee:ee:ee:ee:ee:ee".into(),
                    mtu: None,
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "02:00:00:00:00:01".into(),
                    mtu: None,
                    sandbox: Some("/var/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "198.18.0.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            ..Default::default()
        }
    }

    fn env(cmd: &str) -> HashMap<String, String> {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/p"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn invoke(
        env: &HashMap<String, String>,
        stdin: &str,
        agent: &Scripted,
    ) -> (serde_json::Value, i32) {
        let out = run(|k| Ok(env.get(k).cloned()), stdin.as_bytes(), |_| agent);
        let v = if out.stdout.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap()
        };
        (v, out.exit_code)
    }

    fn ok_agent() -> Scripted {
        Scripted {
            seen: RefCell::new(vec![]),
            answer: Ok(Some(result())),
        }
    }

    const CONF: &str = r#"{"cniVersion":"0.3.1","name":"hybridnet","type":"hybridnet"}"#;

    #[test]
    fn add_prints_versioned_result_and_forwards_identity() {
        let a = ok_agent();
        let (v, rc) = invoke(&env("ADD"), CONF, &a);
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        let seen = a.seen.borrow();
        assert_eq!(seen[0].command, AgentCommand::Add);
        assert_eq!(seen[0].pod.as_ref().unwrap().name, "web-0");
    }

    #[test]
    fn version_needs_no_config() {
        let a = ok_agent();
        let e: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
        let (v, rc) = invoke(&e, "", &a);
        assert_eq!(rc, 0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        let (v, _) = invoke(&e, r#"{"cniVersion":"0.4.0"}"#, &a);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(a.seen.borrow().is_empty());
    }

    #[test]
    fn invalid_input_never_reaches_the_agent() {
        let a = ok_agent();
        let mut bad_env = env("ADD");
        bad_env.insert(
            "CNI_ARGS".into(),
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=../../x".into(),
        );
        let cases: Vec<(HashMap<String, String>, &str, u32)> = vec![
            (env("ADD"), "{bad json", 6),
            (env("ADD"), r#"{"cniVersion":"2.0.0","name":"n"}"#, 1),
            (env("CHECK"), r#"{"cniVersion":"0.3.1","name":"n"}"#, 1),
            (env("STATUS"), r#"{"cniVersion":"1.0.0","name":"n"}"#, 1),
            (env("GC"), r#"{"cniVersion":"1.1.0","name":"n"}"#, 7),
            (
                env("CHECK"),
                r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"zz"}]}}"#,
                7,
            ),
            (bad_env, CONF, 4),
            (HashMap::new(), CONF, 4),
        ];
        for (e, stdin, code) in cases {
            let (v, rc) = invoke(&e, stdin, &a);
            assert_eq!(rc, 1, "{stdin}");
            assert_eq!(v["code"], code, "{stdin}: {v}");
            assert!(v["msg"].as_str().unwrap().len() > 10);
        }
        assert!(
            a.seen.borrow().is_empty(),
            "agent was called: {:?}",
            a.seen.borrow()
        );
    }

    #[test]
    fn check_compares_prev_result() {
        let a = ok_agent();
        let same = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","prevResult":{}}}"#,
            result().to_json(CniVersion::V1_0_0)
        );
        assert_eq!(invoke(&env("CHECK"), &same, &a).1, 0);
        let other = r#"{"cniVersion":"1.0.0","name":"n","prevResult":{"ips":[{"address":"198.18.0.9/32"}]}}"#;
        let (v, rc) = invoke(&env("CHECK"), other, &a);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(102)));
    }

    #[test]
    fn status_maps_unreachable_agent_to_50() {
        let a = Scripted {
            seen: RefCell::new(vec![]),
            answer: Err(CniError::try_again_later("agent down")),
        };
        let e: HashMap<String, String> = [("CNI_COMMAND".to_string(), "STATUS".to_string())].into();
        let (v, rc) = invoke(&e, r#"{"cniVersion":"1.1.0","name":"n"}"#, &a);
        assert_eq!((rc, v["code"].as_u64()), (1, Some(50)));
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn agent_errors_pass_through_with_callers_version() {
        let a = Scripted {
            seen: RefCell::new(vec![]),
            answer: Err(CniError::try_again_later(
                "no IPInstance for pod default/web-0",
            )),
        };
        let (v, rc) = invoke(&env("ADD"), CONF, &a);
        assert_eq!(rc, 1);
        assert_eq!(v["code"], 11);
        assert_eq!(v["cniVersion"], "0.3.1");
    }

    #[test]
    fn gc_forwards_the_valid_list_del_prints_nothing() {
        let a = Scripted {
            seen: RefCell::new(vec![]),
            answer: Ok(None),
        };
        let e: HashMap<String, String> = [("CNI_COMMAND".to_string(), "GC".to_string())].into();
        let conf = r#"{"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#;
        let (v, rc) = invoke(&e, conf, &a);
        assert_eq!((v, rc), (serde_json::Value::Null, 0));
        assert_eq!(a.seen.borrow()[0].valid_attachments.len(), 1);
        let (v, rc) = invoke(&env("DEL"), CONF, &a);
        assert_eq!((v, rc), (serde_json::Value::Null, 0));
    }
}
