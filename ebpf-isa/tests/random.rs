//! Randomised tests, seeded so that every run checks the same inputs:
//!
//! - 10,000 random valid instructions disassemble and reassemble to the same slots;
//! - random slots (valid or not) never panic the disassembler, and whatever it prints
//!   reassembles to the slots it printed;
//! - random and mutated text never panics the assembler or the conformance parser.

use std::panic::catch_unwind;

use ebpf_isa::Insn;
use ebpf_isa::asm::assemble;
use ebpf_isa::conformance::parse_test;
use ebpf_isa::disasm::{disassemble, disassemble_one};
use ebpf_isa::opcode::*;

/// xorshift64*: small, fast and good enough to spread test inputs; not for anything else.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn reg(&mut self) -> u8 {
        self.below(11) as u8
    }

    /// Edge values often, small values often, anything else the rest of the time.
    fn imm(&mut self) -> i32 {
        match self.below(4) {
            0 => self.pick(&[0, 1, -1, i32::MIN, i32::MAX, 16, 32, 64, 0x7fff, -0x8000]),
            1 => self.below(64) as i32 - 32,
            _ => self.next() as i32,
        }
    }

    fn off(&mut self) -> i16 {
        match self.below(4) {
            0 => self.pick(&[0, 1, -1, i16::MIN, i16::MAX]),
            1 => self.below(64) as i16 - 32,
            _ => self.next() as i16,
        }
    }
}

const ALU_OPS: [u8; 12] = [
    ALU_ADD, ALU_SUB, ALU_MUL, ALU_DIV, ALU_OR, ALU_AND, ALU_LSH, ALU_RSH, ALU_MOD, ALU_XOR,
    ALU_MOV, ALU_ARSH,
];
const JMP_OPS: [u8; 11] = [
    JMP_JEQ, JMP_JGT, JMP_JGE, JMP_JSET, JMP_JNE, JMP_JSGT, JMP_JSGE, JMP_JLT, JMP_JLE, JMP_JSLT,
    JMP_JSLE,
];
const SIZES: [u8; 4] = [SIZE_B, SIZE_H, SIZE_W, SIZE_DW];
const ATOMICS: [i32; 10] = [
    ATOMIC_ADD,
    ATOMIC_ADD | ATOMIC_FETCH,
    ATOMIC_OR,
    ATOMIC_OR | ATOMIC_FETCH,
    ATOMIC_AND,
    ATOMIC_AND | ATOMIC_FETCH,
    ATOMIC_XOR,
    ATOMIC_XOR | ATOMIC_FETCH,
    ATOMIC_XCHG,
    ATOMIC_CMPXCHG,
];

