//! The bpf_conformance corpus (`../shared/conformance/bpf_conformance`): how many of its
//! programs the verifier accepts as raw-memory programs, and how many of its negative cases it
//! (or the assembler) refuses. Prints the numbers; it asserts only what is already reached, so
//! the counts can grow without editing the test first.

use std::path::PathBuf;

use ebpf_isa::conformance::{Expected, load_test};
use verifier::{Options, ProgramInput, ProgramKind, verify};

fn corpus(sub: &str) -> Option<Vec<PathBuf>> {
    let dir = ebpf_isa::conformance::find_suite()?.join(sub);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .collect();
    paths.sort();
    Some(paths)
}

fn input(name: &str, program: Vec<ebpf_isa::Insn>, memory: usize) -> ProgramInput {
    ProgramInput::new(
        name,
        ProgramKind::RawMemory {
            size: memory as u32,
        },
        program,
    )
}

#[test]
fn conformance_corpus() {
    let Some(tests) = corpus("tests") else {
        println!("bpf_conformance corpus not found; skipped");
        return;
    };
    let options = Options::default();
    let (mut accepted, mut refused, mut unreadable) = (0, Vec::new(), 0);
    for path in &tests {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Ok(test) = load_test(path) else {
            unreadable += 1;
            continue;
        };
        match verify(&input(&name, test.program, test.memory.len()), &options) {
            Ok(_) => accepted += 1,
            Err(rejection) => {
                let first = rejection
                    .errors
                    .first()
                    .map(|e| format!("{} at {}", e.kind, e.insn))
                    .unwrap_or_default();
                refused.push(format!("{name}: {first}"));
            }
        }
    }
    println!(
        "conformance tests: {} files, {accepted} accepted, {} refused, {unreadable} unreadable",
        tests.len(),
        refused.len()
    );
    for r in &refused {
        println!("  refused {r}");
    }

    let negative = corpus("negative").unwrap_or_default();
    let (mut by_asm, mut by_verifier, mut not_structural, mut missed) = (0, 0, 0, Vec::new());
    for path in &negative {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        match load_test(path) {
            Err(_) => by_asm += 1,
            Ok(test) if test.program.is_empty() && test.expected == Expected::None => by_asm += 1,
            // A wrong expected result is a test of the runner, not of the verifier.
            Ok(test) if matches!(test.expected, Expected::Result(_)) => not_structural += 1,
            Ok(test) => match verify(&input(&name, test.program, test.memory.len()), &options) {
                Err(_) => by_verifier += 1,
                Ok(_) => missed.push(name),
            },
        }
    }
    println!(
        "conformance negative: {} files, {by_asm} refused by the assembler/parser, {by_verifier} by the verifier, {not_structural} not structural (expect a result), {} accepted",
        negative.len(),
        missed.len()
    );
    for m in &missed {
        println!("  accepted negative {m}");
    }
    assert!(missed.is_empty(), "negative cases accepted: {missed:?}");
}
