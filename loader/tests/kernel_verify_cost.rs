//! What each sample lambda costs the kernel's verifier: the instructions it processed to accept
//! the program (`bpf_prog_info.verified_insns`), against its limit of one million per program.
//! `deploy --mode coalesced` puts many lambdas into one program whose cost is about the sum of
//! theirs, so this figure is what decides how many lambdas fit one coalesced program.
//!
//! The counts are deterministic for a given kernel and object (not timings). The test prints
//! them and fails when a sample costs more than its bound: the bounds are generous (several
//! times today's figures) but far below what the SDK used to cost (whoami ≈ 200k, grayscale ≈
//! 830k on kernel 6.18), so a regression to that explosion fails here first.
//!
//! Each object is loaded twice, answering any lambda id and only one: the two are different
//! programs for the verifier (`.rodata` is frozen, so the kernel prunes the other branch).
//!
//! Needs root (BPF_PROG_LOAD) and the objects of `cargo xtask build-ebpf`; skipped with the
//! reason otherwise, except under `CI=true`, where it must run.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use loader::LambdaParams;
use loader::kernel::{load_linked, verified_insns};
use loader::link::link_xdp;

/// The kernel's limit on processed instructions per program (BPF_COMPLEXITY_LIMIT_INSNS).
const KERNEL_LIMIT: u32 = 1_000_000;

/// Per sample: the most processed instructions allowed (for either parameter set). About four
/// times the figures measured on kernel 6.18 after the SDK's rework (pong 3,681, whoami 5,114,
/// counter 4,978, static-server 10,930, memcached 61,694, grayscale 36,820); before it they
/// were 192,180, 197,992, 375,953, 378,580, 608,435 and 830,014.
const BOUNDS: &[(&str, u32)] = &[
    ("pong", 20_000),
    ("whoami", 25_000),
    ("counter", 25_000),
    ("static-server", 45_000),
    ("memcached", 250_000),
    ("grayscale", 150_000),
    ("baseline-raw-pong", 2_000),
];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Without root the test skips with a reason, except under CI=true, where it must run.
fn kernel_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if in_ci() {
        panic!("{test}: CI=true but not running as root; kernel tests must run in CI");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: needs root (CAP_BPF) for BPF_PROG_LOAD"
    );
    false
}

fn object(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/lambdas")
        .join(format!("{name}.o"));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{} is missing: run `cargo xtask build-ebpf`",
        path.display()
    );
    let _ = writeln!(
        std::io::stderr(),
        "skipping {name}: {} is missing (run `cargo xtask build-ebpf`)",
        path.display()
    );
    None
}

/// Links `path` for `params`, loads it (maps created, not pinned) and returns what the kernel's
/// verifier processed.
fn kernel_cost(path: &Path, name: &str, params: &LambdaParams) -> Result<u32, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let (_, linked) =
        link_xdp(&bytes, name, params).map_err(|e| format!("{name}: cannot link: {e}"))?;
    let loaded = load_linked(&linked.insns, &linked.maps, &[], None)
        .map_err(|e| format!("{name}: the kernel refused it: {e}"))?;
    verified_insns(loaded.prog.as_fd()).map_err(|e| format!("{name}: no program info: {e}"))
}

#[test]
fn samples_stay_cheap_for_the_kernel_verifier() {
    if !kernel_tests_enabled("samples_stay_cheap_for_the_kernel_verifier") {
        return;
    }
    let mut failures = Vec::new();
    let mut measured = 0;
    println!(
        "{:<20} {:>10} {:>10} {:>10}",
        "lambda", "any id", "one id", "bound"
    );
    for &(name, bound) in BOUNDS {
        let Some(path) = object(name) else { continue };
        let any = kernel_cost(&path, name, &LambdaParams::default());
        let one = kernel_cost(
            &path,
            name,
            &LambdaParams {
                lambda_id: Some(7),
                ..LambdaParams::default()
            },
        );
        let shown = |r: &Result<u32, String>| match r {
            Ok(n) => n.to_string(),
            Err(_) => "refused".to_owned(),
        };
        println!(
            "{name:<20} {:>10} {:>10} {bound:>10}",
            shown(&any),
            shown(&one)
        );
        measured += 1;
        for cost in [any, one] {
            let cost = match cost {
                Ok(cost) => cost,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            assert!(
                cost > 0,
                "{name}: the kernel reported no verified instructions"
            );
            if cost > bound {
                failures.push(format!(
                    "{name}: {cost} instructions processed, over its bound of {bound} \
                     (limit {KERNEL_LIMIT} per program, shared by every lambda coalesced into it)"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "kernel verifier cost regressed:\n{}",
        failures.join("\n")
    );
    if measured == 0 {
        let _ = writeln!(std::io::stderr(), "no sample object measured");
    }
}
