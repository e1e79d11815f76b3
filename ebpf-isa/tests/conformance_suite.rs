//! Every bpf_conformance file through the parser, and every program through the disassembler and
//! back.
//!
//! The suite lives outside the repository (`../shared/conformance/bpf_conformance` next to the
//! workspace, see DESIGN.md): when it is missing the tests say so and pass, because a checkout
//! without the shared data must still build and test.

use std::path::{Path, PathBuf};

use ebpf_isa::asm::{AsmError, assemble};
use ebpf_isa::conformance::{ConformanceFileError, Expected, load_test};
use ebpf_isa::disasm::{DisasmError, disassemble};

fn suite_dir(sub: &str) -> Option<PathBuf> {
    match ebpf_isa::conformance::find_suite() {
        Some(suite) => Some(suite.join(sub)),
        None => {
            println!(
                "skipped: the shared bpf_conformance suite is not on this machine (set {})",
                ebpf_isa::conformance::SUITE_ENV
            );
            None
        }
    }
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "data"))
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_test_file_parses_and_round_trips() {
    let Some(dir) = suite_dir("tests") else {
        return;
    };
    let files = data_files(&dir);
    let mut failures = Vec::new();
    let mut parsed = 0;
    let mut round_tripped = 0;
    let mut slots = 0;
    for path in &files {
        let test = match load_test(path) {
            Ok(test) => test,
            Err(e) => {
                failures.push(format!("parse: {e}"));
                continue;
            }
        };
        parsed += 1;
        if test.program.is_empty() {
            failures.push(format!("{}: no program", test.name));
        }
        if !matches!(test.expected, Expected::Result(_)) {
            failures.push(format!(
                "{}: expects {:?}, not a result",
                test.name, test.expected
            ));
        }
        slots += test.program.len();
        match disassemble(&test.program) {
            Ok(lines) => match assemble(&lines.join("\n")) {
                Ok(again) if again == test.program => round_tripped += 1,
                Ok(again) => failures.push(format!(
                    "{}: round trip changed the program:\n{}\n{:?}\n{:?}",
                    test.name,
                    lines.join("\n"),
                    test.program,
                    again
                )),
                Err(e) => failures.push(format!(
                    "{}: disassembly does not assemble: {e}\n{}",
                    test.name,
                    lines.join("\n")
                )),
            },
            Err(e) => failures.push(format!("{}: disassemble: {e}", test.name)),
        }
    }
    println!(
        "{} files in tests/: {parsed} parsed, {round_tripped} round-tripped slot for slot \
         ({slots} slots)",
        files.len()
    );
    assert!(!files.is_empty(), "no .data files in {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn negative_files_fail_where_they_should() {
    let Some(dir) = suite_dir("negative") else {
        return;
    };
    let files = data_files(&dir);
    let mut at_assembly = Vec::new();
    let mut other_file_errors = Vec::new();
    let mut disasm_refuses = Vec::new();
    let mut for_a_verifier = Vec::new();
    let mut surprises = Vec::new();

    for path in &files {
        let name = name(path);
        match load_test(path) {
            Err(ConformanceFileError::Asm { source, .. }) => {
                // The file's own name says which error it is about.
                let fits = match name.as_str() {
                    "invalid_imm32_dec_range" | "invalid_imm32_hex_range" => {
                        matches!(source, AsmError::ImmediateOutOfRange { bits: 32, .. })
                    }
                    "invalid_label" => matches!(source, AsmError::UndefinedLabel { .. }),
                    "invalid_lock" | "invalid_operand_count" => {
                        matches!(source, AsmError::OperandCount { .. })
                    }
                    "invalid_lock2" => matches!(source, AsmError::MissingAtomicOperation { .. }),
                    "invalid_mnemonic" => matches!(source, AsmError::UnknownMnemonic { .. }),
                    "invalid_offset" => matches!(source, AsmError::BadMemoryOperand { .. }),
                    "invalid_offset_range" => {
                        matches!(source, AsmError::OffsetOutOfRange { bits: 16, .. })
                    }
                    "invalid_register" => matches!(source, AsmError::BadRegister { .. }),
                    _ => false,
                };
                if !fits {
                    surprises.push(format!("{name}: unexpected assembler error: {source}"));
                }
                at_assembly.push(format!("{name}: {source}"));
            }
            Err(e) => {
                if name != "invalid_unknown_directive"
                    || !matches!(e, ConformanceFileError::UnknownSection { .. })
                {
                    surprises.push(format!("{name}: unexpected file error: {e}"));
                }
                other_file_errors.push(format!("{e}"));
            }
            Ok(test) => {
                if name.starts_with("invalid_") {
                    surprises.push(format!(
                        "{name}: assembled, but its name says it is invalid"
                    ));
                }
                // The unused-* files set a field the instruction does not use; the disassembler
                // cannot print that faithfully and must say so.
                match disassemble(&test.program) {
                    Err(e @ DisasmError::InvalidField { .. }) => {
                        disasm_refuses.push(format!("{name}: {e}"))
                    }
                    Err(e) => surprises.push(format!("{name}: unexpected disassembler error: {e}")),
                    Ok(_) if name.starts_with("unused-") => surprises.push(format!(
                        "{name}: the disassembler printed a non-zero unused field"
                    )),
                    Ok(_) => {}
                }
                for_a_verifier.push(name);
            }
        }
    }

    println!("{} files in negative/:", files.len());
    println!("  {} fail at assembly:", at_assembly.len());
    for line in &at_assembly {
        println!("    {line}");
    }
    println!("  {} fail as files:", other_file_errors.len());
    for line in &other_file_errors {
        println!("    {line}");
    }
    println!(
        "  {} assemble or decode fine and are for a verifier to reject ({} of them have an unused \
         field set, which the disassembler refuses): {}",
        for_a_verifier.len(),
        disasm_refuses.len(),
        for_a_verifier.join(", ")
    );
    assert!(surprises.is_empty(), "{}", surprises.join("\n"));
}
