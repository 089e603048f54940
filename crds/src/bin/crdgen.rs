//! Writes one YAML file per CRD into a directory (default: the `crds/` folder of the source tree).
//!
//! `cargo run -p hybridnet-api --bin crdgen [DIR]`; `--check` compares instead of writing and exits
//! non-zero on drift.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut check = false;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: crdgen [--check] [DIR]\nWrites (or with --check verifies) one YAML file per hybridnet CRD in DIR (default: the crds/ source folder)."
                );
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("crdgen {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            other if other.starts_with('-') => {
                eprintln!("crdgen: unknown flag {other:?} (see --help)");
                return ExitCode::from(2);
            }
            other => dir = PathBuf::from(other),
        }
    }
    let mut drift = false;
    for (file, crd) in hybridnet_api::crd::all() {
        let yaml = match hybridnet_api::crd::to_yaml(&crd) {
            Ok(y) => y,
            Err(e) => {
                eprintln!("crdgen: rendering {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let path = dir.join(file);
        if check {
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk != yaml {
                eprintln!(
                    "crdgen: {} differs from the types; run `cargo run -p hybridnet-api --bin crdgen`",
                    path.display()
                );
                drift = true;
            }
        } else if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("crdgen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", path.display());
        }
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