/// One valid instruction (two slots for `lddw`), every field the instruction does not use zero.
fn valid_instruction(rng: &mut Rng) -> Vec<Insn> {
    let alu_class = |rng: &mut Rng| rng.pick(&[CLASS_ALU, CLASS_ALU64]);
    let one = |opcode, dst, src, off, imm| vec![Insn::new(opcode, dst, src, off, imm)];
    match rng.below(14) {
        0 => {
            let class = alu_class(rng);
            let operation = rng.pick(&ALU_OPS);
            let off = if matches!(operation, ALU_DIV | ALU_MOD) {
                rng.below(2) as i16
            } else {
                0
            };
            if rng.chance(50) {
                one(class | operation | SRC_X, rng.reg(), rng.reg(), off, 0)
            } else {
                one(class | operation | SRC_K, rng.reg(), 0, off, rng.imm())
            }
        }
        1 => one(alu_class(rng) | ALU_NEG, rng.reg(), 0, 0, 0),
        2 => {
            if rng.chance(50) {
                let bits = rng.pick(&[8, 16, 32]);
                one(CLASS_ALU64 | ALU_MOV | SRC_X, rng.reg(), rng.reg(), bits, 0)
            } else {
                let bits = rng.pick(&[8, 16]);
                one(CLASS_ALU | ALU_MOV | SRC_X, rng.reg(), rng.reg(), bits, 0)
            }
        }
        3 => {
            let opcode = rng.pick(&[
                CLASS_ALU | ALU_END | SRC_K,
                CLASS_ALU | ALU_END | SRC_X,
                CLASS_ALU64 | ALU_END | SRC_K,
            ]);
            one(opcode, rng.reg(), 0, 0, rng.pick(&[16, 32, 64]))
        }
        4 => {
            let src = rng.pick(&[PSEUDO_NONE, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE]);
            let high = if src == PSEUDO_MAP_FD { 0 } else { rng.imm() };
            vec![
                Insn::new(LDDW, rng.reg(), src, 0, rng.imm()),
                Insn::new(0, 0, 0, 0, high),
            ]
        }
        5 => {
            let size = rng.pick(&SIZES);
            if rng.chance(50) {
                one(CLASS_LD | MODE_ABS | size, 0, 0, 0, rng.imm())
            } else {
                one(CLASS_LD | MODE_IND | size, 0, rng.reg(), 0, rng.imm())
            }
        }
        6 => {
            let opcode = if rng.chance(50) {
                CLASS_LDX | MODE_MEM | rng.pick(&SIZES)
            } else {
                CLASS_LDX | MODE_MEMSX | rng.pick(&[SIZE_B, SIZE_H, SIZE_W])
            };
            one(opcode, rng.reg(), rng.reg(), rng.off(), 0)
        }
        7 => one(
            CLASS_ST | MODE_MEM | rng.pick(&SIZES),
            rng.reg(),
            0,
            rng.off(),
            rng.imm(),
        ),
        8 => one(
            CLASS_STX | MODE_MEM | rng.pick(&SIZES),
            rng.reg(),
            rng.reg(),
            rng.off(),
            0,
        ),
        9 => one(
            CLASS_STX | MODE_ATOMIC | rng.pick(&[SIZE_W, SIZE_DW]),
            rng.reg(),
            rng.reg(),
            rng.off(),
            rng.pick(&ATOMICS),
        ),
        10 => {
            if rng.chance(50) {
                one(CLASS_JMP | JMP_JA, 0, 0, rng.off(), 0)
            } else {
                one(JA32, 0, 0, 0, rng.imm())
            }
        }
        11 => {
            let opcode = rng.pick(&[CLASS_JMP, CLASS_JMP32]) | rng.pick(&JMP_OPS);
            if rng.chance(50) {
                one(opcode | SRC_X, rng.reg(), rng.reg(), rng.off(), 0)
            } else {
                one(opcode | SRC_K, rng.reg(), 0, rng.off(), rng.imm())
            }
        }
        12 => {
            if rng.chance(25) {
                one(CALL | SRC_X, rng.reg(), 0, 0, 0)
            } else {
                let src = rng.pick(&[CALL_HELPER, CALL_LOCAL, CALL_KFUNC]);
                one(CALL, 0, src, 0, rng.imm())
            }
        }
        _ => one(EXIT, 0, 0, 0, 0),
    }
}

#[test]
fn ten_thousand_valid_instructions_round_trip() {
    let mut rng = Rng::new(0x5eed_1a3b_da00_0001);
    let mut program = Vec::new();
    let mut instructions = 0;
    while instructions < 10_000 {
        program.extend(valid_instruction(&mut rng));
        instructions += 1;
    }
    let lines = disassemble(&program).unwrap();
    assert_eq!(lines.len(), instructions);
    let again = assemble(&lines.join("\n")).unwrap();
    if again != program {
        let slot = again.iter().zip(&program).position(|(a, b)| a != b);
        panic!("round trip differs at slot {slot:?}");
    }
    println!(
        "{instructions} random valid instructions ({} slots) round-tripped",
        program.len()
    );
}

#[test]
fn random_slots_never_panic_and_what_prints_reassembles() {
    let mut rng = Rng::new(0xfeed_0000_0000_0002);
    let (mut printed, mut refused) = (0, 0);
    for _ in 0..200_000 {
        let slot = |rng: &mut Rng| {
            // Mostly zero or in-range fields, so that many random opcodes get past the field
            // checks and exercise the printers.
            let field = |rng: &mut Rng, max: usize| {
                if rng.chance(60) {
                    0
                } else {
                    rng.below(max) as u8
                }
            };
            Insn::new(
                rng.below(256) as u8,
                field(rng, 16),
                field(rng, 16),
                if rng.chance(60) { 0 } else { rng.off() },
                if rng.chance(50) { 0 } else { rng.imm() },
            )
        };
        let slots = [slot(&mut rng), slot(&mut rng)];
        let outcome = catch_unwind(|| disassemble_one(&slots, 0));
        let Ok(outcome) = outcome else {
            panic!("disassemble_one panicked on {slots:?}");
        };
        match outcome {
            Ok(line) => {
                printed += 1;
                let used = if slots[0].is_lddw() { 2 } else { 1 };
                assert_eq!(
                    assemble(&line).as_deref(),
                    Ok(&slots[..used]),
                    "`{line}` from {slots:?}"
                );
            }
            Err(_) => refused += 1,
        }
    }
    println!("200000 random slots: {printed} printed and reassembled, {refused} refused");
    assert!(printed > 10_000 && refused > 10_000);
}

