//! Soundness of the verifier's time bound against the VM: for every bpf_conformance program
//! the verifier accepts, the instructions the VM's interpreter actually executes are at most
//! the contract's `max_insns_executed`. Prints the tightest and loosest ratios.
//!
//! `loader::vm::raw::run_raw_counted` gives the executed count.

use std::path::PathBuf;

use ebpf_isa::conformance::load_test;
use loader::vm::raw::run_raw_counted;
use verifier::{Options, ProgramInput, ProgramKind, verify};

/// Budget for one run: far above any bound the verifier accepts by default, so the run never
/// stops before the program does.
const BUDGET: u64 = 10 * verifier::DEFAULT_MAX_INSNS;

fn corpus() -> Option<Vec<PathBuf>> {
    let dir = ebpf_isa::conformance::find_suite()?.join("tests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    Some(paths)
}

/// Runs `code` in the interpreter on a copy of `memory`: instructions executed, or the error.
fn executed(code: &[ebpf_isa::Insn], memory: &[u8]) -> Result<u64, String> {
    let mut memory = memory.to_vec();
    run_raw_counted(code, &mut memory, BUDGET)
        .map(|finished| finished.executed)
        .map_err(|e| e.to_string())
}

#[test]
fn bound_covers_every_conformance_run() {
    let Some(tests) = corpus() else {
        // External test data, not a kernel feature: absent on a machine, skipped even in CI.
        println!(
            "skipped: no bpf_conformance suite on this machine (set {})",
            ebpf_isa::conformance::SUITE_ENV
        );
        return;
    };
    let options = Options::default();
    let (mut checked, mut refused, mut failed_runs) = (0, 0, Vec::new());
    let mut violations = Vec::new();
    // (executed / bound, name, executed, bound)
    let mut ratios: Vec<(f64, String, u64, u64)> = Vec::new();
    for path in &tests {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Ok(test) = load_test(path) else {
            continue;
        };
        let input = ProgramInput::new(
            name.clone(),
            ProgramKind::RawMemory {
                size: test.memory.len() as u32,
            },
            test.program.clone(),
        );
        let Ok(contract) = verify(&input, &options) else {
            refused += 1;
            continue;
        };
        match executed(&test.program, &test.memory) {
            Ok(n) => {
                checked += 1;
                let bound = contract.max_insns_executed;
                if n > bound {
                    violations.push(format!("{name}: executed {n} > bound {bound}"));
                }
                ratios.push((n as f64 / bound.max(1) as f64, name, n, bound));
            }
            // A verified program the VM cannot run is a finding of its own (a VM gap, or
            // an unsafe program we accepted): report it.
            Err(e) => failed_runs.push(format!("{name}: {e}")),
        }
    }
    ratios.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!(
        "bound vs VM: {checked} accepted programs run, {refused} refused by the verifier, {} \
         runs failed, {} bound violations",
        failed_runs.len(),
        violations.len()
    );
    let exact = ratios.iter().filter(|r| r.2 == r.3).count();
    println!("  bound exact (executed == bound) for {exact} of {checked}");
    for (label, slice) in [
        ("tightest", ratios.iter().take(3).collect::<Vec<_>>()),
        ("loosest", ratios.iter().rev().take(5).collect::<Vec<_>>()),
    ] {
        for (ratio, name, n, bound) in slice {
            println!("  {label}: {name}: executed {n} / bound {bound} = {ratio:.3}");
        }
    }
    for f in &failed_runs {
        println!("  run failed: {f}");
    }
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(failed_runs.is_empty(), "{failed_runs:#?}");
}
