//! The verifier's test corpus: every file in `tests/cases/` is one program with the maps it may
//! use and the expected outcome (PREVAIL-style data tests, one runner).
//!
//! A case file is a header, a line `--`, and uBPF assembly (`#` comments allowed):
//!
//! ```text
//! # what the case shows
//! kind: xdp                       (or `raw <bytes>`; default xdp)
//! map: counters hash 4 8 16       (name, type, key size, value size, max entries, optional `ro`)
//! profiles: kernel vm             (default: all)
//! expect: accept insns=12 stack=8 (both optional)
//! expect: reject 7 may be NULL    (instruction index, then a substring of the message)
//! eligible: kernel vm             (optional: exactly these backends eligible)
//! --
//! mov %r0, 2
//! exit
//! ```

use std::path::Path;

use verifier::{Backend, MapInfo, Options, ProgramInput, ProgramKind, map_type, verify};

#[derive(Debug)]
enum Expect {
    Accept {
        insns: Option<u64>,
        stack: Option<u32>,
    },
    Reject {
        insn: usize,
        message: String,
    },
}

struct Case {
    input: ProgramInput,
    options: Options,
    expect: Expect,
    eligible: Option<Vec<Backend>>,
}

fn backend(name: &str) -> Result<Backend, String> {
    Backend::ALL
        .into_iter()
        .find(|b| b.name() == name)
        .ok_or(format!("unknown backend {name}"))
}

fn map_type_named(name: &str) -> Result<u32, String> {
    Ok(match name {
        "hash" => map_type::HASH,
        "array" => map_type::ARRAY,
        "prog_array" => map_type::PROG_ARRAY,
        "perf" => map_type::PERF_EVENT_ARRAY,
        "percpu_hash" => map_type::PERCPU_HASH,
        "percpu_array" => map_type::PERCPU_ARRAY,
        "lru_hash" => map_type::LRU_HASH,
        "devmap" => map_type::DEVMAP,
        "queue" => map_type::QUEUE,
        "ringbuf" => map_type::RINGBUF,
        _ => return Err(format!("unknown map type {name}")),
    })
}

fn parse(name: &str, text: &str) -> Result<Case, String> {
    let (header, asm) = text
        .split_once("\n--\n")
        .ok_or("no `--` line between header and assembly")?;
    let mut kind = ProgramKind::Xdp;
    let mut maps = Vec::new();
    let mut options = Options::default();
    let mut expect = None;
    let mut eligible = None;
    for line in header.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or(format!("bad header line {line}"))?;
        let words: Vec<&str> = value.split_whitespace().collect();
        let num = |w: Option<&&str>| -> Result<u32, String> {
            w.ok_or("missing number")?
                .parse()
                .map_err(|e| format!("{e}"))
        };
        match key.trim() {
            "kind" => {
                kind = match words.first().copied() {
                    Some("xdp") => ProgramKind::Xdp,
                    Some("raw") => ProgramKind::RawMemory {
                        size: num(words.get(1))?,
                    },
                    other => return Err(format!("unknown kind {other:?}")),
                }
            }
            "map" => {
                maps.push(MapInfo {
                    name: words.first().ok_or("map name")?.to_string(),
                    map_type: map_type_named(words.get(1).ok_or("map type")?)?,
                    key_size: num(words.get(2))?,
                    value_size: num(words.get(3))?,
                    max_entries: num(words.get(4))?,
                    flags: 0,
                    read_only: words.get(5) == Some(&"ro"),
                });
            }
            "profiles" => {
                options.profiles = words.iter().map(|w| backend(w)).collect::<Result<_, _>>()?;
            }
            "eligible" => {
                eligible = Some(words.iter().map(|w| backend(w)).collect::<Result<_, _>>()?);
            }
            "max-insns" => options.max_insns = u64::from(num(words.first())?),
            "nfp-budget" => options.nfp_insn_budget = num(words.first())? as usize,
            "expect" => {
                expect = Some(match words.first().copied() {
                    Some("accept") => {
                        let mut insns = None;
                        let mut stack = None;
                        for w in &words[1..] {
                            match w.split_once('=') {
                                Some(("insns", v)) => insns = v.parse().ok(),
                                Some(("stack", v)) => stack = v.parse().ok(),
                                _ => return Err(format!("bad accept option {w}")),
                            }
                        }
                        Expect::Accept { insns, stack }
                    }
                    Some("reject") => {
                        let insn = num(words.get(1))? as usize;
                        let message = value
                            .trim()
                            .splitn(3, ' ')
                            .nth(2)
                            .ok_or("reject needs a message")?
                            .trim()
                            .to_string();
                        Expect::Reject { insn, message }
                    }
                    other => return Err(format!("bad expectation {other:?}")),
                })
            }
            other => return Err(format!("unknown header key {other}")),
        }
    }
    let insns = ebpf_isa::asm::assemble(asm).map_err(|e| format!("assembly: {e}"))?;
    let mut input = ProgramInput::new(name, kind, insns);
    input.maps = maps;
    Ok(Case {
        input,
        options,
        expect: expect.ok_or("no expect: line")?,
        eligible,
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