const TOKENS: &[&str] = &[
    "mov",
    "mov32",
    "add64",
    "neg",
    "sdiv32",
    "movsx1632",
    "movsx3232",
    "le16",
    "be8",
    "bswap64",
    "lddw",
    "ldxw",
    "ldxsdw",
    "stw",
    "stxdw",
    "ldabsb",
    "ldindh",
    "lock",
    "fetch",
    "xchg32",
    "cmpxchg",
    "ja",
    "ja32",
    "jeq",
    "jsle32",
    "jeq64",
    "call",
    "callx",
    "local",
    "helper",
    "runtime",
    "exit",
    "%r0",
    "r10",
    "%r11",
    "%r",
    "%",
    "r",
    "%r-1",
    "0",
    "-1",
    "+",
    "-",
    "0x",
    "0xffffffff",
    "0x100000000",
    "2147483648",
    "-2147483649",
    "99999999999999999999999999999999999999999",
    "0xffffffffffffffffffffffffffffffffffff",
    "+32767",
    "-32769",
    "[%r1+2]",
    "[%r1",
    "[",
    "]",
    "[+]",
    "[%r1+-2]",
    "[%r1+0x]",
    "[%r10-8]",
    "a:",
    ":",
    "L1",
    "exit:",
    "map_fd",
    "map_value",
    "3+16",
    "-",
    ",",
    "#",
    "é",
    "✓",
    "\u{0}",
    "𝔁",
    "\t",
    "[é+1]",
    "%ré",
    "0xé",
];

fn soup_line(rng: &mut Rng) -> String {
    let mut line = String::new();
    for _ in 0..=rng.below(6) {
        line.push_str(rng.pick(TOKENS));
        line.push_str(rng.pick(&[" ", ", ", "", ",", "  "]));
    }
    line
}

fn mutate(rng: &mut Rng, line: &str) -> String {
    const CHARS: [char; 14] = [
        '%', 'r', '[', ']', '+', '-', ',', ':', '#', '0', 'x', 'é', '𝔁', ' ',
    ];
    let mut chars: Vec<char> = line.chars().collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 if at < chars.len() => chars[at] = rng.pick(&CHARS),
            2 => chars.truncate(at),
            _ => chars.insert(at, rng.pick(&CHARS)),
        }
    }
    chars.into_iter().collect()
}

/// Assembly lines from the conformance suite, if it is on this machine, else a few of our own.
fn sample_lines() -> Vec<String> {
    let dir = ebpf_isa::conformance::find_suite()
        .map(|suite| suite.join("tests"))
        .unwrap_or_default();
    let mut lines: Vec<String> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    lines.sort();
    if lines.is_empty() {
        lines = [
            "lddw %r0, 0x1122334455667788",
            "ldxdw %r0, [%r10-8]",
            "lock fetch add32 [%r10-4], %r1",
            "jne %r0, 0x81, exit",
            "call local func1",
            "movsx1632 %r0, %r1",
            "-- asm",
            "-- mem",
            "00 01 02",
        ]
        .iter()
        .map(|line| line.to_string())
        .collect();
    }
    lines
}

#[test]
fn random_and_mutated_text_never_panics() {
    let mut rng = Rng::new(0xbad_c0de_0000_0003);
    let samples = sample_lines();
    let mut lines = Vec::new();
    for _ in 0..20_000 {
        lines.push(soup_line(&mut rng));
        let sample = &samples[rng.below(samples.len())];
        lines.push(mutate(&mut rng, sample));
    }
    let (mut ok, mut refused) = (0, 0);
    for line in &lines {
        match catch_unwind(|| assemble(line)) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                refused += 1;
                let message = e.to_string();
                assert!(message.starts_with("line 1: "), "{message}");
            }
            Err(_) => panic!("assemble panicked on {line:?}"),
        }
    }
    // Whole texts and whole conformance files, mutated line by line.
    for chunk in lines.chunks(20) {
        let text = chunk.join("\n");
        assert!(
            catch_unwind(|| assemble(&text)).is_ok(),
            "assemble panicked on {text:?}"
        );
        let file = format!(
            "-- asm\n{text}\n-- mem\n{}\n-- result\n{}\n",
            chunk[0], chunk[1]
        );
        assert!(
            catch_unwind(|| parse_test("fuzz", &file)).is_ok(),
            "parse_test panicked on {file:?}"
        );
        let file = chunk.join("\n");
        assert!(
            catch_unwind(|| parse_test("fuzz", &file)).is_ok(),
            "parse_test panicked on {file:?}"
        );
    }
    println!(
        "{} random lines: {ok} assembled, {refused} refused",
        lines.len()
    );
}
