//! Opcode fields (RFC 9669, "BPF Instruction Set Architecture").
//!
//! An opcode byte is `class` (low 3 bits) plus, for ALU and jump classes, `source` (bit 3) and
//! `operation` (high 4 bits), and for load/store classes `size` (bits 3–4) and `mode` (high 3
//! bits).

// Instruction classes (low 3 bits).
/// Non-standard loads: `lddw` and the legacy packet loads.
pub const CLASS_LD: u8 = 0x00;
/// Loads from memory into a register.
pub const CLASS_LDX: u8 = 0x01;
/// Stores of an immediate into memory.
pub const CLASS_ST: u8 = 0x02;
/// Stores of a register into memory, and atomic operations.
pub const CLASS_STX: u8 = 0x03;
/// 32-bit arithmetic (the result is zero-extended to 64 bits).
pub const CLASS_ALU: u8 = 0x04;
/// 64-bit comparisons and jumps, calls and `exit`.
pub const CLASS_JMP: u8 = 0x05;
/// 32-bit comparisons and jumps, and `ja32` (`gotol`).
pub const CLASS_JMP32: u8 = 0x06;
/// 64-bit arithmetic.
pub const CLASS_ALU64: u8 = 0x07;

/// Source bit of ALU and jump opcodes: the operand is `imm` (K) or `src` register (X).
pub const SRC_K: u8 = 0x00;
/// Source bit: the operand is the `src` register.
pub const SRC_X: u8 = 0x08;

// ALU operations (high nibble).
/// `dst += src`.
pub const ALU_ADD: u8 = 0x00;
/// `dst -= src`.
pub const ALU_SUB: u8 = 0x10;
/// `dst *= src`.
pub const ALU_MUL: u8 = 0x20;
/// `off` = 1 makes it signed division (`sdiv`).
pub const ALU_DIV: u8 = 0x30;
/// `dst |= src`.
pub const ALU_OR: u8 = 0x40;
/// `dst &= src`.
pub const ALU_AND: u8 = 0x50;
/// `dst <<= src`.
pub const ALU_LSH: u8 = 0x60;
/// `dst >>= src`, logical.
pub const ALU_RSH: u8 = 0x70;
/// `dst = -dst`; only with source bit K and `imm` 0.
pub const ALU_NEG: u8 = 0x80;
/// `off` = 1 makes it signed modulo (`smod`).
pub const ALU_MOD: u8 = 0x90;
/// `dst ^= src`.
pub const ALU_XOR: u8 = 0xa0;
/// `off` = 8, 16 or 32 makes it a sign-extending move (`movsx`).
pub const ALU_MOV: u8 = 0xb0;
/// `dst >>= src`, arithmetic (sign-filling).
pub const ALU_ARSH: u8 = 0xc0;
/// Byte swap: in class ALU the source bit picks `le` (0) or `be` (1); in ALU64 it is the
/// unconditional `bswap`. `imm` is the width: 16, 32 or 64.
pub const ALU_END: u8 = 0xd0;

// Jump operations (high nibble).
/// Unconditional jump (`ja`; in class JMP32 it is `ja32` with the offset in `imm`).
pub const JMP_JA: u8 = 0x00;
/// Jump if `dst == src`.
pub const JMP_JEQ: u8 = 0x10;
/// Jump if `dst > src`, unsigned.
pub const JMP_JGT: u8 = 0x20;
/// Jump if `dst >= src`, unsigned.
pub const JMP_JGE: u8 = 0x30;
/// Jump if `dst & src != 0`.
pub const JMP_JSET: u8 = 0x40;
/// Jump if `dst != src`.
pub const JMP_JNE: u8 = 0x50;
/// Jump if `dst > src`, signed.
pub const JMP_JSGT: u8 = 0x60;
/// Jump if `dst >= src`, signed.
pub const JMP_JSGE: u8 = 0x70;
/// Call a helper, a local function or a kfunc (`src` says which); with source bit X, `callx`.
pub const JMP_CALL: u8 = 0x80;
/// Return from the function (`r0` is the result).
pub const JMP_EXIT: u8 = 0x90;
/// Jump if `dst < src`, unsigned.
pub const JMP_JLT: u8 = 0xa0;
/// Jump if `dst <= src`, unsigned.
pub const JMP_JLE: u8 = 0xb0;
/// Jump if `dst < src`, signed.
pub const JMP_JSLT: u8 = 0xc0;
/// Jump if `dst <= src`, signed.
pub const JMP_JSLE: u8 = 0xd0;

