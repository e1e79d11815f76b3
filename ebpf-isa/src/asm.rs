//! An assembler for the uBPF / bpf_conformance assembly syntax.
//!
//! One instruction per line. Blank lines are skipped and `#` starts a comment that runs to the
//! end of the line. A label is `name:` on its own line or in front of an instruction; it names
//! the next instruction slot.
//!
//! | family | syntax |
//! |---|---|
//! | registers | `%r0`…`%r10` (the `%` may be left out) |
//! | numbers | decimal or `0x` hex, optionally signed: `42`, `-1`, `0xffffffff` |
//! | ALU, 64-bit | `add %r1, %r2`, `add %r1, 5` (also spelt `add64`); `add sub mul div sdiv or and lsh rsh mod smod xor mov arsh`; `neg %r1` |
//! | ALU, 32-bit | the same with a `32` suffix: `add32 %r1, 5`, `neg32 %r1` |
//! | sign-extending moves | `movsx864 movsx1664 movsx3264` (64-bit), `movsx832 movsx1632` (32-bit): `movsx1664 %r0, %r1` |
//! | byte swaps | `le16 le32 le64 be16 be32 be64 bswap16 bswap32 bswap64` (`swap16`… is read as `bswap16`…) |
//! | 64-bit constant | `lddw %r0, 0x1122334455667788` (two slots); `lddw %r1, map_fd 3`; `lddw %r1, map_value 3+16` |
//! | loads | `ldxb ldxh ldxw ldxdw ldxsb ldxsh ldxsw %r0, [%r1+off]` (also `[%r1-off]`, `[%r1]`) |
//! | stores | `stb sth stw stdw [%r1+off], imm`; `stxb stxh stxw stxdw [%r1+off], %r2` |
//! | atomics | `lock add [%r1+off], %r2` (also `or`, `and`, `xor`), `lock fetch add …` (fetching), `lock xchg …`, `lock cmpxchg …`; a `32` suffix on the operation for 32-bit: `lock add32 …` |
//! | legacy packet loads | `ldabsb ldabsh ldabsw ldabsdw imm`; `ldindb ldindh ldindw ldinddw %r1, imm` |
//! | jumps | `ja target`; `ja32 target` (32-bit distance); `jeq jgt jge jlt jle jset jne jsgt jsge jslt jsle` with a register or an immediate: `jeq %r1, %r2, target`, `jeq %r1, 5, target`, and a `32` suffix to compare 32 bits: `jeq32 …` |
//! | calls | `call 5` or `call helper 5`; `call local target`; `call runtime 7` (kfunc, also `call kfunc 7`); `call %r2` or `callx %r2`; `exit` |
//!
//! A jump target is a distance in slots from the next slot, written with its sign (`+3`, `-2`,
//! `+0`), or a label. As in bpf_conformance, the label `exit` names the first `exit` instruction
//! unless the text defines a label of that name itself: the conformance files write
//! `jne %r0, 1, exit` without defining `exit:`.
//!
//! Immediates are range-checked rather than truncated, because a typo such as one digit too many
//! must not silently become another program: a 32-bit immediate is a signed decimal
//! (−2³¹…2³¹−1) or a hex bit pattern (`0x0`…`0xffffffff`); memory offsets and jump distances are
//! signed 16-bit values (32-bit for `ja32` and `call local`).
//!
//! `map_fd` and `map_value` are not part of the uBPF syntax: they let the disassembler print,
//! and this assembler read back, the map references that the loader writes into `lddw`.

use std::collections::HashMap;

use thiserror::Error;

use crate::Insn;
use crate::opcode::*;

/// Why assembly text was refused. Every variant names the 1-based line it is about.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AsmError {
    /// The first word of the line is not an instruction.
    #[error("line {line}: unknown mnemonic `{mnemonic}`")]
    UnknownMnemonic {
        /// 1-based line number.
        line: usize,
        /// The word that is not a mnemonic.
        mnemonic: String,
    },
    /// The instruction has too few or too many operands.
    #[error("line {line}: `{mnemonic}` takes {expected} operand(s), found {found}")]
    OperandCount {
        /// 1-based line number.
        line: usize,
        /// The mnemonic (for atomics, `lock` and the operation).
        mnemonic: String,
        /// Operands the instruction takes.
        expected: usize,
        /// Operands the line has.
        found: usize,
    },
    /// A register operand is not `%r0`…`%r10`.
    #[error("line {line}: `{text}` is not a register (expected %r0 to %r10)")]
    BadRegister {
        /// 1-based line number.
        line: usize,
        /// The operand.
        text: String,
    },
    /// An immediate operand is not a number.
    #[error("line {line}: `{text}` is not a number (expected decimal or 0x hex)")]
    BadNumber {
        /// 1-based line number.
        line: usize,
        /// The operand.
        text: String,
    },
    /// An immediate does not fit its field.
    #[error("line {line}: immediate `{text}` does not fit in {bits} bits")]
    ImmediateOutOfRange {
        /// 1-based line number.
        line: usize,
        /// The operand.
        text: String,
        /// Width of the field: 32, or 64 for `lddw`.
        bits: u32,
    },
    /// A memory offset or a numeric jump distance does not fit its signed field.
    #[error("line {line}: offset `{text}` does not fit in a signed {bits}-bit field")]
    OffsetOutOfRange {
        /// 1-based line number.
        line: usize,
        /// The offset as written.
        text: String,
        /// Width of the field: 16, or 32 for `ja32` and `call local`.
        bits: u32,
    },
    /// A memory operand is not `[%rN]`, `[%rN+off]` or `[%rN-off]`.
    #[error(
        "line {line}: `{text}` is not a memory operand (expected [%rN], [%rN+off] or [%rN-off])"
    )]
    BadMemoryOperand {
        /// 1-based line number.
        line: usize,
        /// The operand.
        text: String,
    },
    /// A jump target is neither a signed distance nor a label name.
    #[error("line {line}: `{text}` is not a jump target (expected +N, -N or a label)")]
    BadJumpTarget {
        /// 1-based line number.
        line: usize,
        /// The operand.
        text: String,
    },
    /// A jump names a label that the text does not define.
    #[error("line {line}: label `{label}` is not defined")]
    UndefinedLabel {
        /// 1-based line number of the jump.
        line: usize,
        /// The label.
        label: String,
    },
    /// A label is defined twice.
    #[error("line {line}: label `{label}` is already defined on line {first_line}")]
    DuplicateLabel {
        /// 1-based line number of the second definition.
        line: usize,
        /// The label.
        label: String,
        /// 1-based line number of the first definition.
        first_line: usize,
    },
    /// A label definition whose name is not an identifier.
    #[error(
        "line {line}: `{text}` is not a label name (expected a letter, `_` or `.`, then letters, digits, `_` or `.`)"
    )]
    BadLabel {
        /// 1-based line number.
        line: usize,
        /// The name before the `:`.
        text: String,
    },
    /// A label is further away than the jump's field can express.
    #[error(
        "line {line}: label `{label}` is {distance} slots away, beyond a signed {bits}-bit jump"
    )]
    JumpOutOfRange {
        /// 1-based line number of the jump.
        line: usize,
        /// The label.
        label: String,
        /// Distance from the slot after the jump to the label.
        distance: i64,
        /// Width of the field: 16, or 32 for `ja32` and `call local`.
        bits: u32,
    },
    /// `lock` (or `lock fetch`) without an operation.
    #[error(
        "line {line}: `{text}` needs an atomic operation (add, or, and, xor, xchg or cmpxchg) and 2 operands"
    )]
    MissingAtomicOperation {
        /// 1-based line number.
        line: usize,
        /// The instruction as written.
        text: String,
    },
    /// The word after `lock` (and `fetch`) is not an atomic operation.
    #[error(
        "line {line}: unknown atomic operation `{text}` (expected add, or, and, xor, xchg or cmpxchg, optionally with a 32 suffix)"
    )]
    UnknownAtomicOperation {
        /// 1-based line number.
        line: usize,
        /// The word.
        text: String,
    },
    /// The word after `call` is not a call kind.
    #[error("line {line}: unknown call kind `{text}` (expected helper, local, runtime or kfunc)")]
    UnknownCallKind {
        /// 1-based line number.
        line: usize,
        /// The word.
        text: String,
    },
}

