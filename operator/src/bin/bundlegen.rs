//! Writes the OLM bundle (`bundle/`, `bundle.Dockerfile`) and the kustomize install (`deploy/`)
//! from the operator's rendering code.
//!
//! `cargo run -p hybridnet-operator --bin bundlegen [--check] [--image-digest sha256:<hex>] [ROOT]`:
//! ROOT defaults to the repository root; `--check` compares instead of writing and exits non-zero
//! on drift; `--image-digest` pins the image by digest (a release bundle; docs/operations.md, OLM).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use hybridnet_operator::lifecycle::install;

fn main() -> ExitCode {
    let mut check = false;
    let mut digest: Option<String> = None;
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--image-digest" => match args.next() {
                Some(d) => digest = Some(d),
                None => {
                    eprintln!("bundlegen: --image-digest needs a value (sha256:<64 hex>)");
                    return ExitCode::from(2);
                }
            },
            "--check" => check = true,
            "-h" | "--help" => {
                println!(
                    "usage: bundlegen [--check] [--image-digest sha256:<hex>] [ROOT]\nWrites (or with --check verifies) bundle/, bundle.Dockerfile and deploy/ under ROOT (default: the repository root); --image-digest pins the image by digest."
                );
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("bundlegen {}", install::OPERATOR_VERSION);
                return ExitCode::SUCCESS;
            }
            other if other.starts_with('-') => {
                eprintln!("bundlegen: unknown flag {other:?} (see --help)");
                return ExitCode::from(2);
            }
            other => root = PathBuf::from(other),
        }
    }
    let files = match install::files_pinned(install::OPERATOR_VERSION, digest.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bundlegen: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut drift = false;
    for (rel, content) in files {
        let path = root.join(&rel);
        if check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                eprintln!(
                    "bundlegen: {rel} differs from the generator; run `cargo run -p hybridnet-operator --bin bundlegen`"
                );
                drift = true;
            }
            continue;
        }
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("bundlegen: creating {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::write(&path, content) {
            eprintln!("bundlegen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {rel}");
    }
    if drift {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
