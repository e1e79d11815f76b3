//! Proves or refutes an instruction's assertions against the abstract state. Each check returns
//! the fact the transfer function needs (which memory an access touches) or the error.

use ebpf_isa::opcode as op;

use crate::domain::{ANON, Interval, MAX_PACKET_OFF, NO_VAR, STACK_SIZE, Stack, State, Value};
use crate::error::{AccessKind, ErrorKind};
use crate::helpers::{self, Arg, Helper};
use crate::{MapInfo, ProgramInput, ProgramKind};

/// Byte offsets of `struct xdp_md`'s fields.
pub mod xdp_md {
    pub const DATA: i64 = 0;
    pub const DATA_END: i64 = 4;
    pub const DATA_META: i64 = 8;
    pub const INGRESS_IFINDEX: i64 = 12;
    pub const RX_QUEUE_INDEX: i64 = 16;
    pub const EGRESS_IFINDEX: i64 = 20;
}

/// The memory an access touches, once proven valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A field of `struct xdp_md` at this offset.
    Ctx(i64),
    Packet,
    Meta,
    /// The stack of `frame`, at this constant offset from its `r10`.
    Stack {
        frame: u8,
        off: i64,
    },
    Mem,
    MapValue {
        map: u32,
    },
}

pub fn initialized(state: &State, reg: u8) -> Result<(), ErrorKind> {
    match state.regs[usize::from(reg)] {
        Value::Uninit => Err(ErrorKind::UninitRegister { reg }),
        Value::Invalidated { by } => Err(ErrorKind::InvalidatedPointer { reg, by }),
        _ => Ok(()),
    }
}

fn map_info(input: &ProgramInput, map: u32) -> Option<&MapInfo> {
    input.maps.get(map as usize)
}