/// Assembles text into instruction slots (an `lddw` gives two).
///
/// ```
/// use ebpf_isa::asm::assemble;
///
/// let slots = assemble(
///     "mov %r0, 0\n\
///      lddw %r1, 0x100000000   # two slots\n\
///      jeq %r1, 0, done\n\
///      add %r0, 1\n\
///      done:\n\
///      exit",
/// )
/// .unwrap();
/// assert_eq!(slots.len(), 6);
/// assert_eq!(slots[3].off, 1); // from the slot after the jump to `done`, over `add`
/// ```
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    assemble_lines(
        text.lines()
            .enumerate()
            .map(|(index, line)| (index + 1, line)),
    )
}

/// Assembles `(line number, text)` pairs, so that a caller which takes the lines out of a bigger
/// file (the conformance parser) reports errors with the file's own line numbers.
pub(crate) fn assemble_lines<'a, I>(lines: I) -> Result<Vec<Insn>, AsmError>
where
    I: IntoIterator<Item = (usize, &'a str)>,
{
    let mut slots: Vec<Insn> = Vec::new();
    // Label name → (slot it names, line that defines it).
    let mut labels: HashMap<String, (usize, usize)> = HashMap::new();
    let mut first_exit: Option<usize> = None;
    let mut fixups: Vec<Fixup> = Vec::new();

    for (line, raw) in lines {
        let mut rest = strip_comment(raw).trim();
        while let Some((name, after)) = split_label(rest) {
            if !is_label_name(name) {
                return Err(AsmError::BadLabel {
                    line,
                    text: name.to_string(),
                });
            }
            if let Some(&(_, first_line)) = labels.get(name) {
                return Err(AsmError::DuplicateLabel {
                    line,
                    label: name.to_string(),
                    first_line,
                });
            }
            labels.insert(name.to_string(), (slots.len(), line));
            rest = after.trim_start();
        }
        if rest.is_empty() {
            continue;
        }

        let parsed = parse_instruction(line, rest)?;
        if parsed.first.is_exit() && first_exit.is_none() {
            first_exit = Some(slots.len());
        }
        if let Some(target) = parsed.target {
            fixups.push(Fixup {
                slot: slots.len(),
                line,
                label: target.label,
                field: target.field,
            });
        }
        slots.push(parsed.first);
        slots.extend(parsed.second);
    }

    for fixup in fixups {
        let target = labels
            .get(&fixup.label)
            .map(|&(slot, _)| slot)
            .or(if fixup.label == "exit" {
                first_exit
            } else {
                None
            });
        let Some(target) = target else {
            return Err(AsmError::UndefinedLabel {
                line: fixup.line,
                label: fixup.label,
            });
        };
        // Slot counts are bounded by memory, far below i64::MAX.
        let distance = target as i64 - (fixup.slot as i64 + 1);
        let out_of_range = |bits| AsmError::JumpOutOfRange {
            line: fixup.line,
            label: fixup.label.clone(),
            distance,
            bits,
        };
        let insn = &mut slots[fixup.slot];
        match fixup.field {
            TargetField::Off => insn.off = i16::try_from(distance).map_err(|_| out_of_range(16))?,
            TargetField::Imm => insn.imm = i32::try_from(distance).map_err(|_| out_of_range(32))?,
        }
    }
    Ok(slots)
}

/// A jump whose label is resolved once every label is known.
struct Fixup {
    slot: usize,
    line: usize,
    label: String,
    field: TargetField,
}

/// Which field of a jump holds its distance.
#[derive(Clone, Copy)]
enum TargetField {
    /// `off`: conditional jumps and `ja`.
    Off,
    /// `imm`: `ja32` and `call local`.
    Imm,
}

/// A label a jump refers to, before it is resolved.
struct LabelRef {
    label: String,
    field: TargetField,
}

/// One assembled line.
struct Parsed {
    first: Insn,
    /// The second slot of an `lddw`.
    second: Option<Insn>,
    target: Option<LabelRef>,
}

impl Parsed {
    fn one(insn: Insn) -> Parsed {
        Parsed {
            first: insn,
            second: None,
            target: None,
        }
    }
}

fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(at) => &line[..at],
        None => line,
    }
}

/// `name: rest` → `(name, rest)`. Only the text before the first `:` counts, and only if it is
/// a single word: no operand syntax contains `:`, so anything else is left for the instruction
/// parser to refuse.
fn split_label(text: &str) -> Option<(&str, &str)> {
    let colon = text.find(':')?;
    let name = &text[..colon];
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, &text[colon + 1..]))
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Splits off the first whitespace-separated word.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim_start();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim_start()),
        None => (text, ""),
    }
}

/// Comma-separated operands; none for an empty string.
fn split_operands(text: &str) -> Vec<&str> {
    let text = text.trim();
    if text.is_empty() {
        Vec::new()
    } else {
        text.split(',').map(str::trim).collect()
    }
}

