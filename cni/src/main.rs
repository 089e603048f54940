//! `hybridnet`: the CNI plugin. Reads the CNI environment and stdin, forwards the request to the
//! node agent over its unix socket, and prints the spec result (or error object) on stdout.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::time::Duration;

use hybridnet_cni::client::UnixAgent;
use hybridnet_cni::{MAX_INPUT_BYTES, plugin};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("hybridnet CNI plugin {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "hybridnet CNI plugin {}: run by a container runtime with CNI_COMMAND=ADD|DEL|CHECK|STATUS|GC|VERSION and the network configuration on stdin; it forwards to the hybridnet-node agent socket (config key server_socket).",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    // Read at most one byte past the limit so oversize input is refused, not truncated.
    let mut stdin = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_INPUT_BYTES as u64 + 1)
        .read_to_end(&mut stdin);
    let out = match read {
        Ok(_) => plugin::run(
            |k| match std::env::var(k) {
                Ok(v) => Ok(Some(v)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err("value is not valid UTF-8".to_string())
                }
            },
            &stdin,
            |conf| {
                UnixAgent::new(
                    &conf.server_socket,
                    Duration::from_secs(conf.timeout_seconds),
                )
            },
        ),
        Err(e) => plugin::Output {
            stdout: format!(
                "{{\"cniVersion\":\"{}\",\"code\":5,\"msg\":\"reading stdin: {}\"}}\n",
                hybridnet_cni::CniVersion::LATEST,
                e.to_string().replace(['"', '\\'], "'")
            )
            .into_bytes(),
            exit_code: 1,
        },
    };
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(&out.stdout);
    let _ = so.flush();
    std::process::exit(out.exit_code);
}
