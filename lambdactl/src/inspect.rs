//! `lambdactl inspect`: what an object holds, without loading it.

use std::{fs, path::Path, process::ExitCode};

use anyhow::{Context as _, Result};

pub(crate) fn inspect(object: &Path) -> Result<ExitCode> {
    let bytes = fs::read(object).with_context(|| format!("cannot read {}", object.display()))?;
    let image = loader::LambdaImage::parse(&bytes, &object.display().to_string())?;
    println!("{}", object.display());
    println!("programs:");
    for program in &image.programs {
        println!(
            "  {} (section {}, {:?}, {} insns)",
            program.name, program.section, program.kind, program.insn_count
        );
        // The lines of the author's own sources this program was compiled from (inlined
        // toolchain and dependency code left out): where its instructions come from.
        let start = (program.offset / 8) as usize;
        let end = start + program.insn_count as usize;
        let mut files: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
        for line in image.line_info.entries() {
            let own = !line.file.contains("/rustlib/") && !line.file.contains("/.cargo/registry/");
            if line.section == program.section && (start..end).contains(&line.insn) && own {
                let range = files.entry(&line.file).or_insert((line.line, line.line));
                range.0 = range.0.min(line.line);
                range.1 = range.1.max(line.line);
            }
        }
        for (file, (first, last)) in files {
            println!("      source {file}, lines {first}–{last}");
        }
    }
    println!("maps:");
    for map in &image.maps {
        println!(
            "  {} {}: key {} B, value {} B, max {} entries",
            map.name,
            map.type_name(),
            map.key_size,
            map.value_size,
            map.max_entries
        );
    }
    println!("globals:");
    for global in &image.globals {
        println!("  {} ({}, {} B)", global.name, global.section, global.size);
    }
    for seed in &image.seeds {
        println!("seed: {} record(s) for {}", seed.record_count(), seed.map);
    }
    println!(
        "BTF: {}; line info: {} records",
        if image.has_btf { "yes" } else { "no" },
        image.line_info.len()
    );
    Ok(ExitCode::SUCCESS)
}