/// A memory access through `ptr` (held in `reg`) at `span` = (offset, width in bytes);
/// `stored` is the value a write stores.
pub fn region(
    input: &ProgramInput,
    state: &State,
    reg: u8,
    ptr: Value,
    span: (i64, i64),
    access: AccessKind,
    stored: Option<Value>,
) -> Result<Target, ErrorKind> {
    let (off, width) = span;
    let leak = |target: &str| -> Result<(), ErrorKind> {
        match stored {
            Some(v) if v.is_pointer() || v == Value::Mixed => Err(ErrorKind::PointerLeak {
                value: v.kind_name().to_string(),
                target: target.to_string(),
            }),
            _ => Ok(()),
        }
    };
    let bad = || ErrorKind::BadMemory {
        access,
        reg,
        found: ptr.to_string(),
    };
    match ptr {
        Value::Scalar(_) | Value::Mixed => Err(ErrorKind::NotAPointer {
            reg,
            found: ptr.to_string(),
        }),
        Value::MapValueOrNull { .. } => Err(ErrorKind::PossiblyNull { reg }),
        Value::Uninit => Err(ErrorKind::UninitRegister { reg }),
        Value::Invalidated { by } => Err(ErrorKind::InvalidatedPointer { reg, by }),
        Value::PacketEnd | Value::MapPtr { .. } => Err(bad()),
        Value::Ctx => {
            let reason = if access != AccessKind::Read {
                Some("the context is read-only")
            } else if width != 4 {
                Some("fields are read with 4-byte loads only")
            } else if off == xdp_md::EGRESS_IFINDEX {
                Some("egress_ifindex is only readable by devmap programs")
            } else if !(xdp_md::DATA..=xdp_md::RX_QUEUE_INDEX).contains(&off) || off % 4 != 0 {
                Some("no such field")
            } else {
                None
            };
            match reason {
                Some(reason) => Err(ErrorKind::CtxAccess {
                    access,
                    off,
                    width,
                    reason,
                }),
                None => Ok(Target::Ctx(off)),
            }
        }
        Value::Packet { var, var_range, k } => {
            if access == AccessKind::Atomic {
                return Err(bad());
            }
            leak("the packet")?;
            let var_range = if var == NO_VAR {
                Interval::exact(0)
            } else {
                var_range
            };
            let start = var_range.lo.saturating_add(k).saturating_add(off);
            let end = k.saturating_add(off).saturating_add(width);
            let by_var = var != NO_VAR && state.proven(var).is_some_and(|p| end <= p);
            let abs_end = var_range.hi.saturating_add(end);
            let proven = state.proven(NO_VAR).unwrap_or(0);
            if start >= 0 && (by_var || abs_end <= proven) {
                Ok(Target::Packet)
            } else {
                Err(ErrorKind::PacketOutOfRange {
                    access,
                    reg,
                    off,
                    width,
                    range: var_range.shift(k).to_string(),
                    proven,
                })
            }
        }
        Value::PacketMeta { k } => {
            if access == AccessKind::Atomic {
                return Err(bad());
            }
            leak("packet metadata")?;
            let start = k.saturating_add(off);
            if start >= 0 && start.saturating_add(width) <= state.meta_valid {
                Ok(Target::Meta)
            } else {
                Err(ErrorKind::MetaOutOfRange {
                    access,
                    reg,
                    off,
                    width,
                })
            }
        }
        Value::Stack { frame, off: o } => {
            if !o.is_exact() {
                return Err(ErrorKind::StackVariableOffset {
                    reg,
                    range: o.to_string(),
                });
            }
            let at = o.lo.saturating_add(off);
            if !Stack::in_frame(at, width) {
                return Err(ErrorKind::StackOutOfBounds {
                    access,
                    off: at,
                    width,
                    max: STACK_SIZE as u32,
                });
            }
            let Some(fr) = state.frames.get(usize::from(frame)) else {
                return Err(bad());
            };
            let stack = &fr.stack;
            let pointer_cell = stack
                .overlapping(at, width)
                .find(|c| c.value.is_pointer() || matches!(c.value, Value::Invalidated { .. }))
                .copied();
            match access {
                AccessKind::Read => {
                    if let Some(cell) = pointer_cell
                        && (cell.off != at || i64::from(cell.width) != width)
                    {
                        return Err(ErrorKind::PartialPointer {
                            access,
                            slot: cell.off,
                        });
                    }
                    if stack.cell(at, width as u8).is_none()
                        && let Some(first) = stack.first_uninit(at, width)
                    {
                        return Err(ErrorKind::UninitStack { off: first, width });
                    }
                }
                AccessKind::Write => {
                    if let Some(v) = stored
                        && (v.is_pointer() || v == Value::Mixed)
                        && (width != 8 || at % 8 != 0)
                    {
                        return Err(ErrorKind::MisalignedSpill { off: at });
                    }
                }
                AccessKind::Atomic => {
                    if let Some(cell) = pointer_cell {
                        return Err(ErrorKind::PartialPointer {
                            access,
                            slot: cell.off,
                        });
                    }
                    if let Some(first) = stack.first_uninit(at, width) {
                        return Err(ErrorKind::UninitStack { off: first, width });
                    }
                    leak("the stack by an atomic operation")?;
                }
            }
            Ok(Target::Stack { frame, off: at })
        }
        Value::Mem { off: o } => {
            let size = match input.kind {
                ProgramKind::RawMemory { size } => i64::from(size),
                ProgramKind::Xdp => 0,
            };
            leak("program memory")?;
            let start = o.lo.saturating_add(off);
            let end = o.hi.saturating_add(off).saturating_add(width);
            if start >= 0 && end <= size {
                Ok(Target::Mem)
            } else {
                Err(ErrorKind::MemOutOfBounds {
                    access,
                    range: o.to_string(),
                    off,
                    width,
                    size,
                })
            }
        }
        Value::MapValue { map, off: o } => {
            let Some(info) = map_info(input, map) else {
                return Err(bad());
            };
            if access != AccessKind::Read && info.read_only {
                return Err(ErrorKind::ReadOnlyMap {
                    map: info.name.clone(),
                });
            }
            leak(&format!("map {}", info.name))?;
            let start = o.lo.saturating_add(off);
            let end = o.hi.saturating_add(off).saturating_add(width);
            if start >= 0 && end <= i64::from(info.value_size) {
                Ok(Target::MapValue { map })
            } else {
                Err(ErrorKind::MapValueOutOfBounds {
                    access,
                    map: info.name.clone(),
                    off,
                    range: o.to_string(),
                    width,
                    value_size: info.value_size,
                })
            }
        }
    }
}

fn arith_error(detail: impl Into<String>) -> ErrorKind {
    ErrorKind::PointerArithmetic {
        detail: detail.into(),
    }
}