fn expect_operands<'a>(
    line: usize,
    mnemonic: &str,
    operands: Vec<&'a str>,
    expected: usize,
) -> Result<Vec<&'a str>, AsmError> {
    if operands.len() == expected {
        Ok(operands)
    } else {
        Err(AsmError::OperandCount {
            line,
            mnemonic: mnemonic.to_string(),
            expected,
            found: operands.len(),
        })
    }
}

/// The size suffix of a load or store mnemonic.
fn size_suffix(suffix: &str) -> Option<u8> {
    match suffix {
        "b" => Some(SIZE_B),
        "h" => Some(SIZE_H),
        "w" => Some(SIZE_W),
        "dw" => Some(SIZE_DW),
        _ => None,
    }
}

/// ALU mnemonics without width suffix → (operation, `off`).
fn alu_operation(name: &str) -> Option<(u8, i16)> {
    Some(match name {
        "add" => (ALU_ADD, 0),
        "sub" => (ALU_SUB, 0),
        "mul" => (ALU_MUL, 0),
        "div" => (ALU_DIV, 0),
        "sdiv" => (ALU_DIV, 1),
        "or" => (ALU_OR, 0),
        "and" => (ALU_AND, 0),
        "lsh" => (ALU_LSH, 0),
        "rsh" => (ALU_RSH, 0),
        "neg" => (ALU_NEG, 0),
        "mod" => (ALU_MOD, 0),
        "smod" => (ALU_MOD, 1),
        "xor" => (ALU_XOR, 0),
        "mov" => (ALU_MOV, 0),
        "arsh" => (ALU_ARSH, 0),
        _ => return None,
    })
}

/// Conditional jump mnemonics without width suffix → operation.
fn jump_operation(name: &str) -> Option<u8> {
    Some(match name {
        "jeq" => JMP_JEQ,
        "jgt" => JMP_JGT,
        "jge" => JMP_JGE,
        "jset" => JMP_JSET,
        "jne" => JMP_JNE,
        "jsgt" => JMP_JSGT,
        "jsge" => JMP_JSGE,
        "jlt" => JMP_JLT,
        "jle" => JMP_JLE,
        "jslt" => JMP_JSLT,
        "jsle" => JMP_JSLE,
        _ => return None,
    })
}

/// Sign-extending move mnemonics → (class, bits extended from).
fn movsx(name: &str) -> Option<(u8, i16)> {
    Some(match name {
        "movsx864" => (CLASS_ALU64, 8),
        "movsx1664" => (CLASS_ALU64, 16),
        "movsx3264" => (CLASS_ALU64, 32),
        "movsx832" => (CLASS_ALU, 8),
        "movsx1632" => (CLASS_ALU, 16),
        _ => return None,
    })
}

/// Byte swap mnemonics → (opcode, width).
fn byte_swap(name: &str) -> Option<(u8, i32)> {
    let (opcode, width) = if let Some(width) = name.strip_prefix("le") {
        (CLASS_ALU | ALU_END | SRC_K, width)
    } else if let Some(width) = name.strip_prefix("be") {
        (CLASS_ALU | ALU_END | SRC_X, width)
    } else if let Some(width) = name.strip_prefix("bswap").or(name.strip_prefix("swap")) {
        (CLASS_ALU64 | ALU_END | SRC_K, width)
    } else {
        return None;
    };
    let width = match width {
        "16" => 16,
        "32" => 32,
        "64" => 64,
        _ => return None,
    };
    Some((opcode, width))
}

fn parse_instruction(line: usize, text: &str) -> Result<Parsed, AsmError> {
    let (mnemonic, rest) = split_word(text);
    match mnemonic {
        "exit" => {
            expect_operands(line, mnemonic, split_operands(rest), 0)?;
            return Ok(Parsed::one(Insn::new(EXIT, 0, 0, 0, 0)));
        }
        "lock" => return parse_atomic(line, text, rest),
        "call" => return parse_call(line, rest),
        "callx" => {
            let ops = expect_operands(line, mnemonic, split_operands(rest), 1)?;
            let dst = parse_register(line, ops[0])?;
            return Ok(Parsed::one(Insn::new(CALL | SRC_X, dst, 0, 0, 0)));
        }
        "lddw" => return parse_lddw(line, rest),
        "ja" | "ja32" => {
            let ops = expect_operands(line, mnemonic, split_operands(rest), 1)?;
            let (opcode, field) = if mnemonic == "ja" {
                (CLASS_JMP | JMP_JA, TargetField::Off)
            } else {
                (JA32, TargetField::Imm)
            };
            let mut parsed = Parsed::one(Insn::new(opcode, 0, 0, 0, 0));
            set_target(line, ops[0], field, &mut parsed)?;
            return Ok(parsed);
        }
        _ => {}
    }

    if let Some((opcode, width)) = byte_swap(mnemonic) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 1)?;
        let dst = parse_register(line, ops[0])?;
        return Ok(Parsed::one(Insn::new(opcode, dst, 0, 0, width)));
    }
    if let Some((class, bits)) = movsx(mnemonic) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let dst = parse_register(line, ops[0])?;
        let src = parse_register(line, ops[1])?;
        return Ok(Parsed::one(Insn::new(
            class | ALU_MOV | SRC_X,
            dst,
            src,
            bits,
            0,
        )));
    }
    if let Some(parsed) = parse_load_store(line, mnemonic, rest)? {
        return Ok(parsed);
    }

    // ALU and conditional jumps: a base name and an optional width suffix.
    let (base, class_alu, class_jmp) = if let Some(base) = mnemonic.strip_suffix("32") {
        (base, CLASS_ALU, Some(CLASS_JMP32))
    } else if let Some(base) = mnemonic.strip_suffix("64") {
        // `add64` is another name for `add`; there is no `jeq64`.
        (base, CLASS_ALU64, None)
    } else {
        (mnemonic, CLASS_ALU64, Some(CLASS_JMP))
    };

    if let Some((operation, off)) = alu_operation(base) {
        if operation == ALU_NEG {
            let ops = expect_operands(line, mnemonic, split_operands(rest), 1)?;
            let dst = parse_register(line, ops[0])?;
            return Ok(Parsed::one(Insn::new(class_alu | operation, dst, 0, 0, 0)));
        }
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let dst = parse_register(line, ops[0])?;
        let insn = if looks_like_register(ops[1]) {
            let src = parse_register(line, ops[1])?;
            Insn::new(class_alu | operation | SRC_X, dst, src, off, 0)
        } else {
            let imm = parse_imm32(line, ops[1])?;
            Insn::new(class_alu | operation | SRC_K, dst, 0, off, imm)
        };
        return Ok(Parsed::one(insn));
    }

    if let (Some(operation), Some(class)) = (jump_operation(base), class_jmp) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 3)?;
        let dst = parse_register(line, ops[0])?;
        let insn = if looks_like_register(ops[1]) {
            let src = parse_register(line, ops[1])?;
            Insn::new(class | operation | SRC_X, dst, src, 0, 0)
        } else {
            let imm = parse_imm32(line, ops[1])?;
            Insn::new(class | operation | SRC_K, dst, 0, 0, imm)
        };
        let mut parsed = Parsed::one(insn);
        set_target(line, ops[2], TargetField::Off, &mut parsed)?;
        return Ok(parsed);
    }

    Err(AsmError::UnknownMnemonic {
        line,
        mnemonic: mnemonic.to_string(),
    })
}

