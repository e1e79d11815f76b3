//! Instructions shown around an error.

use std::fmt::Write;

use ebpf_isa::Insn;

/// Instructions shown before and after the failing one.
const CONTEXT_INSNS: usize = 2;

/// One instruction as text.
pub fn show(insns: &[Insn], index: usize) -> String {
    match ebpf_isa::disasm::disassemble_one(insns, index) {
        Ok(text) => text,
        // Not an instruction the disassembler knows (or the second slot of an lddw): raw
        // fields.
        Err(_) => match insns.get(index) {
            Some(insn) => insn.to_string(),
            None => String::from("<end of program>"),
        },
    }
}

/// The instruction at `index` with [`CONTEXT_INSNS`] neighbours each side, `index` marked.
pub fn context(insns: &[Insn], index: usize) -> String {
    let mut out = String::new();
    let first = index.saturating_sub(CONTEXT_INSNS);
    let last = index
        .saturating_add(CONTEXT_INSNS)
        .min(insns.len().saturating_sub(1));
    for i in first..=last {
        if i >= insns.len() {
            break;
        }
        // The second slot of an lddw is shown with its first.
        if i > first && insns[i - 1].is_lddw() && i != index {
            continue;
        }
        let mark = if i == index { '>' } else { ' ' };
        let _ = writeln!(out, "  {mark} {i:5}: {}", show(insns, i));
    }
    out
}