/// The pointer-arithmetic rules: which ALU operations may involve pointers.
pub fn arithmetic(operation: u8, dst: Value, src: Value, alu64: bool) -> Result<(), ErrorKind> {
    let name = |v: Value| v.kind_name();
    if operation == op::ALU_MOV {
        return if src.is_pointer() && !alu64 {
            Err(arith_error(format!("32-bit move truncates {}", name(src))))
        } else {
            Ok(())
        };
    }
    if dst == Value::Mixed || src == Value::Mixed {
        return Err(arith_error("operand is a pointer on some paths only"));
    }
    match (dst.is_pointer(), src.is_pointer()) {
        (false, false) => Ok(()),
        (true, true) => {
            // A privileged loader (`allow_ptr_leaks`: CAP_BPF + CAP_PERFMON, which the kernel
            // profile models) may subtract any two pointers; the result is a scalar. Anything
            // else combining two pointers is refused by the kernel too. We refuse the 32-bit
            // form, which only produces truncated address bits.
            if operation == op::ALU_SUB && alu64 {
                Ok(())
            } else {
                Err(arith_error(format!(
                    "{}{} of {} and {}",
                    if alu64 { "" } else { "32-bit " },
                    op_name(operation),
                    name(dst),
                    name(src)
                )))
            }
        }
        (ptr_dst, _) => {
            let (ptr, scalar) = if ptr_dst { (dst, src) } else { (src, dst) };
            if !alu64 || !(operation == op::ALU_ADD || (operation == op::ALU_SUB && ptr_dst)) {
                return Err(arith_error(format!(
                    "{}{} on {}",
                    if alu64 { "" } else { "32-bit " },
                    op_name(operation),
                    name(ptr)
                )));
            }
            let scalar = scalar.scalar().unwrap_or(crate::domain::Scalar::TOP);
            match ptr {
                Value::Ctx => Err(arith_error("arithmetic on the context pointer")),
                Value::PacketEnd => Err(arith_error("arithmetic on packet_end")),
                Value::MapPtr { .. } => Err(arith_error("arithmetic on a map pointer")),
                Value::MapValueOrNull { .. } => Err(arith_error(
                    "arithmetic on a map value that may be NULL (check it first)",
                )),
                // The kernel refuses any subtraction from a stack pointer, even of a constant
                // (JITs may not handle it): stack addresses are formed with `add` only.
                Value::Stack { .. } if operation == op::ALU_SUB => Err(arith_error(
                    "subtraction from a stack pointer (add a negative offset)",
                )),
                Value::Packet { .. } | Value::PacketMeta { .. } => match scalar.constant() {
                    Some(c) if (c as i64).unsigned_abs() <= MAX_PACKET_OFF as u64 => Ok(()),
                    _ if operation == op::ALU_SUB => {
                        Err(arith_error("subtracting a variable from a packet pointer"))
                    }
                    _ if scalar.umax <= MAX_PACKET_OFF as u64
                        && matches!(ptr, Value::Packet { .. }) =>
                    {
                        Ok(())
                    }
                    _ => Err(arith_error(format!(
                        "packet pointer offset by {scalar}, not within [0, {MAX_PACKET_OFF}]"
                    ))),
                },
                _ => match scalar.as_offset() {
                    Some(_) => Ok(()),
                    None => Err(arith_error(format!(
                        "{} offset by unbounded {scalar}",
                        name(ptr)
                    ))),
                },
            }
        }
    }
}

fn op_name(operation: u8) -> &'static str {
    match operation {
        op::ALU_ADD => "addition",
        op::ALU_SUB => "subtraction",
        op::ALU_MUL => "multiplication",
        op::ALU_DIV => "division",
        op::ALU_OR => "bitwise or",
        op::ALU_AND => "bitwise and",
        op::ALU_LSH => "left shift",
        op::ALU_RSH => "right shift",
        op::ALU_NEG => "negation",
        op::ALU_MOD => "modulo",
        op::ALU_XOR => "bitwise xor",
        op::ALU_ARSH => "arithmetic shift",
        op::ALU_END => "byte swap",
        _ => "operation",
    }
}

/// Which comparisons may involve pointers: same-kind pointers, packet with packet end, and a
/// possibly-NULL map value with zero (the NULL check).
pub fn comparison(operation: u8, left: Value, right: Value) -> Result<(), ErrorKind> {
    let is_zero = |v: Value| v.scalar().and_then(|s| s.constant()) == Some(0);
    let eq = matches!(operation, op::JMP_JEQ | op::JMP_JNE);
    let ok = match (left, right) {
        (Value::Scalar(_), Value::Scalar(_)) => true,
        (Value::MapValueOrNull { .. } | Value::MapValue { .. }, z)
        | (z, Value::MapValueOrNull { .. } | Value::MapValue { .. })
            if is_zero(z) =>
        {
            eq
        }
        (a, b) if a.is_packet_kind() && b.is_packet_kind() => {
            !matches!((a, b), (Value::PacketEnd, Value::PacketEnd))
        }
        (Value::Stack { frame: a, .. }, Value::Stack { frame: b, .. }) => a == b,
        (Value::MapValue { map: a, .. }, Value::MapValue { map: b, .. }) => a == b,
        (Value::Mem { .. }, Value::Mem { .. }) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ErrorKind::PointerComparison {
            left: left.kind_name().to_string(),
            right: right.kind_name().to_string(),
        })
    }
}