/// Loads, stores and the legacy packet loads; `None` if `mnemonic` is none of them.
fn parse_load_store(line: usize, mnemonic: &str, rest: &str) -> Result<Option<Parsed>, AsmError> {
    // Longer prefixes first: `ldxsb` is not `ldx` + `sb`, `stxb` is not `st` + `xb`.
    let insn = if let Some(size) = mnemonic
        .strip_prefix("ldxs")
        .and_then(size_suffix)
        .filter(|&size| size != SIZE_DW)
    {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let dst = parse_register(line, ops[0])?;
        let (src, off) = parse_memory(line, ops[1])?;
        Insn::new(CLASS_LDX | MODE_MEMSX | size, dst, src, off, 0)
    } else if let Some(size) = mnemonic.strip_prefix("ldx").and_then(size_suffix) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let dst = parse_register(line, ops[0])?;
        let (src, off) = parse_memory(line, ops[1])?;
        Insn::new(CLASS_LDX | MODE_MEM | size, dst, src, off, 0)
    } else if let Some(size) = mnemonic.strip_prefix("stx").and_then(size_suffix) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let (dst, off) = parse_memory(line, ops[0])?;
        let src = parse_register(line, ops[1])?;
        Insn::new(CLASS_STX | MODE_MEM | size, dst, src, off, 0)
    } else if let Some(size) = mnemonic.strip_prefix("st").and_then(size_suffix) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let (dst, off) = parse_memory(line, ops[0])?;
        let imm = parse_imm32(line, ops[1])?;
        Insn::new(CLASS_ST | MODE_MEM | size, dst, 0, off, imm)
    } else if let Some(size) = mnemonic.strip_prefix("ldabs").and_then(size_suffix) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 1)?;
        let imm = parse_imm32(line, ops[0])?;
        Insn::new(CLASS_LD | MODE_ABS | size, 0, 0, 0, imm)
    } else if let Some(size) = mnemonic.strip_prefix("ldind").and_then(size_suffix) {
        let ops = expect_operands(line, mnemonic, split_operands(rest), 2)?;
        let src = parse_register(line, ops[0])?;
        let imm = parse_imm32(line, ops[1])?;
        Insn::new(CLASS_LD | MODE_IND | size, 0, src, 0, imm)
    } else {
        return Ok(None);
    };
    Ok(Some(Parsed::one(insn)))
}

/// `lddw %rN, value`, `lddw %rN, map_fd M`, `lddw %rN, map_value M+off`.
fn parse_lddw(line: usize, rest: &str) -> Result<Parsed, AsmError> {
    let ops = expect_operands(line, "lddw", split_operands(rest), 2)?;
    let dst = parse_register(line, ops[0])?;
    let (kind, value) = split_word(ops[1]);
    let (src, low, high) = match kind {
        "map_fd" => (PSEUDO_MAP_FD, parse_imm32(line, value)?, 0),
        "map_value" => {
            // `M+off` or `M-off`: the separator is the last sign that is not the first
            // character, so a negative map number still reads.
            let split = value
                .char_indices()
                .rev()
                .find(|&(at, c)| at > 0 && (c == '+' || c == '-'))
                .map(|(at, _)| at);
            let (map, off) = match split {
                Some(at) => (&value[..at], &value[at..]),
                None => (value, "+0"),
            };
            (
                PSEUDO_MAP_VALUE,
                parse_imm32(line, map.trim())?,
                parse_imm32(line, off.trim())?,
            )
        }
        _ => {
            let value = parse_imm64(line, ops[1])?;
            (
                PSEUDO_NONE,
                value as u32 as i32,
                (value >> 32) as u32 as i32,
            )
        }
    };
    Ok(Parsed {
        first: Insn::new(LDDW, dst, src, 0, low),
        second: Some(Insn::new(0, 0, 0, 0, high)),
        target: None,
    })
}

/// `lock [fetch] op[32] [%rN+off], %rM`.
fn parse_atomic(line: usize, text: &str, rest: &str) -> Result<Parsed, AsmError> {
    let missing = || AsmError::MissingAtomicOperation {
        line,
        text: text.to_string(),
    };
    let (first, after_first) = split_word(rest);
    let (fetch, operation, operands) = if first == "fetch" {
        let (operation, operands) = split_word(after_first);
        (true, operation, operands)
    } else {
        (false, first, after_first)
    };
    if operation.is_empty() {
        return Err(missing());
    }
    let (base, size) = match operation.strip_suffix("32") {
        Some(base) => (base, SIZE_W),
        None => (operation, SIZE_DW),
    };
    let fetch_bit = if fetch { ATOMIC_FETCH } else { 0 };
    let imm = match base {
        "add" => ATOMIC_ADD | fetch_bit,
        "or" => ATOMIC_OR | fetch_bit,
        "and" => ATOMIC_AND | fetch_bit,
        "xor" => ATOMIC_XOR | fetch_bit,
        // These always fetch; `fetch` in front of them is redundant but harmless.
        "xchg" => ATOMIC_XCHG,
        "cmpxchg" => ATOMIC_CMPXCHG,
        _ => {
            return Err(AsmError::UnknownAtomicOperation {
                line,
                text: operation.to_string(),
            });
        }
    };
    let mnemonic = format!("lock {operation}");
    let ops = expect_operands(line, &mnemonic, split_operands(operands), 2)?;
    let (dst, off) = parse_memory(line, ops[0])?;
    let src = parse_register(line, ops[1])?;
    Ok(Parsed::one(Insn::new(
        CLASS_STX | MODE_ATOMIC | size,
        dst,
        src,
        off,
        imm,
    )))
}

