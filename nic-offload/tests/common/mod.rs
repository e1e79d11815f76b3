//! What the nic-offload integration tests share: the root gate and the sample objects.
#![allow(dead_code)] // each test binary uses its own part

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nic_offload::{CoalesceInput, MatchRule};

/// Without root the kernel part skips with a reason, except under CI=true, where it must run.
pub fn kernel_tests_enabled(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: CI=true but not running as root; kernel tests must run in CI");
    }
    let _ = writeln!(
        std::io::stderr(),
        "skipping {test}: needs root (CAP_BPF) for BPF_PROG_LOAD and BPF_PROG_TEST_RUN"
    );
    false
}

/// A built lambda object in target/lambdas.
pub fn object(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/lambdas")
        .join(format!("{name}.o"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo xtask build-ebpf`",
        path.display()
    );
    path
}

/// A sample lambda linked for `rule`, with its seed records.
pub fn sample(name: &str, rule: MatchRule) -> CoalesceInput {
    let bytes = std::fs::read(object(name)).unwrap();
    CoalesceInput::from_object(&bytes, name, rule).unwrap()
}

pub fn rule(port: u16, lambda_id: Option<u32>) -> MatchRule {
    MatchRule { port, lambda_id }
}