/// What a helper call's arguments resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperCall {
    /// The map of the map argument.
    pub map: Option<u32>,
    /// Memory the helper writes.
    pub writes: Vec<Write>,
    /// A packet buffer argument is in bounds only by its offset's bounds (see
    /// [`packet_by_bounds`]).
    pub packet_by_bounds: bool,
}

/// A helper's write through an argument register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub reg: u8,
    /// Bytes written on every call (the smallest size): initialised afterwards.
    pub surely: i64,
    /// Bytes that may be written (the largest size): their old values are lost.
    pub maybe: i64,
}

/// Checks each argument register against the helper's signature.
pub fn helper_args(
    input: &ProgramInput,
    state: &State,
    helper: &Helper,
) -> Result<HelperCall, ErrorKind> {
    let mut call = HelperCall::default();
    let arg_err = |arg: u8, expected: &'static str, found: Value| ErrorKind::HelperArg {
        helper: helper.name,
        arg,
        expected,
        found: found.to_string(),
    };
    for (i, kind) in helper.args.iter().enumerate() {
        let reg = i as u8 + 1;
        let value = state.regs[usize::from(reg)];
        initialized(state, reg)?;
        let mem = |size: i64, access: AccessKind| -> Result<(), ErrorKind> {
            region(input, state, reg, value, (0, size), access, None)
                .map(|_| ())
                .map_err(|e| ErrorKind::HelperMemory {
                    helper: helper.name,
                    arg: reg,
                    reason: e.to_string(),
                })
        };
        let map = || call.map.and_then(|m| map_info(input, m));
        match *kind {
            Arg::Scalar => {
                if value.is_pointer() || value == Value::Mixed {
                    return Err(arg_err(reg, "a scalar", value));
                }
            }
            Arg::Ctx => {
                if value != Value::Ctx {
                    return Err(arg_err(reg, "the context pointer", value));
                }
            }
            Arg::Map(kind) => match value {
                Value::MapPtr { map }
                    if map_info(input, map).is_some_and(|m| kind.accepts(m.map_type)) =>
                {
                    call.map = Some(map);
                }
                _ => return Err(arg_err(reg, kind.describe(), value)),
            },
            Arg::MapKey | Arg::MapValue | Arg::MapValueOut => {
                let Some(info) = map() else {
                    return Err(arg_err(reg, "a pointer after a map argument", value));
                };
                let (size, access) = match kind {
                    Arg::MapKey => (info.key_size, AccessKind::Read),
                    Arg::MapValue => (info.value_size, AccessKind::Read),
                    _ => (info.value_size, AccessKind::Write),
                };
                if !is_memory(value) {
                    return Err(arg_err(reg, "a pointer to memory", value));
                }
                mem(i64::from(size), access)?;
                call.packet_by_bounds |= packet_by_bounds(state, value, 0, i64::from(size));
                if access == AccessKind::Read {
                    no_pointers_in(state, value, i64::from(size)).map_err(|reason| {
                        ErrorKind::HelperMemory {
                            helper: helper.name,
                            arg: reg,
                            reason,
                        }
                    })?;
                } else {
                    call.writes.push(Write {
                        reg,
                        surely: i64::from(size),
                        maybe: i64::from(size),
                    });
                }
            }
            Arg::Mem | Arg::MemOrNull | Arg::MemOut => {
                let size_reg = reg + 1;
                let zero_ok = helper.args.get(i + 1) == Some(&Arg::MemSizeOrZero);
                let size = match state.regs.get(usize::from(size_reg)).copied() {
                    Some(Value::Scalar(s)) => s,
                    other => {
                        return Err(arg_err(size_reg, "a size", other.unwrap_or(Value::Uninit)));
                    }
                };
                let min = u64::from(!zero_ok);
                if size.umin < min || size.umax > helpers::MAX_MEM_SIZE {
                    return Err(ErrorKind::HelperMemory {
                        helper: helper.name,
                        arg: size_reg,
                        reason: format!(
                            "size {size} must be within [{min}, {}]",
                            helpers::MAX_MEM_SIZE
                        ),
                    });
                }
                let is_null = value.scalar().and_then(|s| s.constant()) == Some(0);
                if *kind == Arg::MemOrNull && is_null {
                    // NULL is only a valid buffer of no bytes.
                    if size.umax != 0 {
                        return Err(ErrorKind::HelperMemory {
                            helper: helper.name,
                            arg: reg,
                            reason: format!("NULL buffer with size {size}, not 0"),
                        });
                    }
                    continue;
                }
                if !is_memory(value) {
                    let expected = if *kind == Arg::MemOrNull {
                        "a pointer to memory or NULL"
                    } else {
                        "a pointer to memory"
                    };
                    return Err(arg_err(reg, expected, value));
                }
                // The helper may touch up to the largest size; only the smallest is surely
                // written.
                let bytes = size.umax as i64;
                call.packet_by_bounds |= packet_by_bounds(state, value, 0, bytes);
                if *kind == Arg::MemOut {
                    mem(bytes, AccessKind::Write)?;
                    call.writes.push(Write {
                        reg,
                        surely: size.umin as i64,
                        maybe: bytes,
                    });
                } else {
                    mem(bytes, AccessKind::Read)?;
                    no_pointers_in(state, value, bytes).map_err(|reason| {
                        ErrorKind::HelperMemory {
                            helper: helper.name,
                            arg: reg,
                            reason,
                        }
                    })?;
                }
            }
            Arg::MemSize | Arg::MemSizeOrZero => {}
        }
    }
    Ok(call)
}

