//! rbpf's x86_64 JIT as the VM's fast engine.
//!
//! Two things rbpf's JIT does not do are handled here:
//! - **Frames of subprograms.** rbpf gives the whole program one 512-byte stack frame and does
//!   not move `r10` on a bpf-to-bpf call, so a callee's stack slots would overwrite its
//!   caller's. The kernel bounds the *whole call chain* to 512 bytes, so [`layout_frames`] gives
//!   each function a fixed place in that one frame (below every caller that can reach it) and
//!   rewrites its `r10`-relative accesses to that place. Code it cannot rewrite exactly is
//!   refused for the JIT (the interpreter runs it).
//! - **Instructions rbpf lacks** (atomics, signed division, sign extension, `bswap`, 32-bit
//!   `ja`): refused up front with the instruction named, never run wrongly.
//!
//! Helpers are plain `fn` pointers in rbpf, so each run publishes its [`RunState`] in a
//! thread-local the helper trampolines read.

use std::cell::Cell;
use std::sync::Arc;

use ebpf_isa::{Insn, encode, opcode as op};

use super::helpers::{self, HelperCall, RunState};
use super::interp::FRAME_STACK;
use super::{Engine, VmError};

/// Checks that rbpf's JIT can run `code` and lays out its subprogram frames.
pub fn prepare(code: &[Insn]) -> Result<Vec<u8>, VmError> {
    check_jit_supported(code)?;
    let fixed = fix_zero_extension(code)?;
    let laid_out = layout_frames(&fixed)?;
    Ok(encode(&laid_out))
}

/// rbpf 0.4's JIT forgets to clear the upper half in two 32-bit operations (found by the
/// conformance suite: `mov`, `le16-high`, `le32-high`): `mov32 dst, src` is a 64-bit move and
/// `le16`/`le32` are no-ops. They are rewritten into instructions it gets right: `le16` into
/// `dst &= 0xffff`, `le32` into `dst += 0` in 32 bits (an x86 32-bit operation clears the upper
/// half), and `mov32 dst, src` into `dst = src; dst += 0 (32-bit)`, which takes one more slot,
/// so every jump and call across it is re-aimed.
fn fix_zero_extension(code: &[Insn]) -> Result<Vec<Insn>, VmError> {
    const MOV32_REG: u8 = op::CLASS_ALU | op::SRC_X | op::ALU_MOV;
    const LE: u8 = op::CLASS_ALU | op::SRC_K | op::ALU_END;
    let zero_extend = |dst: u8| Insn::new(op::CLASS_ALU | op::SRC_K | op::ALU_ADD, dst, 0, 0, 0);
    expand(code, |insn| match insn.opcode {
        MOV32_REG if insn.off == 0 => Some(vec![
            Insn::new(
                op::CLASS_ALU64 | op::SRC_X | op::ALU_MOV,
                insn.dst,
                insn.src,
                0,
                0,
            ),
            zero_extend(insn.dst),
        ]),
        LE if insn.imm == 16 => Some(vec![Insn::new(
            op::CLASS_ALU64 | op::SRC_K | op::ALU_AND,
            insn.dst,
            0,
            0,
            0xffff,
        )]),
        LE if insn.imm == 32 => Some(vec![zero_extend(insn.dst)]),
        _ => None,
    })
}