// Load/store sizes (bits 3–4).
/// Size field: 4 bytes (word).
pub const SIZE_W: u8 = 0x00;
/// Size field: 2 bytes (half word).
pub const SIZE_H: u8 = 0x08;
/// Size field: 1 byte.
pub const SIZE_B: u8 = 0x10;
/// Size field: 8 bytes (double word).
pub const SIZE_DW: u8 = 0x18;

// Load/store modes (high 3 bits).
/// Mode field: 64-bit immediate (`lddw`), class LD only.
pub const MODE_IMM: u8 = 0x00;
/// Legacy packet access (`ld_abs`), socket filters only.
pub const MODE_ABS: u8 = 0x20;
/// Legacy packet access (`ld_ind`), socket filters only.
pub const MODE_IND: u8 = 0x40;
/// Mode field: ordinary memory access `[reg + off]`.
pub const MODE_MEM: u8 = 0x60;
/// Sign-extending load (`ldxs*`), class LDX only.
pub const MODE_MEMSX: u8 = 0x80;
/// Atomic operation, class STX only; `imm` says which.
pub const MODE_ATOMIC: u8 = 0xc0;

// Atomic operations (`imm` of an atomic instruction).
/// Atomic `*(dst + off) += src`.
pub const ATOMIC_ADD: i32 = 0x00;
/// Atomic `*(dst + off) |= src`.
pub const ATOMIC_OR: i32 = 0x40;
/// Atomic `*(dst + off) &= src`.
pub const ATOMIC_AND: i32 = 0x50;
/// Atomic `*(dst + off) ^= src`.
pub const ATOMIC_XOR: i32 = 0xa0;
/// Or-ed into the operation: the old value is returned in `src`.
pub const ATOMIC_FETCH: i32 = 0x01;
/// Atomic exchange: `src` gets the old value (always fetches).
pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
/// Atomic compare-and-exchange against `r0`, which gets the old value (always fetches).
pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

/// `src` of `lddw`: a plain 64-bit constant.
pub const PSEUDO_NONE: u8 = 0;
/// `src` of `lddw`: `imm` is a map file descriptor (or, before relocation, a map index).
pub const PSEUDO_MAP_FD: u8 = 1;
/// `src` of `lddw`: `imm` is a map and the second slot's `imm` an offset into its value.
pub const PSEUDO_MAP_VALUE: u8 = 2;
/// `src` of `call`: a helper function by number.
pub const CALL_HELPER: u8 = 0;
/// `src` of `call`: a bpf-to-bpf call, `imm` is the target relative to the next instruction.
pub const CALL_LOCAL: u8 = 1;
/// `src` of `call`: a kernel function by BTF id.
pub const CALL_KFUNC: u8 = 2;

/// `lddw` — the only two-slot instruction.
pub const LDDW: u8 = CLASS_LD | SIZE_DW | MODE_IMM;
/// `call` with an immediate target (helper, local function or kfunc).
pub const CALL: u8 = CLASS_JMP | JMP_CALL;
/// `exit`.
pub const EXIT: u8 = CLASS_JMP | JMP_EXIT;
/// `ja` with a 32-bit offset in `imm` (`gotol`).
pub const JA32: u8 = CLASS_JMP32 | JMP_JA;

/// The class of an opcode.
pub const fn class(op: u8) -> u8 {
    op & 0x07
}

/// The operation of an ALU or jump opcode.
pub const fn operation(op: u8) -> u8 {
    op & 0xf0
}

/// The source bit of an ALU or jump opcode.
pub const fn source(op: u8) -> u8 {
    op & 0x08
}

/// The size field of a load/store opcode.
pub const fn size(op: u8) -> u8 {
    op & 0x18
}

/// The mode field of a load/store opcode.
pub const fn mode(op: u8) -> u8 {
    op & 0xe0
}

/// Bytes moved by a load/store of size field `size`.
pub const fn size_bytes(size: u8) -> usize {
    match size {
        SIZE_B => 1,
        SIZE_H => 2,
        SIZE_W => 4,
        _ => 8,
    }
}
