//! The bpf_conformance test file format (`tests/*.data`, `negative/*.data`).
//!
//! A file is a list of sections, each introduced by a line `-- name`:
//!
//! | section | content |
//! |---|---|
//! | `-- asm` | the program in [`asm`](crate::asm) syntax |
//! | `-- raw` | the program as slots: either 8 hex bytes per slot in wire order (`07 00 01 00 01 00 00 00`), or one `0x`-prefixed 64-bit number per slot, the slot read as a little-endian integer (`0x5566778800000018`: opcode in the low byte) |
//! | `-- mem` | the initial memory: hex bytes separated by whitespace, over any number of lines |
//! | `-- result` | the expected `r0`, `0x` hex or decimal |
//! | `-- error` | the expected error text (the program must be refused); may be empty |
//! | `-- c` | the C source the program was compiled from: ignored |
//! | `-- no register offset` | a note for runtimes that pass no memory length in `r2`: ignored |
//!
//! `#` lines before the first section and `#` comments inside `asm`, `raw`, `mem` and `result`
//! are ignored. Each section may appear once.
//!
//! When a file has both `-- raw` and `-- asm` (only `lddw.data` does), the raw slots are the
//! program, as in the reference runner, and the assembly must assemble to exactly those slots:
//! a file that contradicts itself is refused rather than silently trusted one way.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::asm::{AsmError, assemble_lines};
use crate::{INSN_SIZE, Insn, decode};

/// One conformance test: a program, its input memory and what running it must give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// The name given to [`parse_test`], usually the file name without `.data`.
    pub name: String,
    /// Instruction slots (an `lddw` occupies two). Empty if the file has no program.
    pub program: Vec<Insn>,
    /// Initial memory, passed to the program in `r1` (length in `r2`).
    pub memory: Vec<u8>,
    /// What running the program must give.
    pub expected: Expected,
}

/// The outcome a test expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The program runs and returns this `r0`.
    Result(u64),
    /// The program must be refused; the text is the reference runtime's message, which other
    /// runtimes are not expected to match word for word (it may be empty).
    Error(String),
    /// The file says neither (`negative/empty.data`).
    None,
}

