//! The bpf_conformance suite through `lambdactl conformance`: the VM's interpreter and JIT must
//! give no wrong answers (refusing a program is allowed, and counted), and, as root, the kernel
//! runs the same suite as the reference and the VM must agree with every value it gives.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

/// The suite, next to the repository (`../shared/conformance/bpf_conformance`).
fn suite() -> Option<PathBuf> {
    let found = ebpf_isa::conformance::find_suite();
    if found.is_none() {
        eprintln!(
            "skipped: no bpf_conformance suite next to the repository or in ${} (it is not \
             part of the repository)",
            ebpf_isa::conformance::SUITE_ENV
        );
    }
    found
}

/// Runs `lambdactl conformance DIR --backend BACKENDS --json` and returns its report.
fn conformance(dir: &PathBuf, backends: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lambdactl"))
        .arg("conformance")
        .arg(dir)
        .args(["--backend", backends, "--json"])
        .output()
        .expect("lambdactl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: no wrong answers; 1: wrong answers (listed in the report, checked by the caller).
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "lambdactl conformance failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

fn count(report: &Value, backend: &str, what: &str) -> u64 {
    report["backends"][backend][what].as_u64().unwrap_or(0)
}

/// Prints the counts table, for the CI log.
fn print_counts(report: &Value) {
    println!(
        "bpf_conformance: {} files in {}",
        report["files"],
        report["dir"].as_str().unwrap_or("?")
    );
    println!(
        "{:<12} {:>5} {:>6} {:>11} {:>8} {:>8} {:>16} {:>8}",
        "backend",
        "pass",
        "wrong",
        "should-err",
        "errored",
        "refused",
        "kernel-rejected",
        "skipped"
    );
    let Some(backends) = report["backends"].as_object() else {
        return;
    };
    for (name, c) in backends {
        let n = |k: &str| c[k].as_u64().unwrap_or(0);
        println!(
            "{:<12} {:>5} {:>6} {:>11} {:>8} {:>8} {:>16} {:>8}",
            name,
            n("pass"),
            n("fail_wrong_answer"),
            n("fail_should_have_errored"),
            n("fail_errored"),
            n("refused"),
            n("kernel_rejected"),
            n("skipped")
        );
    }
    if backends.contains_key("kernel") {
        let bits = &report["kernel_result_bits"];
        println!(
            "kernel results compared on 64 bits: {}, on the low 32 bits only: {}",
            bits["full_64"], bits["low_32_only"]
        );
    }
}

/// `file: reason` for each result of `backend` with outcome `outcome`.
fn listed(report: &Value, backend: &str, outcome: &str) -> Vec<String> {
    report["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["backend"] == backend && r["outcome"] == outcome)
        .map(|r| {
            let detail = match outcome {
                "fail-wrong-answer" => format!("expected {}, got {}", r["expected"], r["got"]),
                "fail-should-have-errored" => format!("returned {}", r["got"]),
                _ => r["reason"].as_str().unwrap_or("").to_owned(),
            };
            format!("{}: {detail}", r["file"].as_str().unwrap_or("?"))
        })
        .collect()
}

#[test]
fn vm_engines_give_no_wrong_answers() {
    let Some(dir) = suite() else { return };
    let report = conformance(&dir, "interpreter,jit");
    print_counts(&report);
    let mut wrong = Vec::new();
    for engine in ["interpreter", "jit"] {
        let total = [
            "pass",
            "fail_wrong_answer",
            "fail_should_have_errored",
            "fail_errored",
            "refused",
            "skipped",
        ]
        .iter()
        .map(|k| count(&report, engine, k))
        .sum::<u64>();
        assert!(total > 0, "{engine}: nothing ran");
        for line in listed(&report, engine, "fail-errored") {
            println!("{engine} errored (not a wrong answer): {line}");
        }
        wrong.extend(
            listed(&report, engine, "fail-wrong-answer")
                .into_iter()
                .map(|l| format!("{engine}: {l}")),
        );
    }
    assert!(
        wrong.is_empty(),
        "the VM gave {} wrong answer(s):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn kernel_is_the_reference_and_the_vm_agrees_with_it() {
    let Some(dir) = suite() else { return };
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !ci {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root (set CI=true to make this a failure)");
        return;
    }
    let report = conformance(&dir, "all");
    print_counts(&report);
    assert!(
        report["kernel_unavailable"].is_null(),
        "the kernel backend did not run: {}",
        report["kernel_unavailable"]
    );
    for line in listed(&report, "kernel", "kernel-rejected") {
        println!("kernel verifier rejected {line}");
    }
    assert!(
        count(&report, "kernel", "pass") > 0,
        "the kernel passed nothing"
    );
    assert!(
        report["kernel_result_bits"]["full_64"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "the kernel never gave a full 64-bit result"
    );
    // Our harness must not make the reference look wrong.
    let kernel_failures: Vec<String> = [
        "fail-wrong-answer",
        "fail-errored",
        "fail-should-have-errored",
    ]
    .iter()
    .flat_map(|o| listed(&report, "kernel", o))
    .collect();
    assert!(
        kernel_failures.is_empty(),
        "the kernel column failed:\n{}",
        kernel_failures.join("\n")
    );
    let disagreements: Vec<String> = report["disagreements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            format!(
                "{}: kernel {}, {} {}",
                d["file"].as_str().unwrap_or("?"),
                d["kernel"].as_str().unwrap_or("?"),
                d["engine"].as_str().unwrap_or("?"),
                d["vm"].as_str().unwrap_or("?")
            )
        })
        .collect();
    println!("kernel vs VM disagreements: {}", disagreements.len());
    assert!(
        disagreements.is_empty(),
        "the VM disagrees with the kernel:\n{}",
        disagreements.join("\n")
    );
}
