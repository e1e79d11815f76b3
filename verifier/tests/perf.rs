//! Timing harness for the linearity check of `cargo xtask bench verifier`: straight-line XDP
//! programs of 1 Ki to 32 Ki slots (the same generator as xtask/src/bench_verifier.rs), ns per
//! slot of `verifier::verify`. Ignored by default (it measures, it does not check): run it with
//! `cargo test -p verifier --release --test perf -- --ignored --nocapture`.

use std::time::Instant;

use ebpf_isa::{Insn, opcode as op};
use verifier::{Options, ProgramInput, ProgramKind};

/// Packet bytes the programs prove once and then read.
const LINEAR_WINDOW: i32 = 64;

/// A loop-free XDP program of exactly `slots` slots: one bounds check of [`LINEAR_WINDOW`]
/// packet bytes, then packet loads inside the window mixed with ALU operations, then `exit`.
fn straight_line(slots: usize) -> Vec<Insn> {
    let ldx =
        |size: u8, dst, src, off| Insn::new(op::CLASS_LDX | size | op::MODE_MEM, dst, src, off, 0);
    let alu_k = |operation: u8, dst, imm| {
        Insn::new(op::CLASS_ALU64 | operation | op::SRC_K, dst, 0, 0, imm)
    };
    let alu_x = |operation: u8, dst, src| {
        Insn::new(op::CLASS_ALU64 | operation | op::SRC_X, dst, src, 0, 0)
    };
    let mut out = vec![
        ldx(op::SIZE_W, 2, 1, 0), // r2 = data
        ldx(op::SIZE_W, 3, 1, 4), // r3 = data_end
        alu_k(op::ALU_MOV, 0, 0),
        alu_x(op::ALU_MOV, 4, 2),
        alu_k(op::ALU_ADD, 4, LINEAR_WINDOW),
        // if r4 > r3: jump to the final exit (patched below).
        Insn::new(op::CLASS_JMP | op::JMP_JGT | op::SRC_X, 4, 3, 0, 0),
    ];
    let check = out.len() - 1;
    let mut i = 0i32;
    while out.len() < slots.saturating_sub(1) {
        let insn = match i % 6 {
            0 => ldx(op::SIZE_B, 5, 2, (i % LINEAR_WINDOW) as i16),
            1 => alu_x(op::ALU_ADD, 0, 5),
            2 => alu_k(op::ALU_XOR, 0, i.wrapping_mul(0x9e37)),
            3 => ldx(op::SIZE_H, 6, 2, ((i % (LINEAR_WINDOW - 1)) & !1) as i16),
            4 => alu_x(op::ALU_SUB, 0, 6),
            _ => alu_k(op::ALU_AND, 0, 0x00ff_ffff),
        };
        out.push(insn);
        i += 1;
    }
    out.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    let exit = out.len() - 1;
    out[check].off = (exit - check - 1) as i16;
    out
}

#[test]
fn straight_line_programs_are_accepted_with_an_exact_bound() {
    for slots in [64, 1024] {
        let input = ProgramInput::new("straight", ProgramKind::Xdp, straight_line(slots));
        let contract = verifier::verify(&input, &Options::default()).expect("accepted");
        // Every slot runs once on the long path: the check's fall-through to the exit.
        assert_eq!(contract.max_insns_executed, slots as u64);
    }
}

#[test]
#[ignore = "timing: run in release with --ignored --nocapture"]
fn straight_line_ns_per_slot() {
    let options = Options::default();
    let rounds: usize = std::env::var("PERF_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // PERF_SIZES=8192,32768 measures only those sizes.
    let sizes: Vec<usize> = std::env::var("PERF_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| (10..=15).map(|bits| 1 << bits).collect());
    for slots in sizes {
        let input = ProgramInput::new("straight", ProgramKind::Xdp, straight_line(slots));
        verifier::verify(&input, &options).expect("accepted");
        // The same work per size: fewer repeats for longer programs.
        let repeat = (64 * 1024 / slots).max(1);
        let mut per_slot = Vec::new();
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..repeat {
                std::hint::black_box(verifier::verify(&input, &options).is_ok());
            }
            let ns = start.elapsed().as_nanos() as f64 / repeat as f64;
            per_slot.push(ns / slots as f64);
        }
        per_slot.sort_by(f64::total_cmp);
        println!(
            "{slots:>6} slots: {:>8.1} ns/slot (median of {rounds}, min {:.1})",
            per_slot[per_slot.len() / 2],
            per_slot[0]
        );
    }
}