/// Why a conformance file could not be read.
#[derive(Debug, Error)]
pub enum ConformanceFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `-- asm` section does not assemble; the line number is the file's.
    #[error("{name}: {source}")]
    Asm {
        /// The test name.
        name: String,
        /// The assembler's error.
        #[source]
        source: AsmError,
    },
    /// A `-- name` line with an unknown name.
    #[error("{name}: line {line}: unknown section `{header}`")]
    UnknownSection {
        /// The test name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        header: String,
    },
    /// A section that appears twice.
    #[error("{name}: line {line}: second `-- {section}` section")]
    DuplicateSection {
        /// The test name.
        name: String,
        /// 1-based line number of the second header.
        line: usize,
        /// The section name.
        section: String,
    },
    /// Text before the first section that is not a comment.
    #[error("{name}: line {line}: `{text}` is outside any section")]
    OutsideSection {
        /// The test name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// A `-- raw` token that is neither a hex byte nor a `0x` 64-bit slot.
    #[error("{name}: line {line}: `{text}` is not a hex byte or a 0x-prefixed 64-bit slot")]
    BadRaw {
        /// The test name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The token.
        text: String,
    },
    /// The `-- raw` bytes do not make whole slots.
    #[error("{name}: the raw program has {bytes} bytes, not a multiple of {INSN_SIZE}")]
    RawNotWholeSlots {
        /// The test name.
        name: String,
        /// Number of raw bytes.
        bytes: usize,
    },
    /// `-- raw` and `-- asm` give different programs.
    #[error("{name}: the raw and asm programs differ at slot {slot}")]
    RawAsmMismatch {
        /// The test name.
        name: String,
        /// First slot where they differ (the shorter length if one is a prefix of the other).
        slot: usize,
    },
    /// A `-- mem` token that is not a hex byte.
    #[error("{name}: line {line}: `{text}` is not a hex byte")]
    BadMemory {
        /// The test name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The token.
        text: String,
    },
    /// The `-- result` value is not a 64-bit number, or there is more than one.
    #[error("{name}: line {line}: `{text}` is not a single 64-bit result (0x hex or decimal)")]
    BadResult {
        /// The test name.
        name: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// Both `-- result` and `-- error`: the test cannot expect both.
    #[error("{name}: the file has both a result and an error section")]
    ResultAndError {
        /// The test name.
        name: String,
    },
}

impl ConformanceFileError {
    /// The assembler's error, if that is why the file was refused (bpf_conformance's negative
    /// tests such as `invalid_register.data`).
    pub fn asm_error(&self) -> Option<&AsmError> {
        match self {
            ConformanceFileError::Asm { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    Preamble,
    Asm,
    Raw,
    Mem,
    Result,
    Error,
    C,
    NoRegisterOffset,
}

impl Section {
    fn from_header(header: &str) -> Option<Section> {
        Some(match header {
            "asm" => Section::Asm,
            "raw" => Section::Raw,
            "mem" => Section::Mem,
            "result" => Section::Result,
            "error" => Section::Error,
            "c" => Section::C,
            "no register offset" => Section::NoRegisterOffset,
            _ => return None,
        })
    }
}

/// Parses one test file's text. `name` is only used in the result and in errors.
///
/// ```
/// use ebpf_isa::conformance::{Expected, parse_test};
///
/// let test = parse_test("demo", "-- asm\nldxb %r0, [%r1+1]\nexit\n-- mem\n00 2a\n-- result\n0x2a\n")
///     .unwrap();
/// assert_eq!(test.program.len(), 2);
/// assert_eq!(test.memory, [0x00, 0x2a]);
/// assert_eq!(test.expected, Expected::Result(42));
/// ```
pub fn parse_test(name: &str, text: &str) -> Result<TestCase, ConformanceFileError> {
    let mut section = Section::Preamble;
    let mut seen: Vec<Section> = Vec::new();
    let mut asm_lines: Vec<(usize, &str)> = Vec::new();
    let mut raw: Vec<u8> = Vec::new();
    let mut memory: Vec<u8> = Vec::new();
    let mut result: Option<u64> = None;
    let mut error: Option<Vec<&str>> = None;

    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        // Files written on Windows keep a `\r` that `lines` leaves on.
        let line = line.strip_suffix('\r').unwrap_or(line);
        // A header is `--` and a word; `--i;` in a `-- c` section is C.
        let header = line
            .strip_prefix("--")
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace));
        if let Some(header) = header {
            let header = header.trim();
            section = Section::from_header(header).ok_or_else(|| {
                ConformanceFileError::UnknownSection {
                    name: name.to_string(),
                    line: number,
                    header: line.to_string(),
                }
            })?;
            if seen.contains(&section) {
                return Err(ConformanceFileError::DuplicateSection {
                    name: name.to_string(),
                    line: number,
                    section: header.to_string(),
                });
            }
            seen.push(section);
            if section == Section::Error {
                error = Some(Vec::new());
            }
            continue;
        }
        match section {
            Section::Preamble => {
                let trimmed = line.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') {
                    return Err(ConformanceFileError::OutsideSection {
                        name: name.to_string(),
                        line: number,
                        text: line.to_string(),
                    });
                }
            }
            Section::Asm => asm_lines.push((number, line)),
            Section::Raw => parse_raw_line(name, number, line, &mut raw)?,
            Section::Mem => {
                for token in without_comment(line).split_whitespace() {
                    memory.push(parse_hex_byte(token).ok_or_else(|| {
                        ConformanceFileError::BadMemory {
                            name: name.to_string(),
                            line: number,
                            text: token.to_string(),
                        }
                    })?);
                }
            }
            Section::Result => {
                let value = without_comment(line).trim();
                if value.is_empty() {
                    continue;
                }
                let bad = || ConformanceFileError::BadResult {
                    name: name.to_string(),
                    line: number,
                    text: line.to_string(),
                };
                if result.is_some() {
                    return Err(bad());
                }
                result = Some(parse_result(value).ok_or_else(bad)?);
            }
            Section::Error => {
                let trimmed = line.trim();
                if !trimmed.is_empty() {
                    error.get_or_insert_with(Vec::new).push(trimmed);
                }
            }
            Section::C | Section::NoRegisterOffset => {}
        }
    }

    let has_asm = seen.contains(&Section::Asm);
    let has_raw = seen.contains(&Section::Raw);
    let assembled = if has_asm {
        Some(
            assemble_lines(asm_lines).map_err(|source| ConformanceFileError::Asm {
                name: name.to_string(),
                source,
            })?,
        )
    } else {
        None
    };
    let program = if has_raw {
        if !raw.len().is_multiple_of(INSN_SIZE) {
            return Err(ConformanceFileError::RawNotWholeSlots {
                name: name.to_string(),
                bytes: raw.len(),
            });
        }
        // The length was just checked, so decoding cannot fail.
        let program = decode(&raw).map(|p| p.insns).unwrap_or_default();
        if let Some(assembled) = assembled {
            if let Some(slot) = first_difference(&program, &assembled) {
                return Err(ConformanceFileError::RawAsmMismatch {
                    name: name.to_string(),
                    slot,
                });
            }
        }
        program
    } else {
        assembled.unwrap_or_default()
    };

    let expected = match (result, error) {
        (Some(_), Some(_)) => {
            return Err(ConformanceFileError::ResultAndError {
                name: name.to_string(),
            });
        }
        (Some(value), None) => Expected::Result(value),
        (None, Some(lines)) => Expected::Error(lines.join("\n")),
        (None, None) => Expected::None,
    };

    Ok(TestCase {
        name: name.to_string(),
        program,
        memory,
        expected,
    })
}

