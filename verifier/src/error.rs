//! Why a program is refused: one enum of facts, located at an instruction.

use std::fmt;

use thiserror::Error;

use crate::{Backend, ProgramInput, SourceLine, listing};

/// Read, write or read-modify-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Atomic,
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::Atomic => "atomic update",
        })
    }
}

/// Every reason the verifier refuses a program. Messages are stable: the test cases match them.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ErrorKind {
    // --- well-formedness ---
    #[error("empty program")]
    EmptyProgram,
    #[error("program has {len} instruction slots, more than the {max} the verifier accepts")]
    ProgramTooLarge { len: usize, max: usize },
    #[error("invalid opcode {opcode:#04x}")]
    InvalidOpcode { opcode: u8 },
    #[error("{what} is not supported")]
    Unsupported { what: &'static str },
    #[error("invalid register r{reg}")]
    InvalidRegister { reg: u8 },
    #[error("reserved field {field} must be {expected}, is {value}")]
    ReservedField {
        field: &'static str,
        value: i64,
        expected: &'static str,
    },
    #[error("r10 is read-only")]
    WriteToR10,
    #[error("jump to {target} is outside the program (0..{len})")]
    JumpOutOfRange { target: i64, len: usize },
    #[error("jump to {target} lands in the second slot of an lddw")]
    JumpIntoLddw { target: usize },
    #[error("lddw needs a second slot with opcode 0 and zero dst, src and off")]
    IncompleteLddw,
    #[error("lddw with unknown pseudo source {src}")]
    InvalidLddwSource { src: u8 },
    #[error("map index {index} does not exist ({count} maps)")]
    UnknownMap { index: i64, count: usize },
    #[error("offset {offset} is outside the {value_size}-byte value of map {map}")]
    MapValueOffset {
        map: String,
        offset: i64,
        value_size: u32,
    },
    #[error("execution falls off the end of the program")]
    FallsOffEnd,
    #[error("unreachable instruction")]
    Unreachable,
    #[error("call to unknown helper {id}")]
    UnknownHelper { id: i32 },
    #[error("helper {name} ({id}) is not available to {kind} programs")]
    HelperNotAllowed {
        id: i32,
        name: &'static str,
        kind: &'static str,
    },
    #[error("bpf-to-bpf call to {target} is outside the program")]
    CallOutOfRange { target: i64 },
    #[error("recursive bpf-to-bpf call to the subprogram at {target}")]
    RecursiveCall { target: usize },
    #[error("call chain of {depth} frames exceeds the limit of {max}")]
    CallDepth { depth: usize, max: usize },
    #[error("jump from {from} crosses into another subprogram")]
    JumpAcrossSubprograms { from: usize },
    #[error("irreducible loop: {target} is entered other than through its head")]
    IrreducibleLoop { target: usize },
    #[error("{op} by constant zero")]
    DivisionByZero { op: &'static str },
    #[error("shift by {amount} is not below the {width}-bit operand width")]
    ShiftTooLarge { amount: i64, width: u32 },

    // --- dataflow ---
    #[error("r{reg} is read before it is written")]
    UninitRegister { reg: u8 },
    #[error("r{reg} is a packet pointer invalidated by the helper call at {by}")]
    InvalidatedPointer { reg: u8, by: usize },
    #[error("r{reg} is {found}, not a pointer to memory")]
    NotAPointer { reg: u8, found: String },
    #[error("r{reg} may be NULL: check the map lookup result against 0 before using it")]
    PossiblyNull { reg: u8 },
    #[error("invalid xdp_md {access} at offset {off} width {width}: {reason}")]
    CtxAccess {
        access: AccessKind,
        off: i64,
        width: i64,
        reason: &'static str,
    },
    #[error(
        "packet {access} r{reg}{off:+} width {width} beyond the {proven} bytes proven by a data_end check (offset {range})"
    )]
    PacketOutOfRange {
        access: AccessKind,
        reg: u8,
        off: i64,
        width: i64,
        range: String,
        proven: i64,
    },
    #[error("packet metadata {access} r{reg}{off:+} width {width} not proven below data")]
    MetaOutOfRange {
        access: AccessKind,
        reg: u8,
        off: i64,
        width: i64,
    },
    #[error("stack {access} at fp{off:+} width {width} is outside the {max}-byte frame")]
    StackOutOfBounds {
        access: AccessKind,
        off: i64,
        width: i64,
        max: u32,
    },
    #[error(
        "misaligned stack {access} at fp{off:+} width {width}: the kernel needs stack accesses aligned to their width"
    )]
    MisalignedStack {
        access: AccessKind,
        off: i64,
        width: i64,
    },
    #[error("stack access through r{reg} with a variable offset {range}")]
    StackVariableOffset { reg: u8, range: String },
    #[error("read of uninitialised stack at fp{off:+} width {width}")]
    UninitStack { off: i64, width: i64 },
    #[error("partial {access} of the pointer spilled at fp{slot:+}")]
    PartialPointer { access: AccessKind, slot: i64 },
    #[error("pointer spill to fp{off:+} must be an aligned 8-byte store")]
    MisalignedSpill { off: i64 },
    #[error(
        "map {map} value {access} at offset {range}{off:+} width {width} outside its {value_size}-byte value"
    )]
    MapValueOutOfBounds {
        access: AccessKind,
        map: String,
        off: i64,
        range: String,
        width: i64,
        value_size: u32,
    },
    #[error("memory {access} at offset {range}{off:+} width {width} outside the {size}-byte block")]
    MemOutOfBounds {
        access: AccessKind,
        range: String,
        off: i64,
        width: i64,
        size: i64,
    },
    #[error("map {map} is read-only")]
    ReadOnlyMap { map: String },
    #[error("memory {access} through r{reg} of {found} is not allowed")]
    BadMemory {
        access: AccessKind,
        reg: u8,
        found: String,
    },
    #[error("storing {value} into {target} would leak an address")]
    PointerLeak { value: String, target: String },
    #[error("forbidden pointer arithmetic: {detail}")]
    PointerArithmetic { detail: String },
    #[error("forbidden pointer comparison: {left} with {right}")]
    PointerComparison { left: String, right: String },
    #[error("{helper} argument {arg} (r{arg}): expected {expected}, found {found}")]
    HelperArg {
        helper: &'static str,
        arg: u8,
        expected: &'static str,
        found: String,
    },
    #[error("{helper} argument {arg}: {reason}")]
    HelperMemory {
        helper: &'static str,
        arg: u8,
        reason: String,
    },
    #[error("r0 at exit is {found}, a scalar is required")]
    BadReturn { found: String },
    #[error(
        "r0 returns a stack pointer to the caller (the kernel refuses any, the callee's own or a caller's)"
    )]
    ReturnsStackPointer,
    #[error(
        "loop at {head} has no bound the analysis can prove (stopped after {iterations} iterations)"
    )]
    UnboundedLoop { head: usize, iterations: u64 },
    #[error("analysis gave up after {steps} abstract steps (limit {limit})")]
    TooComplex { steps: u64, limit: u64 },

    // --- limits and profiles ---
    #[error("stack of {bytes} bytes over the call chain exceeds the limit of {max}")]
    StackTooDeep { bytes: u32, max: u32 },
    #[error("{what} of {value} exceeds the limit of {limit}")]
    LimitExceeded {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("backend {backend} refuses the program: {reason}")]
    ProfileRefused { backend: Backend, reason: String },
}