/// Replaces instructions by sequences (`rewrite` returns `None` to keep one) and re-aims every
/// relative jump and bpf-to-bpf call at its target's new place. Jumps and calls themselves are
/// never rewritten, and a jump into a rewritten instruction lands on its first replacement.
fn expand(
    code: &[Insn],
    rewrite: impl Fn(Insn) -> Option<Vec<Insn>>,
) -> Result<Vec<Insn>, VmError> {
    let mut out = Vec::with_capacity(code.len());
    // new_index[i]: where old slot i starts; one extra entry for "one past the end".
    let mut new_index = Vec::with_capacity(code.len() + 1);
    let mut second_slot = false;
    for insn in code {
        new_index.push(out.len());
        if std::mem::take(&mut second_slot) {
            out.push(*insn);
            continue;
        }
        second_slot = insn.is_lddw();
        match rewrite(*insn) {
            Some(replacement) => out.extend(replacement),
            None => out.push(*insn),
        }
    }
    new_index.push(out.len());
    if out.len() == code.len() {
        return Ok(out);
    }
    let retarget = |old: usize, relative: i64| -> Result<i64, VmError> {
        let target = old as i64 + 1 + relative;
        let target = usize::try_from(target)
            .ok()
            .filter(|t| *t <= code.len())
            .ok_or(VmError::JumpOutOfRange { insn: old })?;
        Ok(new_index[target] as i64 - (new_index[old] as i64 + 1))
    };
    let mut second_slot = false;
    for (old, insn) in code.iter().enumerate() {
        if std::mem::take(&mut second_slot) {
            continue;
        }
        second_slot = insn.is_lddw();
        let at = new_index[old];
        let class = insn.class();
        let operation = op::operation(insn.opcode);
        if !matches!(class, op::CLASS_JMP | op::CLASS_JMP32) || operation == op::JMP_EXIT {
            continue;
        }
        if operation == op::JMP_CALL {
            if insn.is_local_call() {
                let imm = retarget(old, i64::from(insn.imm))?;
                out[at].imm =
                    i32::try_from(imm).map_err(|_| VmError::JumpOutOfRange { insn: old })?;
            }
            continue;
        }
        if insn.opcode == op::JA32 {
            let imm = retarget(old, i64::from(insn.imm))?;
            out[at].imm = i32::try_from(imm).map_err(|_| VmError::JumpOutOfRange { insn: old })?;
        } else {
            let off = retarget(old, i64::from(insn.off))?;
            out[at].off = i16::try_from(off)
                .map_err(|_| cannot(old, "a jump too long after rewriting 32-bit moves"))?;
        }
    }
    Ok(out)
}

fn cannot(insn: usize, what: &str) -> VmError {
    VmError::EngineCannot {
        insn,
        engine: Engine::Jit,
        what: what.to_owned(),
    }
}

/// Refuses instructions rbpf 0.4's JIT does not implement.
fn check_jit_supported(code: &[Insn]) -> Result<(), VmError> {
    let mut skip = false;
    for (index, insn) in code.iter().enumerate() {
        if std::mem::take(&mut skip) {
            continue;
        }
        skip = insn.is_lddw();
        let class = insn.class();
        let operation = op::operation(insn.opcode);
        let mode = op::mode(insn.opcode);
        let what = match class {
            op::CLASS_STX if mode == op::MODE_ATOMIC => Some("atomic operations (lock …)"),
            op::CLASS_LDX if mode == op::MODE_MEMSX => Some("sign-extending loads (ldxs*)"),
            op::CLASS_LD if !insn.is_lddw() => Some("legacy packet loads (ld_abs/ld_ind)"),
            op::CLASS_ALU | op::CLASS_ALU64
                if insn.off != 0 && matches!(operation, op::ALU_DIV | op::ALU_MOD) =>
            {
                Some("signed division or modulo (sdiv/smod)")
            }
            op::CLASS_ALU | op::CLASS_ALU64 if insn.off != 0 && operation == op::ALU_MOV => {
                Some("sign-extending moves (movsx)")
            }
            op::CLASS_ALU64 if operation == op::ALU_END => Some("byte swaps (bswap)"),
            op::CLASS_JMP32 if operation == op::JMP_JA => Some("32-bit-offset jumps (gotol)"),
            op::CLASS_JMP if operation == op::JMP_CALL && insn.src > op::CALL_LOCAL => {
                Some("calls of kernel functions")
            }
            op::CLASS_JMP if operation == op::JMP_CALL && insn.src == op::CALL_HELPER => {
                (insn.imm == 12).then_some("tail calls")
            }
            _ => None,
        };
        if let Some(what) = what {
            return Err(cannot(index, what));
        }
    }
    Ok(())
}