/// `call N`, `call %rN`, `call helper N`, `call local target`, `call runtime N`.
fn parse_call(line: usize, rest: &str) -> Result<Parsed, AsmError> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [target] if looks_like_register(target) => {
            let dst = parse_register(line, target)?;
            Ok(Parsed::one(Insn::new(CALL | SRC_X, dst, 0, 0, 0)))
        }
        [number] | ["helper", number] => {
            let imm = parse_imm32(line, number)?;
            Ok(Parsed::one(Insn::new(CALL, 0, CALL_HELPER, 0, imm)))
        }
        ["local", target] => {
            let mut parsed = Parsed::one(Insn::new(CALL, 0, CALL_LOCAL, 0, 0));
            set_target(line, target, TargetField::Imm, &mut parsed)?;
            Ok(parsed)
        }
        ["runtime" | "kfunc", number] => {
            let imm = parse_imm32(line, number)?;
            Ok(Parsed::one(Insn::new(CALL, 0, CALL_KFUNC, 0, imm)))
        }
        [kind, _] => Err(AsmError::UnknownCallKind {
            line,
            text: kind.to_string(),
        }),
        _ => Err(AsmError::OperandCount {
            line,
            mnemonic: "call".to_string(),
            expected: 1,
            found: words.len(),
        }),
    }
}

/// Sets a jump's distance: directly for `+N`/`-N`, later for a label.
fn set_target(
    line: usize,
    text: &str,
    field: TargetField,
    parsed: &mut Parsed,
) -> Result<(), AsmError> {
    if text.starts_with('+') || text.starts_with('-') {
        let bits = match field {
            TargetField::Off => 16,
            TargetField::Imm => 32,
        };
        let value = parse_number(text).ok_or_else(|| AsmError::BadJumpTarget {
            line,
            text: text.to_string(),
        })?;
        let out_of_range = || AsmError::OffsetOutOfRange {
            line,
            text: text.to_string(),
            bits,
        };
        match field {
            TargetField::Off => {
                parsed.first.off = i16::try_from(value.value).map_err(|_| out_of_range())?
            }
            TargetField::Imm => {
                parsed.first.imm = i32::try_from(value.value).map_err(|_| out_of_range())?
            }
        }
        Ok(())
    } else if is_label_name(text) {
        parsed.target = Some(LabelRef {
            label: text.to_string(),
            field,
        });
        Ok(())
    } else {
        Err(AsmError::BadJumpTarget {
            line,
            text: text.to_string(),
        })
    }
}

