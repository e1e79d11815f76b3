//! The verifier on the real sample lambdas: every object in `target/lambdas/` is accepted (its
//! contract is printed, with the time verification took), every object in
//! `target/lambdas/rejected/` is refused with the Rust source line in the message.
//!
//! The objects are built by `cargo xtask build-ebpf`; without them the test says so and passes,
//! except under `CI=true`, where missing objects are a failure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use loader::LambdaParams;
use loader::link::link_xdp;
use loader::verify::verifier_input;
use verifier::{Options, verify};

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "o"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn lambdas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambdas")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Links and verifies one object: the contract, or the rejection's text.
fn check(
    path: &Path,
) -> (
    Result<verifier::Contract, String>,
    std::time::Duration,
    usize,
) {
    let name = path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return (Err(format!("cannot read: {e}")), Default::default(), 0),
    };
    let linked = match link_xdp(&bytes, &name, &LambdaParams::default()) {
        Ok((_, linked)) => linked,
        Err(e) => return (Err(format!("cannot link: {e}")), Default::default(), 0),
    };
    let input = verifier_input(&linked);
    let start = Instant::now();
    let verdict = verify(&input, &Options::default()).map_err(|r| r.to_string());
    (verdict, start.elapsed(), input.insns.len())
}

#[test]
fn sample_lambdas_are_accepted_and_unsafe_ones_rejected() {
    let dir = lambdas_dir();
    let accepted = objects(&dir);
    let rejected = objects(&dir.join("rejected"));
    if accepted.is_empty() {
        assert!(
            !in_ci(),
            "no sample objects in {}: run `cargo xtask build-ebpf`",
            dir.display()
        );
        println!(
            "skipped: no sample objects in {} (run `cargo xtask build-ebpf`)",
            dir.display()
        );
        return;
    }
    let mut failures = Vec::new();
    for path in &accepted {
        let (verdict, took, slots) = check(path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match verdict {
            Ok(contract) => {
                println!(
                    "{name}: accepted in {:.1} ms ({slots} slots): max insns {}, stack {} B, \
                     map bytes {}, helpers {:?}, eligible {:?}, refused {:?}",
                    took.as_secs_f64() * 1e3,
                    contract.max_insns_executed,
                    contract.max_stack_bytes,
                    contract.map_bytes,
                    contract
                        .helpers_used
                        .iter()
                        .map(|(_, n)| *n)
                        .collect::<Vec<_>>(),
                    contract.eligible,
                    contract.refused,
                );
                for map in &contract.maps {
                    println!("    map {}: {} B", map.name, map.bytes);
                }
            }
            Err(why) => {
                println!(
                    "{name}: REJECTED in {:.1} ms\n{why}",
                    took.as_secs_f64() * 1e3
                );
                failures.push(format!("{name} rejected"));
            }
        }
    }
    for path in &rejected {
        let (verdict, took, _) = check(path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match verdict {
            Ok(contract) => failures.push(format!("{name} accepted: {contract:?}")),
            Err(why) => {
                println!(
                    "rejected/{name}: rejected in {:.1} ms as expected\n{why}",
                    took.as_secs_f64() * 1e3
                );
                // The message must point at the Rust source: "at <file>.rs:<line>:<col>".
                if !why.contains(".rs:") {
                    failures.push(format!("rejected/{name}: no Rust source line in\n{why}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