/// One error, located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationError {
    pub kind: ErrorKind,
    /// Instruction slot index.
    pub insn: usize,
    pub line: Option<SourceLine>,
    /// The abstract state of the registers the instruction involves.
    pub registers: String,
    /// The instruction disassembled with a few neighbours, the failing one marked.
    pub context: String,
}

impl VerificationError {
    pub fn new(
        input: &ProgramInput,
        kind: ErrorKind,
        insn: usize,
        registers: String,
    ) -> VerificationError {
        VerificationError {
            kind,
            insn,
            line: input.line(insn).cloned(),
            registers,
            context: listing::context(&input.insns, insn),
        }
    }
}

impl ErrorKind {
    /// A limit on the whole program (its bound, stack, or map memory) rather than a fault at
    /// one instruction.
    pub fn is_whole_program(&self) -> bool {
        matches!(
            self,
            ErrorKind::LimitExceeded { .. } | ErrorKind::StackTooDeep { .. }
        )
    }
}

impl fmt::Display for VerificationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_whole_program() {
            // A limit on the whole contract has no one instruction to blame.
            return writeln!(f, "error: {}", self.kind);
        }
        writeln!(f, "error at instruction {}: {}", self.insn, self.kind)?;
        if let Some(line) = &self.line {
            writeln!(f, "  at {}:{}:{}", line.file, line.line, line.column)?;
            if let Some(text) = &line.text {
                writeln!(f, "    | {}", text.trim())?;
            }
        }
        f.write_str(&self.context)?;
        if !self.registers.is_empty() {
            writeln!(f, "  registers: {}", self.registers)?;
        }
        Ok(())
    }
}

/// Every reason a program is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub errors: Vec<VerificationError>,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// An error before it is located in the input's source (internal to the stages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub kind: ErrorKind,
    pub insn: usize,
    pub registers: String,
}

impl Located {
    pub fn new(kind: ErrorKind, insn: usize) -> Located {
        Located {
            kind,
            insn,
            registers: String::new(),
        }
    }
}