/// Gives every function its own slice of the one 512-byte frame rbpf allocates, and rewrites
/// its `r10`-relative accesses into that slice. See the module docs.
pub fn layout_frames(code: &[Insn]) -> Result<Vec<Insn>, VmError> {
    // Function entries: instruction 0 and every bpf-to-bpf call target.
    let mut starts = vec![0usize];
    for (index, insn) in code.iter().enumerate() {
        if insn.is_local_call() {
            let target = index as i64 + 1 + i64::from(insn.imm);
            if target < 0 || target as usize >= code.len() {
                return Err(VmError::JumpOutOfRange { insn: index });
            }
            starts.push(target as usize);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    if starts.len() == 1 {
        return Ok(code.to_vec());
    }
    let function_of = |index: usize| starts.partition_point(|&s| s <= index) - 1;
    let end_of = |f: usize| starts.get(f + 1).copied().unwrap_or(code.len());

    // Each function's stack depth, from its r10-relative accesses and `rX = r10; rX += K`.
    let mut depth = vec![0u64; starts.len()];
    for (f, start) in starts.iter().enumerate() {
        for index in *start..end_of(f) {
            let insn = code[index];
            if let Some(off) = frame_access(insn) {
                // An access at r10 + off covers [off, off + width): it reaches -off below r10.
                depth[f] = depth[f].max((-i64::from(off)).max(0) as u64);
            }
            if is_frame_pointer_copy(insn) {
                let next = code.get(index + 1).copied();
                match next {
                    Some(add) if is_add_imm(add, insn.dst) => {
                        depth[f] = depth[f].max((-i64::from(add.imm)).max(0) as u64);
                    }
                    _ => {
                        return Err(cannot(
                            index,
                            "a frame pointer copy not followed by a constant offset (frame layout)",
                        ));
                    }
                }
            }
        }
        depth[f] = depth[f].div_ceil(8) * 8;
    }

    // Place callees below every caller: offset(callee) = max(offset(caller) + depth(caller)).
    let mut offset = vec![0u64; starts.len()];
    let mut changed = true;
    let mut rounds = 0;
    while changed {
        changed = false;
        rounds += 1;
        if rounds > starts.len() + 1 {
            return Err(cannot(0, "recursive bpf-to-bpf calls"));
        }
        for (index, insn) in code.iter().enumerate() {
            if !insn.is_local_call() {
                continue;
            }
            let caller = function_of(index);
            let callee = function_of((index as i64 + 1 + i64::from(insn.imm)) as usize);
            let wanted = offset[caller] + depth[caller];
            if wanted > offset[callee] {
                offset[callee] = wanted;
                changed = true;
            }
        }
    }
    let total = (0..starts.len())
        .map(|f| offset[f] + depth[f])
        .max()
        .unwrap_or(0);
    if total > FRAME_STACK as u64 {
        return Err(cannot(
            0,
            &format!("a call chain using {total} bytes of stack (at most {FRAME_STACK})"),
        ));
    }

    let mut out = code.to_vec();
    for (f, start) in starts.iter().enumerate() {
        let shift = offset[f] as i64;
        if shift == 0 {
            continue;
        }
        for index in *start..end_of(f) {
            let insn = code[index];
            if let Some(off) = frame_access(insn) {
                let moved = i64::from(off) - shift;
                out[index].off = i16::try_from(moved)
                    .map_err(|_| cannot(index, "a stack offset out of range after layout"))?;
            } else if is_frame_pointer_copy(insn) {
                out[index + 1].imm = out[index + 1]
                    .imm
                    .checked_sub(shift as i32)
                    .ok_or_else(|| cannot(index, "a stack offset out of range after layout"))?;
            } else if reads_frame_pointer(insn) {
                return Err(cannot(
                    index,
                    "a use of r10 other than a load, store or address computation (frame layout)",
                ));
            }
        }
    }
    Ok(out)
}

/// The offset of a load or store whose base register is r10.
fn frame_access(insn: Insn) -> Option<i16> {
    match insn.class() {
        op::CLASS_LDX if insn.src == 10 => Some(insn.off),
        op::CLASS_ST | op::CLASS_STX if insn.dst == 10 => Some(insn.off),
        _ => None,
    }
}

/// `rX = r10` (64-bit move).
fn is_frame_pointer_copy(insn: Insn) -> bool {
    insn.opcode == op::CLASS_ALU64 | op::SRC_X | op::ALU_MOV && insn.src == 10 && insn.off == 0
}

/// `rX += K` (64-bit).
fn is_add_imm(insn: Insn, dst: u8) -> bool {
    insn.opcode == op::CLASS_ALU64 | op::SRC_K | op::ALU_ADD && insn.dst == dst
}

/// Any other instruction that reads r10 as a value.
fn reads_frame_pointer(insn: Insn) -> bool {
    match insn.class() {
        op::CLASS_ALU | op::CLASS_ALU64 | op::CLASS_JMP | op::CLASS_JMP32 => {
            (op::source(insn.opcode) == op::SRC_X && insn.src == 10) || insn.dst == 10
        }
        op::CLASS_STX => insn.src == 10,
        _ => false,
    }
}

thread_local! {
    /// The run in progress on this thread, for the helper trampolines.
    static CURRENT: Cell<*mut RunState<'static>> = const { Cell::new(std::ptr::null_mut()) };
    /// A helper fault of the run in progress (reported when the program returns).
    static FAULT: Cell<Option<(u32, &'static str)>> = const { Cell::new(None) };
}

/// Calls helper `ID` on the current run's state.
extern "C" fn trampoline<const ID: u32>(a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> u64 {
    let state = CURRENT.with(Cell::get);
    if state.is_null() {
        FAULT.with(|f| f.set(Some((ID, "helper called outside a run"))));
        return 0;
    }
    // SAFETY: `JitProgram::run` publishes a pointer to a RunState that outlives the call and
    // clears it before returning; the JIT runs on this thread only.
    let state = unsafe { &mut *state };
    let call = HelperCall {
        id: ID,
        args: [a1, a2, a3, a4, a5],
        insn: 0,
    };
    // Compiled code has no region table for its native stack: pointer arguments are trusted
    // here (the verifier's job); map handles and the context are still checked.
    match helpers::call(state, &call, &|_, _, _, _| true) {
        Ok(value) => value,
        Err(error) => {
            let what = match error {
                VmError::BadHelperArgument { what, .. } => what,
                _ => "helper failed",
            };
            FAULT.with(|f| f.set(Some((ID, what))));
            0
        }
    }
}

/// An entry point rbpf's JIT can call for helper `$id`: compiled eBPF code calls helpers with
/// the stack aligned to 8 bytes only, while Rust code may use SSE instructions that need the
/// System V 16-byte alignment (seen crashing in a hash map lookup). The entry realigns the
/// stack, calls the helper with the arguments untouched (rdi, rsi, rdx, rcx, r8), and restores
/// it.
macro_rules! aligned_entry {
    ($id:expr) => {{
        #[unsafe(naked)]
        extern "C" fn entry(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
            std::arch::naked_asm!(
                "push rbp",
                "mov rbp, rsp",
                "and rsp, -16",
                "call {helper}",
                "mov rsp, rbp",
                "pop rbp",
                "ret",
                helper = sym trampoline::<{ $id }>,
            )
        }
        // SAFETY: rbpf's JIT calls helpers with the System V convention (it moves eBPF r4 into
        // rcx itself), which is what the `extern "C"` entry expects; rbpf never calls a JIT
        // helper through the Rust-ABI pointer type it stores it as.
        unsafe {
            std::mem::transmute::<extern "C" fn(u64, u64, u64, u64, u64) -> u64, rbpf::Helper>(
                entry,
            )
        }
    }};
}

/// The entry point of each helper the VM implements.
fn trampolines() -> [(u32, rbpf::Helper); 15] {
    [
        (
            helpers::MAP_LOOKUP_ELEM,
            aligned_entry!(helpers::MAP_LOOKUP_ELEM),
        ),
        (
            helpers::MAP_UPDATE_ELEM,
            aligned_entry!(helpers::MAP_UPDATE_ELEM),
        ),
        (
            helpers::MAP_DELETE_ELEM,
            aligned_entry!(helpers::MAP_DELETE_ELEM),
        ),
        (helpers::KTIME_GET_NS, aligned_entry!(helpers::KTIME_GET_NS)),
        (helpers::TRACE_PRINTK, aligned_entry!(helpers::TRACE_PRINTK)),
        (
            helpers::GET_PRANDOM_U32,
            aligned_entry!(helpers::GET_PRANDOM_U32),
        ),
        (
            helpers::GET_SMP_PROCESSOR_ID,
            aligned_entry!(helpers::GET_SMP_PROCESSOR_ID),
        ),
        (helpers::CSUM_DIFF, aligned_entry!(helpers::CSUM_DIFF)),
        (
            helpers::XDP_ADJUST_HEAD,
            aligned_entry!(helpers::XDP_ADJUST_HEAD),
        ),
        (
            helpers::XDP_ADJUST_META,
            aligned_entry!(helpers::XDP_ADJUST_META),
        ),
        (
            helpers::XDP_ADJUST_TAIL,
            aligned_entry!(helpers::XDP_ADJUST_TAIL),
        ),
        (
            helpers::KTIME_GET_BOOT_NS,
            aligned_entry!(helpers::KTIME_GET_BOOT_NS),
        ),
        (
            helpers::RINGBUF_OUTPUT,
            aligned_entry!(helpers::RINGBUF_OUTPUT),
        ),
        (
            helpers::XDP_LOAD_BYTES,
            aligned_entry!(helpers::XDP_LOAD_BYTES),
        ),
        (
            helpers::XDP_STORE_BYTES,
            aligned_entry!(helpers::XDP_STORE_BYTES),
        ),
    ]
}

/// Bytes of machine code reserved per eBPF instruction (rbpf's longest expansion, a 64-bit
/// division with its zero check, is well under this).
const JIT_BYTES_PER_INSN: usize = 96;
const PAGE: usize = 4096;

/// Read-write-execute memory for rbpf to compile into.
struct ExecMemory {
    ptr: *mut u8,
    len: usize,
}

impl ExecMemory {
    fn new(insns: usize) -> Result<ExecMemory, VmError> {
        let len = (insns * JIT_BYTES_PER_INSN + PAGE).div_ceil(PAGE) * PAGE;
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VmError::Rbpf(format!(
                "cannot map {len} bytes of executable memory: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(ExecMemory {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for ExecMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A program compiled by rbpf's JIT, for one worker.
pub struct JitProgram {
    // Field order matters: `vm` borrows `code` and `memory` and must be dropped first.
    vm: rbpf::EbpfVmRaw<'static>,
    _memory: ExecMemory,
    _code: Arc<[u8]>,
}

impl JitProgram {
    pub fn compile(code: Arc<[u8]>) -> Result<JitProgram, VmError> {
        // SAFETY: the slice lives in `code`, which this struct keeps alive for as long as `vm`
        // (declared first, so dropped first).
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(code.as_ptr(), code.len()) };
        let rbpf_error = |e| VmError::Rbpf(rbpf_message(e));
        let memory = ExecMemory::new(code.len() / 8)?;
        // SAFETY: `memory` is kept alive as long as `vm` (see the field order).
        let exec: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(memory.ptr, memory.len) };
        let mut vm = rbpf::EbpfVmRaw::new(Some(bytes)).map_err(rbpf_error)?;
        vm.set_jit_exec_memory(exec).map_err(rbpf_error)?;
        for (id, helper) in trampolines() {
            vm.register_helper(id, helper).map_err(rbpf_error)?;
        }
        vm.jit_compile().map_err(rbpf_error)?;
        Ok(JitProgram {
            vm,
            _memory: memory,
            _code: code,
        })
    }

    /// Runs the compiled program with `r1` = the context in `state`.
    pub fn run(&self, state: &mut RunState<'_>) -> Result<u64, VmError> {
        let ctx = state.ctx_addr as *mut u8;
        // SAFETY: the context is a live `XdpMd` for the whole run; rbpf passes its address in
        // r1 and the JIT reads its 32-bit fields.
        let ctx =
            unsafe { std::slice::from_raw_parts_mut(ctx, std::mem::size_of::<super::XdpMd>()) };
        self.run_on(ctx, state)
    }

    /// Runs the compiled program with `r1` = `memory` (the conformance suite's convention).
    pub fn run_on(&self, memory: &mut [u8], state: &mut RunState<'_>) -> Result<u64, VmError> {
        let erased: *mut RunState<'static> = (state as *mut RunState<'_>).cast();
        CURRENT.with(|c| c.set(erased));
        FAULT.with(|f| f.set(None));
        // SAFETY: the code passed `prepare` (only instructions the JIT implements, frames laid
        // out) and its packet pointers point into a frame below 4 GiB. Memory accesses are not
        // checked by compiled code: the verifier is what makes them safe.
        let result = unsafe { self.vm.execute_program_jit(memory) };
        CURRENT.with(|c| c.set(std::ptr::null_mut()));
        if let Some((helper, what)) = FAULT.with(Cell::take) {
            return Err(VmError::BadHelperArgument {
                insn: 0,
                helper,
                what,
            });
        }
        result.map_err(|e| VmError::Rbpf(rbpf_message(e)))
    }
}

/// The message of an rbpf error: without `std`, rbpf's error type only implements `Debug`
/// (`Error { kind: Other, error: "…" }`).
fn rbpf_message(error: impl std::fmt::Debug) -> String {
    let debug = format!("{error:?}");
    debug
        .split_once("error: \"")
        .and_then(|(_, rest)| rest.rsplit_once('"'))
        .map_or(debug.clone(), |(message, _)| message.replace("\\\"", "\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_a_32_bit_move_re_aims_jumps_across_it() {
        let code = vec![
            Insn::new(op::CLASS_JMP | op::JMP_JA, 0, 0, 2, 0), // 0: → 3
            Insn::new(op::CLASS_ALU | op::SRC_X | op::ALU_MOV, 1, 2, 0, 0), // 1: mov32
            Insn::new(op::CLASS_ALU | op::SRC_K | op::ALU_END, 1, 0, 0, 16), // 2: le16
            Insn::new(op::CLASS_JMP | op::JMP_JA, 0, 0, -4, 0), // 3: → 0
            Insn::new(op::EXIT, 0, 0, 0, 0),
        ];
        let out = fix_zero_extension(&code).unwrap();
        assert_eq!(out.len(), 6);
        assert_eq!(
            out[0].off, 3,
            "jump over the expanded move lands on the old slot 3"
        );
        assert_eq!(out[1].opcode, op::CLASS_ALU64 | op::SRC_X | op::ALU_MOV);
        assert_eq!(out[2].opcode, op::CLASS_ALU | op::SRC_K | op::ALU_ADD);
        assert_eq!(
            (out[3].opcode, out[3].imm),
            (op::CLASS_ALU64 | op::ALU_AND, 0xffff)
        );
        assert_eq!(out[4].off, -5, "backward jump still reaches slot 0");
    }

    fn mov_fp(dst: u8) -> Insn {
        Insn::new(op::CLASS_ALU64 | op::SRC_X | op::ALU_MOV, dst, 10, 0, 0)
    }
    fn add_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(op::CLASS_ALU64 | op::SRC_K | op::ALU_ADD, dst, 0, 0, imm)
    }
    fn stdw(off: i16) -> Insn {
        Insn::new(op::CLASS_ST | op::SIZE_DW | op::MODE_MEM, 10, 0, off, 7)
    }
    fn call_local(imm: i32) -> Insn {
        Insn::new(op::CALL, 0, op::CALL_LOCAL, 0, imm)
    }
    fn exit() -> Insn {
        Insn::new(op::EXIT, 0, 0, 0, 0)
    }

    #[test]
    fn callee_frames_move_below_their_callers() {
        let code = vec![
            stdw(-16),     // 0: main uses 16 bytes
            call_local(1), // 1: → 3
            exit(),        // 2
            stdw(-8),      // 3: callee uses 8 bytes
            mov_fp(1),     // 4
            add_imm(1, -8),
            exit(),
        ];
        let out = layout_frames(&code).unwrap();
        assert_eq!(out[0].off, -16);
        assert_eq!(out[3].off, -24);
        assert_eq!(out[5].imm, -24);
    }

    #[test]
    fn chains_deeper_than_one_frame_and_odd_frame_pointer_uses_are_refused() {
        let big = vec![stdw(-400), call_local(1), exit(), stdw(-200), exit()];
        assert!(matches!(
            layout_frames(&big),
            Err(VmError::EngineCannot { insn: 0, .. })
        ));
        let odd = vec![call_local(1), exit(), mov_fp(1), exit()];
        assert!(matches!(
            layout_frames(&odd),
            Err(VmError::EngineCannot { insn: 2, .. })
        ));
        let atomic = [Insn::new(0xdb, 1, 2, 0, 0), exit()];
        assert!(matches!(
            check_jit_supported(&atomic),
            Err(VmError::EngineCannot { insn: 0, .. })
        ));
    }
}