/// Reads and parses a test file; the test's name is the file name without its extension.
pub fn load_test(path: &Path) -> Result<TestCase, ConformanceFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConformanceFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_test(&name, &text)
}

fn without_comment(line: &str) -> &str {
    match line.find('#') {
        Some(at) => &line[..at],
        None => line,
    }
}

fn parse_raw_line(
    name: &str,
    number: usize,
    line: &str,
    raw: &mut Vec<u8>,
) -> Result<(), ConformanceFileError> {
    for token in without_comment(line).split_whitespace() {
        let bad = || ConformanceFileError::BadRaw {
            name: name.to_string(),
            line: number,
            text: token.to_string(),
        };
        match token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
        {
            Some(hex) => {
                if hex.is_empty() || hex.len() > 16 {
                    return Err(bad());
                }
                let slot = u64::from_str_radix(hex, 16).map_err(|_| bad())?;
                raw.extend_from_slice(&slot.to_le_bytes());
            }
            None => raw.push(parse_hex_byte(token).ok_or_else(bad)?),
        }
    }
    Ok(())
}

/// One or two hex digits, no prefix or sign.
fn parse_hex_byte(token: &str) -> Option<u8> {
    if token.is_empty() || token.len() > 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(token, 16).ok()
}

/// `0x` hex or decimal; a negative decimal is taken as its two's complement.
fn parse_result(value: &str) -> Option<u64> {
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if value.starts_with('-') {
        return value.parse::<i64>().ok().map(|v| v as u64);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u64>().ok()
}

fn first_difference(a: &[Insn], b: &[Insn]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(slot) => Some(slot),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Environment variable naming the bpf_conformance folder (the one holding `tests/`).
pub const SUITE_ENV: &str = "LNIC_CONFORMANCE_DIR";

/// Where the bpf_conformance suite is on this machine, if anywhere: `$LNIC_CONFORMANCE_DIR`,
/// else `shared/conformance/bpf_conformance` next to the repository (this workspace's parent
/// folder). The suite is external test data: callers skip with a printed reason when it is
/// absent.
pub fn find_suite() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os(SUITE_ENV) {
        let dir = std::path::PathBuf::from(dir);
        return dir.join("tests").is_dir().then_some(dir);
    }
    let beside = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/bpf_conformance");
    beside.join("tests").is_dir().then_some(beside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_comments_and_multi_line_memory() {
        let text = "# Copyright\n# SPDX\n-- asm\n# a comment\nldxh %r0, [%r1+2] # trailing\nexit\n\
                    -- mem\n00 01 02 03\n04 05\n\n-- result\n0x0302\n";
        let test = parse_test("t", text).unwrap();
        assert_eq!(test.name, "t");
        assert_eq!(test.program.len(), 2);
        assert_eq!(test.memory, [0, 1, 2, 3, 4, 5]);
        assert_eq!(test.expected, Expected::Result(0x302));
    }

    #[test]
    fn raw_in_both_notations_and_checked_against_asm() {
        let bytes = "-- raw\n07 00 01 00 01 00 00 00\n95 00 00 00 00 00 00 00\n-- error\n";
        let test = parse_test("b", bytes).unwrap();
        assert_eq!(
            test.program,
            [Insn::new(0x07, 0, 0, 1, 1), Insn::new(0x95, 0, 0, 0, 0)]
        );
        assert_eq!(test.expected, Expected::Error(String::new()));

        let words = "-- asm\nlddw %r0, 0x1122334455667788\nexit\n-- raw\n0x5566778800000018\n\
                     0x1122334400000000\n0x0000000000000095\n-- result\n0x1122334455667788\n";
        let test = parse_test("w", words).unwrap();
        assert_eq!(test.program.len(), 3);
        assert_eq!(test.program[0], Insn::new(0x18, 0, 0, 0, 0x55667788));

        let contradicting = words.replace("0x0000000000000095", "0x0000000000000096");
        assert!(matches!(
            parse_test("w", &contradicting),
            Err(ConformanceFileError::RawAsmMismatch { slot: 2, .. })
        ));
        assert!(matches!(
            parse_test("r", "-- raw\n07 00 01\n-- result\n0\n"),
            Err(ConformanceFileError::RawNotWholeSlots { bytes: 3, .. })
        ));
        assert!(matches!(
            parse_test("r", "-- raw\n0x11223344556677889\n"),
            Err(ConformanceFileError::BadRaw { line: 2, .. })
        ));
    }

    #[test]
    fn assembler_errors_carry_the_file_line() {
        let err = parse_test(
            "neg",
            "# c\n-- asm\n# why\nor %r0, %r50\nexit\n-- error\nInvalid register\n",
        )
        .unwrap_err();
        assert!(matches!(
            err.asm_error(),
            Some(AsmError::BadRegister { line: 4, .. })
        ));
        assert_eq!(
            err.to_string(),
            "neg: line 4: `%r50` is not a register (expected %r0 to %r10)"
        );
    }

    #[test]
    fn expectations() {
        assert_eq!(
            parse_test("e", "# only comments\n").unwrap().expected,
            Expected::None
        );
        let test = parse_test("e", "-- result\n0x0\n").unwrap();
        assert!(test.program.is_empty());
        assert_eq!(
            parse_test("e", "-- result\n18446744073709551615\n")
                .unwrap()
                .expected,
            Expected::Result(u64::MAX)
        );
        assert_eq!(
            parse_test("e", "-- result\n-1\n").unwrap().expected,
            Expected::Result(u64::MAX)
        );
        assert_eq!(
            parse_test("e", "-- asm\nexit\n-- error\n  Invalid \n")
                .unwrap()
                .expected,
            Expected::Error("Invalid".to_string())
        );
        for bad in [
            "-- result\nx\n",
            "-- result\n1\n2\n",
            "-- result\n0x\n",
            "-- result\n+1\n",
        ] {
            assert!(
                matches!(
                    parse_test("e", bad),
                    Err(ConformanceFileError::BadResult { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_test("e", "-- result\n1\n-- error\nno\n"),
            Err(ConformanceFileError::ResultAndError { .. })
        ));
    }

    #[test]
    fn structural_errors() {
        assert!(matches!(
            parse_test("u", "-- asm\n-- Unknown directive\n-- error\nx\n"),
            Err(ConformanceFileError::UnknownSection { line: 2, .. })
        ));
        assert!(matches!(
            parse_test("d", "-- asm\nexit\n-- asm\nexit\n"),
            Err(ConformanceFileError::DuplicateSection { line: 3, .. })
        ));
        assert!(matches!(
            parse_test("o", "exit\n-- result\n0\n"),
            Err(ConformanceFileError::OutsideSection { line: 1, .. })
        ));
        assert!(matches!(
            parse_test("m", "-- mem\n00 100\n"),
            Err(ConformanceFileError::BadMemory { line: 2, .. })
        ));
    }

    #[test]
    fn c_and_note_sections_are_ignored() {
        let text = "-- c\nint main() {\n--x;\nreturn x;\n}\n-- asm\nmov %r0, %r2\nexit\n-- mem\n00\n\
                    -- no register offset\ncall instruction\n-- result\n0x1\n";
        // `--x;` is C, not a section header.
        let test = parse_test("c", text).unwrap();
        assert_eq!(test.program.len(), 2);
        assert_eq!(test.expected, Expected::Result(1));
    }
}