/// An operand that is meant as a register: `%…`, or `r` followed by digits. Anything else is
/// read as an immediate, so `%r50` is refused as a register, not as a number.
fn looks_like_register(text: &str) -> bool {
    text.starts_with('%')
        || text
            .strip_prefix('r')
            .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_register(line: usize, text: &str) -> Result<u8, AsmError> {
    let name = text.strip_prefix('%').unwrap_or(text);
    const NAMES: [&str; 11] = [
        "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10",
    ];
    NAMES
        .iter()
        .position(|&known| known == name)
        .map(|index| index as u8)
        .ok_or_else(|| AsmError::BadRegister {
            line,
            text: text.to_string(),
        })
}

/// `[%rN]`, `[%rN+off]`, `[%rN-off]` → (register, offset).
fn parse_memory(line: usize, text: &str) -> Result<(u8, i16), AsmError> {
    let bad = || AsmError::BadMemoryOperand {
        line,
        text: text.to_string(),
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(bad)?
        .trim();
    let (register, off) = match inner.find(['+', '-']) {
        Some(at) => {
            let (register, signed_off) = inner.split_at(at);
            let magnitude = signed_off[1..].trim();
            // The sign belongs to the syntax: a second sign (`+-8`) is a typo, not a number.
            if magnitude.starts_with(['+', '-']) || magnitude.is_empty() {
                return Err(bad());
            }
            let number = parse_number(magnitude).ok_or_else(bad)?;
            let value = if signed_off.starts_with('-') {
                -number.value
            } else {
                number.value
            };
            let off = i16::try_from(value).map_err(|_| AsmError::OffsetOutOfRange {
                line,
                text: signed_off.to_string(),
                bits: 16,
            })?;
            (register.trim(), off)
        }
        None => (inner, 0),
    };
    if register.is_empty() {
        return Err(bad());
    }
    Ok((parse_register(line, register)?, off))
}

/// A number as written: its value (saturated far outside any field when it has too many digits,
/// so that it is reported as out of range rather than as not a number) and its radix.
struct Number {
    value: i128,
    hex: bool,
}

fn parse_number(text: &str) -> Option<Number> {
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (digits, radix) = match unsigned
        .strip_prefix("0x")
        .or_else(|| unsigned.strip_prefix("0X"))
    {
        Some(hex) => (hex, 16),
        None => (unsigned, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut magnitude: i128 = 0;
    for c in digits.chars() {
        let digit = c.to_digit(radix)?;
        magnitude = magnitude
            .saturating_mul(i128::from(radix))
            .saturating_add(i128::from(digit));
    }
    Some(Number {
        value: if negative { -magnitude } else { magnitude },
        hex: radix == 16,
    })
}

/// A 32-bit immediate: a signed decimal, or a hex bit pattern up to `0xffffffff`.
///
/// Decimal is signed only because bpf_conformance's negative tests say so
/// (`mov32 %r0, 2147483648` must be refused while `0xffffffff` is accepted).
fn parse_imm32(line: usize, text: &str) -> Result<i32, AsmError> {
    let number = parse_number(text).ok_or_else(|| AsmError::BadNumber {
        line,
        text: text.to_string(),
    })?;
    let value = if number.hex && number.value >= 0 {
        u32::try_from(number.value).ok().map(|bits| bits as i32)
    } else {
        i32::try_from(number.value).ok()
    };
    value.ok_or_else(|| AsmError::ImmediateOutOfRange {
        line,
        text: text.to_string(),
        bits: 32,
    })
}

/// A 64-bit immediate: anything that fits in `u64` or `i64`.
fn parse_imm64(line: usize, text: &str) -> Result<u64, AsmError> {
    let number = parse_number(text).ok_or_else(|| AsmError::BadNumber {
        line,
        text: text.to_string(),
    })?;
    let value = if number.value >= 0 {
        u64::try_from(number.value).ok()
    } else {
        i64::try_from(number.value).ok().map(|v| v as u64)
    };
    value.ok_or_else(|| AsmError::ImmediateOutOfRange {
        line,
        text: text.to_string(),
        bits: 64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Insn {
        let slots = assemble(text).unwrap();
        assert_eq!(slots.len(), 1, "{text}");
        slots[0]
    }

    fn err(text: &str) -> AsmError {
        assemble(text).unwrap_err()
    }

    #[test]
    fn alu_64_and_32_with_register_and_immediate() {
        assert_eq!(one("add %r1, %r2"), Insn::new(0x0f, 1, 2, 0, 0));
        assert_eq!(one("add64 %r1, %r2"), Insn::new(0x0f, 1, 2, 0, 0));
        assert_eq!(one("add %r1, 5"), Insn::new(0x07, 1, 0, 0, 5));
        assert_eq!(one("add32 %r1, -5"), Insn::new(0x04, 1, 0, 0, -5));
        assert_eq!(one("add32 %r1, %r10"), Insn::new(0x0c, 1, 10, 0, 0));
        assert_eq!(one("sub r3, r4"), Insn::new(0x1f, 3, 4, 0, 0));
        assert_eq!(one("mul %r1, 3"), Insn::new(0x27, 1, 0, 0, 3));
        assert_eq!(one("div32 %r1, 3"), Insn::new(0x34, 1, 0, 0, 3));
        assert_eq!(one("or %r1, 0xffffffff"), Insn::new(0x47, 1, 0, 0, -1));
        assert_eq!(one("and %r1, 0x7"), Insn::new(0x57, 1, 0, 0, 7));
        assert_eq!(one("lsh %r1, 1"), Insn::new(0x67, 1, 0, 0, 1));
        assert_eq!(one("rsh32 %r1, %r2"), Insn::new(0x7c, 1, 2, 0, 0));
        assert_eq!(one("neg %r1"), Insn::new(0x87, 1, 0, 0, 0));
        assert_eq!(one("neg32 %r1"), Insn::new(0x84, 1, 0, 0, 0));
        assert_eq!(one("mod %r1, 3"), Insn::new(0x97, 1, 0, 0, 3));
        assert_eq!(one("xor32 %r1, %r1"), Insn::new(0xac, 1, 1, 0, 0));
        assert_eq!(one("mov %r0, -1"), Insn::new(0xb7, 0, 0, 0, -1));
        assert_eq!(
            one("mov32 %r0, 0x80000000"),
            Insn::new(0xb4, 0, 0, 0, i32::MIN)
        );
        assert_eq!(one("arsh %r1, 63"), Insn::new(0xc7, 1, 0, 0, 63));
    }

    #[test]
    fn signed_division_and_sign_extending_moves_use_off() {
        assert_eq!(one("sdiv %r1, %r2"), Insn::new(0x3f, 1, 2, 1, 0));
        assert_eq!(one("sdiv32 %r1, -3"), Insn::new(0x34, 1, 0, 1, -3));
        assert_eq!(one("smod %r1, 3"), Insn::new(0x97, 1, 0, 1, 3));
        assert_eq!(one("smod32 %r1, %r2"), Insn::new(0x9c, 1, 2, 1, 0));
        assert_eq!(one("movsx864 %r6, %r5"), Insn::new(0xbf, 6, 5, 8, 0));
        assert_eq!(one("movsx1664 %r0, %r1"), Insn::new(0xbf, 0, 1, 16, 0));
        assert_eq!(one("movsx3264 %r0, %r9"), Insn::new(0xbf, 0, 9, 32, 0));
        assert_eq!(one("movsx832 %r2, %r1"), Insn::new(0xbc, 2, 1, 8, 0));
        assert_eq!(one("movsx1632 %r4, %r3"), Insn::new(0xbc, 4, 3, 16, 0));
        // A sign-extending move only reads a register.
        assert!(matches!(
            err("movsx864 %r0, 5"),
            AsmError::BadRegister { line: 1, .. }
        ));
    }

    #[test]
    fn byte_swaps() {
        assert_eq!(one("le16 %r0"), Insn::new(0xd4, 0, 0, 0, 16));
        assert_eq!(one("le64 %r0"), Insn::new(0xd4, 0, 0, 0, 64));
        assert_eq!(one("be32 %r3"), Insn::new(0xdc, 3, 0, 0, 32));
        assert_eq!(one("bswap16 %r0"), Insn::new(0xd7, 0, 0, 0, 16));
        assert_eq!(one("swap64 %r0"), one("bswap64 %r0"));
        assert!(matches!(
            err("be8 %r0"),
            AsmError::UnknownMnemonic { line: 1, .. }
        ));
    }

    #[test]
    fn memory_operands() {
        assert_eq!(one("ldxb %r0, [%r1+2]"), Insn::new(0x71, 0, 1, 2, 0));
        assert_eq!(one("ldxh %r0, [%r1-2]"), Insn::new(0x69, 0, 1, -2, 0));
        assert_eq!(one("ldxw %r0, [%r1]"), Insn::new(0x61, 0, 1, 0, 0));
        assert_eq!(
            one("ldxdw %r0, [ %r10 - 0x8 ]"),
            Insn::new(0x79, 0, 10, -8, 0)
        );
        assert_eq!(one("ldxsb %r0, [%r10-1]"), Insn::new(0x91, 0, 10, -1, 0));
        assert_eq!(one("ldxsh %r0, [%r10-2]"), Insn::new(0x89, 0, 10, -2, 0));
        assert_eq!(one("ldxsw %r0, [%r10-4]"), Insn::new(0x81, 0, 10, -4, 0));
        assert_eq!(one("stb [%r1+2], 0x11"), Insn::new(0x72, 1, 0, 2, 0x11));
        assert_eq!(one("sth [%r1+2], -1"), Insn::new(0x6a, 1, 0, 2, -1));
        assert_eq!(one("stw [%r1], 5"), Insn::new(0x62, 1, 0, 0, 5));
        assert_eq!(one("stdw [%r10-8], 5"), Insn::new(0x7a, 10, 0, -8, 5));
        assert_eq!(one("stxb [%r1+2], %r3"), Insn::new(0x73, 1, 3, 2, 0));
        assert_eq!(one("stxh [%r1+2], %r3"), Insn::new(0x6b, 1, 3, 2, 0));
        assert_eq!(one("stxw [%r1+2], %r3"), Insn::new(0x63, 1, 3, 2, 0));
        assert_eq!(one("stxdw [%r10-8], %r0"), Insn::new(0x7b, 10, 0, -8, 0));
        assert_eq!(one("ldxb %r0, [%r1+32767]").off, i16::MAX);
        assert_eq!(one("ldxb %r0, [%r1-32768]").off, i16::MIN);
        assert_eq!(one("ldabsh 12"), Insn::new(0x28, 0, 0, 0, 12));
        assert_eq!(one("ldabsdw 0"), Insn::new(0x38, 0, 0, 0, 0));
        assert_eq!(one("ldindb %r1, 0x10"), Insn::new(0x50, 0, 1, 0, 16));
    }

    #[test]
    fn memory_operand_errors() {
        for bad in [
            "%r1", "[%r1", "%r1]", "[]", "[+4]", "[%r1+]", "[%r1+-4]", "[%r1+x]",
        ] {
            let e = err(&format!("ldxb %r0, {bad}"));
            assert!(
                matches!(e, AsmError::BadMemoryOperand { line: 1, ref text } if text == bad),
                "{bad}: {e}"
            );
        }
        assert!(matches!(
            err("ldxb %r0, [%r11+4]"),
            AsmError::BadRegister { .. }
        ));
        assert!(matches!(
            err("ldxb %r0, [%r1+0x10000]"),
            AsmError::OffsetOutOfRange { bits: 16, .. }
        ));
        assert!(matches!(
            err("stb [%r1+32768], 1"),
            AsmError::OffsetOutOfRange { bits: 16, .. }
        ));
    }

    #[test]
    fn atomics() {
        assert_eq!(
            one("lock add [%r10-8], %r1"),
            Insn::new(0xdb, 10, 1, -8, 0x00)
        );
        assert_eq!(
            one("lock add32 [%r10-4], %r1"),
            Insn::new(0xc3, 10, 1, -4, 0x00)
        );
        assert_eq!(
            one("lock fetch add [%r10-8], %r1"),
            Insn::new(0xdb, 10, 1, -8, 0x01)
        );
        assert_eq!(one("lock or [%r10-8], %r1").imm, 0x40);
        assert_eq!(one("lock fetch and32 [%r10-8], %r3").imm, 0x51);
        assert_eq!(one("lock fetch xor [%r10-8], %r3").imm, 0xa1);
        assert_eq!(one("lock xchg [%r10-8], %r1").imm, 0xe1);
        assert_eq!(one("lock fetch xchg [%r10-8], %r1").imm, 0xe1);
        assert_eq!(
            one("lock cmpxchg32 [%r10-8], %r1"),
            Insn::new(0xc3, 10, 1, -8, 0xf1)
        );
        assert!(matches!(
            err("lock"),
            AsmError::MissingAtomicOperation { line: 1, .. }
        ));
        assert!(matches!(
            err("lock fetch"),
            AsmError::MissingAtomicOperation { .. }
        ));
        assert!(matches!(
            err("lock or [%r10-8]"),
            AsmError::OperandCount { expected: 2, found: 1, ref mnemonic, .. } if mnemonic == "lock or"
        ));
        assert!(matches!(
            err("lock sub [%r10-8], %r1"),
            AsmError::UnknownAtomicOperation { ref text, .. } if text == "sub"
        ));
    }

    #[test]
    fn lddw_takes_two_slots_and_jumps_count_them() {
        let slots = assemble("lddw %r0, 0x1122334455667788\nexit").unwrap();
        assert_eq!(
            slots,
            vec![
                Insn::new(0x18, 0, 0, 0, 0x55667788),
                Insn::new(0, 0, 0, 0, 0x11223344),
                Insn::new(0x95, 0, 0, 0, 0),
            ]
        );
        let slots = assemble("lddw %r1, -1").unwrap();
        assert_eq!((slots[0].imm, slots[1].imm), (-1, -1));
        let slots = assemble("lddw %r1, 18446744073709551615").unwrap();
        assert_eq!((slots[0].imm, slots[1].imm), (-1, -1));
        assert!(matches!(
            err("lddw %r1, 0x10000000000000000"),
            AsmError::ImmediateOutOfRange { bits: 64, .. }
        ));
        assert!(matches!(
            err("lddw %r0"),
            AsmError::OperandCount {
                expected: 2,
                found: 1,
                ..
            }
        ));

        // Forward and backward over an lddw: distances are in slots.
        let slots = assemble("top:\nja over\nlddw %r0, 1\nover:\nja top\nexit").unwrap();
        assert_eq!(slots[0].off, 2);
        assert_eq!(slots[3].off, -4);
    }

    #[test]
    fn lddw_map_references() {
        let slots = assemble("lddw %r1, map_fd 3").unwrap();
        assert_eq!(slots[0], Insn::new(0x18, 1, PSEUDO_MAP_FD, 0, 3));
        assert_eq!(slots[1], Insn::new(0, 0, 0, 0, 0));
        let slots = assemble("lddw %r1, map_value 3+16").unwrap();
        assert_eq!(slots[0], Insn::new(0x18, 1, PSEUDO_MAP_VALUE, 0, 3));
        assert_eq!(slots[1].imm, 16);
        let slots = assemble("lddw %r1, map_value -3-16").unwrap();
        assert_eq!((slots[0].imm, slots[1].imm), (-3, -16));
        let slots = assemble("lddw %r1, map_value 3").unwrap();
        assert_eq!(slots[1].imm, 0);
    }

    #[test]
    fn jumps_with_offsets_and_labels() {
        assert_eq!(one("ja +3"), Insn::new(0x05, 0, 0, 3, 0));
        assert_eq!(one("ja -1"), Insn::new(0x05, 0, 0, -1, 0));
        assert_eq!(one("ja32 +70000"), Insn::new(0x06, 0, 0, 0, 70000));
        assert_eq!(one("jeq %r1, 5, +2"), Insn::new(0x15, 1, 0, 2, 5));
        assert_eq!(one("jeq %r1, %r2, +2"), Insn::new(0x1d, 1, 2, 2, 0));
        assert_eq!(one("jeq32 %r1, %r2, -2"), Insn::new(0x1e, 1, 2, -2, 0));
        assert_eq!(one("jgt %r1, 1, +0").opcode, 0x25);
        assert_eq!(one("jge %r1, 1, +0").opcode, 0x35);
        assert_eq!(one("jset %r1, 1, +0").opcode, 0x45);
        assert_eq!(one("jne %r1, 1, +0").opcode, 0x55);
        assert_eq!(one("jsgt %r1, 1, +0").opcode, 0x65);
        assert_eq!(one("jsge %r1, 1, +0").opcode, 0x75);
        assert_eq!(one("jlt %r1, 1, +0").opcode, 0xa5);
        assert_eq!(one("jle %r1, 1, +0").opcode, 0xb5);
        assert_eq!(one("jslt %r1, 1, +0").opcode, 0xc5);
        assert_eq!(one("jsle32 %r1, 1, +0").opcode, 0xd6);
        assert!(matches!(
            err("ja +32768"),
            AsmError::OffsetOutOfRange { bits: 16, .. }
        ));
        assert!(matches!(
            err("jeq64 %r1, 1, +1"),
            AsmError::UnknownMnemonic { .. }
        ));

        let slots = assemble(
            "mov %r0, 0\n\
             jeq %r0, 0, done   # forward\n\
             loop: add %r0, 1\n\
             jlt %r0, 3, loop\n\
             done:\n\
             exit",
        )
        .unwrap();
        assert_eq!(slots[1].off, 2);
        assert_eq!(slots[3].off, -2);
        // A label after the last instruction names the slot past the end.
        assert_eq!(assemble("ja end\nend:").unwrap()[0].off, 0);
    }

    #[test]
    fn exit_names_the_first_exit_unless_defined() {
        let slots = assemble("jne %r0, 1, exit\nmov %r0, 2\nexit\nexit").unwrap();
        assert_eq!(slots[0].off, 1);
        let slots = assemble("jne %r0, 1, exit\nexit\nexit:\nexit").unwrap();
        assert_eq!(slots[0].off, 1);
        assert!(matches!(
            err("ja exit\nmov %r0, 1"),
            AsmError::UndefinedLabel { line: 1, ref label } if label == "exit"
        ));
    }

    #[test]
    fn label_errors() {
        assert!(matches!(
            err("ja NOT_A_LABEL\nexit"),
            AsmError::UndefinedLabel { line: 1, ref label } if label == "NOT_A_LABEL"
        ));
        assert!(matches!(
            err("a:\nexit\n\na: exit"),
            AsmError::DuplicateLabel { line: 4, first_line: 1, ref label } if label == "a"
        ));
        assert!(matches!(
            err("1a:\nexit"),
            AsmError::BadLabel { line: 1, ref text } if text == "1a"
        ));
        assert!(matches!(
            err("ja 3"),
            AsmError::BadJumpTarget { ref text, .. } if text == "3"
        ));
        // Two labels on one line name the same slot.
        let slots = assemble("ja b\na: b: exit").unwrap();
        assert_eq!(slots[0].off, 0);
    }

    #[test]
    fn jump_out_of_range_is_refused() {
        let mut text = String::from("ja far\n");
        for _ in 0..40_000 {
            text.push_str("mov %r0, 0\n");
        }
        text.push_str("far: exit\n");
        assert!(matches!(
            err(&text),
            AsmError::JumpOutOfRange {
                line: 1,
                distance: 40_000,
                bits: 16,
                ..
            }
        ));
        let text = text.replacen("ja far", "ja32 far", 1);
        assert_eq!(assemble(&text).unwrap()[0].imm, 40_000);
    }

    #[test]
    fn calls() {
        assert_eq!(one("call 5"), Insn::new(0x85, 0, 0, 0, 5));
        assert_eq!(one("call helper 5"), Insn::new(0x85, 0, 0, 0, 5));
        assert_eq!(one("call -1"), Insn::new(0x85, 0, 0, 0, -1));
        assert_eq!(one("call runtime 7"), Insn::new(0x85, 0, 2, 0, 7));
        assert_eq!(one("call kfunc 7"), Insn::new(0x85, 0, 2, 0, 7));
        assert_eq!(one("call %r2"), Insn::new(0x8d, 2, 0, 0, 0));
        assert_eq!(one("callx %r2"), Insn::new(0x8d, 2, 0, 0, 0));
        assert_eq!(one("call local -3"), Insn::new(0x85, 0, 1, 0, -3));
        let slots = assemble("call local f\nexit\nf:\nmov %r0, 1\nexit").unwrap();
        assert_eq!(slots[0], Insn::new(0x85, 0, 1, 0, 1));
        assert!(matches!(
            err("call far 5"),
            AsmError::UnknownCallKind { ref text, .. } if text == "far"
        ));
        assert!(matches!(
            err("call"),
            AsmError::OperandCount {
                expected: 1,
                found: 0,
                ..
            }
        ));
        assert!(matches!(err("call %r11"), AsmError::BadRegister { .. }));
        assert!(matches!(err("call f"), AsmError::BadNumber { .. }));
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let slots = assemble("# header\n\n   \nmov %r0, 1 # trailing\n\texit\t").unwrap();
        assert_eq!(slots.len(), 2);
        assert!(matches!(
            err("# one\n\nexit\nfoo %r0"),
            AsmError::UnknownMnemonic { line: 4, ref mnemonic } if mnemonic == "foo"
        ));
    }

    #[test]
    fn immediate_ranges() {
        assert_eq!(one("mov32 %r0, 2147483647").imm, i32::MAX);
        assert_eq!(one("mov32 %r0, -2147483648").imm, i32::MIN);
        assert_eq!(one("mov32 %r0, 0xffffffff").imm, -1);
        assert_eq!(one("mov32 %r0, -0x80000000").imm, i32::MIN);
        for bad in [
            "2147483648",
            "-2147483649",
            "0x100000000",
            "-0x80000001",
            "99999999999999999999999999999999999999999999",
        ] {
            assert!(
                matches!(
                    err(&format!("mov32 %r0, {bad}")),
                    AsmError::ImmediateOutOfRange { bits: 32, ref text, .. } if text == bad
                ),
                "{bad}"
            );
        }
        for bad in ["", "0x", "1f", "--1", "0xg", "1_000", "½"] {
            assert!(
                matches!(
                    err(&format!("mov32 %r0, {bad}")),
                    AsmError::BadNumber { .. }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn register_and_operand_count_errors() {
        assert!(matches!(
            err("or %r0, %r50"),
            AsmError::BadRegister { line: 1, ref text } if text == "%r50"
        ));
        assert!(matches!(err("or %r11, 1"), AsmError::BadRegister { .. }));
        assert!(matches!(err("or %x1, 1"), AsmError::BadRegister { .. }));
        assert!(matches!(err("or 1, 1"), AsmError::BadRegister { .. }));
        assert!(matches!(
            err("ldxb %r0, %r1"),
            AsmError::BadMemoryOperand { .. }
        ));
        assert!(matches!(
            err("ldxq %r0, %r1"),
            AsmError::UnknownMnemonic { ref mnemonic, .. } if mnemonic == "ldxq"
        ));
        assert!(matches!(
            err("exit 0"),
            AsmError::OperandCount {
                expected: 0,
                found: 1,
                ..
            }
        ));
        assert!(matches!(
            err("neg %r0, 1"),
            AsmError::OperandCount {
                expected: 1,
                found: 2,
                ..
            }
        ));
        assert!(matches!(
            err("jeq %r0, 1"),
            AsmError::OperandCount {
                expected: 3,
                found: 2,
                ..
            }
        ));
    }

    #[test]
    fn errors_display_on_one_line_with_the_line_number() {
        let message = err("exit\nmov32 %r0, 2147483648").to_string();
        assert_eq!(
            message,
            "line 2: immediate `2147483648` does not fit in 32 bits"
        );
        for text in ["lock", "ja nowhere", "a:\na:", "ldxb %r0, %r1", "bogus"] {
            let message = err(text).to_string();
            assert!(message.starts_with("line "), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
