//! The verifier's test corpus: every file in `tests/cases/` is one program with the maps it may
//! use and the expected outcome (PREVAIL-style data tests, one runner). The format is
//! `verifier::case_file`'s.

use std::path::Path;

use verifier::case_file::{CaseFile, Expect};
use verifier::{Backend, Options, ProgramInput, verify};

struct Case {
    input: ProgramInput,
    options: Options,
    expect: Expect,
    eligible: Option<Vec<Backend>>,
}

fn parse(name: &str, text: &str) -> Result<Case, String> {
    let file = CaseFile::parse(name, text).map_err(|e| e.to_string())?;
    Ok(Case {
        input: file.input().map_err(|e| e.to_string())?,
        options: file.options,
        expect: file.expect,
        eligible: file.eligible,
    })
}

/// Runs one case; Err says how it failed.
fn run(case: &Case) -> Result<(), String> {
    let result = verify(&case.input, &case.options);
    match (&case.expect, result) {
        (Expect::Accept { insns, stack }, Ok(contract)) => {
            if let Some(n) = insns
                && contract.max_insns_executed != *n
            {
                return Err(format!(
                    "max_insns_executed {} != expected {n}",
                    contract.max_insns_executed
                ));
            }
            if let Some(s) = stack
                && contract.max_stack_bytes != *s
            {
                return Err(format!(
                    "max_stack_bytes {} != expected {s}",
                    contract.max_stack_bytes
                ));
            }
            if let Some(eligible) = &case.eligible
                && &contract.eligible != eligible
            {
                return Err(format!(
                    "eligible {:?} != expected {eligible:?} (refused: {:?})",
                    contract.eligible, contract.refused
                ));
            }
            Ok(())
        }
        (Expect::Accept { .. }, Err(rejection)) => Err(format!("rejected:\n{rejection}")),
        (Expect::Reject { .. }, Ok(contract)) => Err(format!("accepted: {contract:?}")),
        (Expect::Reject { insn, message }, Err(rejection)) => {
            let matching = rejection
                .errors
                .iter()
                .any(|e| e.insn == *insn && e.kind.to_string().contains(message.as_str()));
            if matching {
                Ok(())
            } else {
                Err(format!("expected `{message}` at {insn}, got:\n{rejection}"))
            }
        }
    }
}

#[test]
fn cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/cases exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let (mut accept, mut reject, mut failures) = (0, 0, Vec::new());
    for path in &paths {
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(path).expect("readable case");
        let outcome = parse(&name, &text).and_then(|case| {
            run(&case)?;
            Ok(matches!(case.expect, Expect::Accept { .. }))
        });
        match outcome {
            Ok(true) => accept += 1,
            Ok(false) => reject += 1,
            Err(why) => failures.push(format!("{name}: {why}")),
        }
    }
    println!(
        "verifier cases: {} files, {accept} safe accepted, {reject} unsafe rejected, {} failed",
        paths.len(),
        failures.len()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(failures.is_empty(), "{} case(s) failed", failures.len());
}
