//! Writes seed corpora for the fuzz targets, so the fuzzers start from real programs instead of
//! rediscovering the instruction encoding and the ELF layout:
//!
//! - `corpus/verifier/`: every case of `verifier/tests/cases/` and every program of the
//!   bpf_conformance corpus (`../shared/conformance/bpf_conformance/tests`), as header + code
//!   (format in `src/lib.rs`);
//! - `corpus/elf/`: the sample lambda objects of `target/lambdas/` (`cargo xtask build-ebpf`).
//!
//! Run from `fuzz/`: `cargo run --example seeds` (stable is enough).

use std::path::{Path, PathBuf};

use lambda_nic_fuzz::verifier_header;

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The `MAP_MENU` entry closest to a case file's `map:` line, so map references in the seed
/// point at a map of a similar kind.
fn menu_entry(line: &str) -> usize {
    let words: Vec<&str> = line.split_whitespace().collect();
    match (words.get(1).copied(), words.get(5).copied()) {
        (Some("array"), Some("ro")) => 2,
        (Some("array" | "percpu_array"), _) => 1,
        (Some("prog_array"), _) => 3,
        _ => 0,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.join("..");
    let out = fuzz.join("corpus").join("verifier");
    std::fs::create_dir_all(&out)?;

    let mut written = 0;
    for path in files(&root.join("verifier/tests/cases"), "txt") {
        let text = std::fs::read_to_string(&path)?;
        let Some((header, asm)) = text.split_once("\n--\n") else {
            continue;
        };
        let mut size = 0u16;
        let mut maps = Vec::new();
        for line in header.lines() {
            match line.split_once(':') {
                Some(("kind", v)) => {
                    size = v
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
                Some(("map", v)) => maps.push(menu_entry(v)),
                _ => {}
            }
        }
        // Cases the assembler refuses test the assembler, not the verifier.
        let Ok(insns) = ebpf_isa::asm::assemble(asm) else {
            continue;
        };
        let mut seed = verifier_header(size, &maps).to_vec();
        seed.extend(ebpf_isa::encode(&insns));
        std::fs::write(out.join(format!("case-{}", stem(&path))), seed)?;
        written += 1;
    }
    // Wherever the machine keeps the suite (see ebpf_isa::conformance::find_suite).
    let conformance = ebpf_isa::conformance::find_suite()
        .map(|suite| suite.join("tests"))
        .unwrap_or_else(|| root.join("../shared/conformance/bpf_conformance/tests"));
    for path in files(&conformance, "data") {
        let Ok(test) = ebpf_isa::conformance::load_test(&path) else {
            continue;
        };
        let size = u16::try_from(test.memory.len()).unwrap_or(u16::MAX);
        let mut seed = verifier_header(size, &[]).to_vec();
        seed.extend(ebpf_isa::encode(&test.program));
        std::fs::write(out.join(format!("conformance-{}", stem(&path))), seed)?;
        written += 1;
    }
    println!("{written} seeds in {}", out.display());

    let out = fuzz.join("corpus").join("elf");
    std::fs::create_dir_all(&out)?;
    let objects = files(&root.join("target/lambdas"), "o");
    for path in &objects {
        std::fs::copy(path, out.join(format!("{}.o", stem(path))))?;
    }
    if objects.is_empty() {
        println!("no objects in target/lambdas: run `cargo xtask build-ebpf` first");
    } else {
        println!("{} seeds in {}", objects.len(), out.display());
    }
    Ok(())
}