/// Whether an access of `width` bytes at `off` through the packet pointer `ptr` is in bounds
/// only by the bounds of the pointer's variable part, not by a `data_end` check made on the
/// pointer (or a copy) after that part was added. Sound, but the kernel, which tracks packet
/// ranges per pointer identity, refuses such an access.
pub fn packet_by_bounds(state: &State, ptr: Value, off: i64, width: i64) -> bool {
    match ptr {
        Value::Packet { var, k, .. } if var != NO_VAR => {
            let end = k.saturating_add(off).saturating_add(width);
            state.proven(var).is_none_or(|p| end > p)
        }
        _ => false,
    }
}

/// Whether `value` points to memory a helper may read or write: the stack, the packet or its
/// metadata, a map value or a raw-memory block. The context is not memory (the kernel's
/// `PTR_TO_CTX` is no `ARG_PTR_TO_MEM`), nor are map pointers or `data_end`.
fn is_memory(value: Value) -> bool {
    matches!(
        value,
        Value::Stack { .. }
            | Value::Packet { .. }
            | Value::PacketMeta { .. }
            | Value::MapValue { .. }
            | Value::Mem { .. }
            | Value::MapValueOrNull { .. }
    )
}

/// A helper reading stack memory must not read a spilled pointer (it would leak it).
fn no_pointers_in(state: &State, ptr: Value, size: i64) -> Result<(), String> {
    if let Value::Stack { frame, off } = ptr
        && let Some(fr) = state.frames.get(usize::from(frame))
        && let Some(cell) = fr
            .stack
            .overlapping(off.lo, size)
            .find(|c| c.value.is_pointer())
    {
        return Err(format!(
            "reads the pointer spilled at fp{:+}, which would leak it",
            cell.off
        ));
    }
    Ok(())
}

/// What `exit` may return.
pub fn valid_return(state: &State, is_main: bool) -> Result<(), ErrorKind> {
    let r0 = state.regs[0];
    if is_main {
        initialized(state, 0)?;
        match r0 {
            Value::Scalar(_) => Ok(()),
            _ => Err(ErrorKind::BadReturn {
                found: r0.kind_name().to_string(),
            }),
        }
    } else {
        match r0 {
            // Into its own frame (gone after the return) or a caller's: the kernel refuses
            // both ("cannot return stack pointer to the caller").
            Value::Stack { .. } => Err(ErrorKind::ReturnsStackPointer),
            Value::Mixed => Err(ErrorKind::BadReturn {
                found: r0.kind_name().to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// The id nullable values created at `pc` carry (0 is never used, [`ANON`] means unknown).
pub fn fresh_id(pc: usize) -> u32 {
    u32::try_from(pc + 1).unwrap_or(ANON - 1).min(ANON - 1)
}
