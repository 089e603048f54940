//! Lifecycle timings: rendering every object, the certificate decision and issuing, and generating
//! the whole bundle. `cargo bench -p hybridnet-operator --bench lifecycle`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is the failure report

use std::hint::black_box;
use std::time::Instant;

use hybridnet_operator::lifecycle::{certs, install, render, settings::Settings};

fn time<T>(name: &str, iterations: u32, mut f: impl FnMut() -> T) {
    for _ in 0..iterations.min(10) {
        black_box(f());
    }
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(f());
    }
    let per = start.elapsed() / iterations;
    println!("{name:<48} {iterations:>6} iterations  {per:>12.2?} each");
}

fn main() {
    let version = install::OPERATOR_VERSION;
    let sample = install::sample_cluster(version);
    time(
        "settings + render (sample HybridnetCluster)",
        20_000,
        || {
            let s = Settings::from_spec(&sample.spec, version, "hybridnet-system").expect("valid");
            render::render(&s, Some(b"ca"))
        },
    );
    let s = Settings::from_spec(&sample.spec, version, "hybridnet-system").expect("valid");
    let rendered = render::render(&s, Some(b"ca"));
    time("serialize rendered objects to JSON", 20_000, || {
        rendered
            .objects
            .iter()
            .map(|o| o.to_value().expect("json"))
            .collect::<Vec<_>>()
    });
    let dns = certs::service_dns_names("hybridnet-webhook", "hybridnet-system");
    let now = time::OffsetDateTime::now_utc();
    time("certs::issue (CA + serving certificate)", 200, || {
        certs::issue(&dns, now, None).expect("issue")
    });
    let bundle = certs::issue(&dns, now, None).expect("issue");
    time("certs::decide (parse Secret, decide)", 5_000, || {
        certs::decide(Some(&bundle), &dns, now.unix_timestamp())
    });
    time("install::files (whole bundle/ and deploy/)", 200, || {
        install::files(version).expect("files")
    });
}
