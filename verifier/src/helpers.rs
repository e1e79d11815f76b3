//! The helper functions the verifier knows: number, name, argument and return kinds, and which
//! program kinds and backends may call them. Numbers are the kernel UAPI's `BPF_FUNC_*`.

use crate::Backend;

/// What a helper argument must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Any initialised value that is not a pointer the helper could leak.
    Scalar,
    /// The program context (`r1` at entry).
    Ctx,
    /// A map pointer (`lddw` src = 1) whose type satisfies the check.
    Map(MapKind),
    /// Pointer to initialised memory of the previous map argument's key size.
    MapKey,
    /// Pointer to initialised memory of the previous map argument's value size.
    MapValue,
    /// Pointer to memory the helper fills, of the previous map argument's value size.
    MapValueOut,
    /// Pointer to initialised memory the helper reads, whose size is the next argument
    /// (the kernel's `ARG_PTR_TO_MEM | MEM_RDONLY`).
    Mem,
    /// Like [`Arg::Mem`], or NULL (a scalar 0) when the size is exactly 0
    /// (`ARG_PTR_TO_MEM | PTR_MAYBE_NULL | MEM_RDONLY`).
    MemOrNull,
    /// Pointer to memory the helper fills, whose size is the next argument; the bytes need not
    /// be initialised before and are after (`ARG_PTR_TO_UNINIT_MEM`).
    MemOut,
    /// Size of the previous memory argument, a bounded scalar of at least 1
    /// (`ARG_CONST_SIZE`).
    MemSize,
    /// Size of the previous memory argument, a bounded scalar that may be 0
    /// (`ARG_CONST_SIZE_OR_ZERO`).
    MemSizeOrZero,
}

impl Arg {
    /// Whether this argument is the size of a preceding memory argument.
    pub fn is_size(self) -> bool {
        matches!(self, Arg::MemSize | Arg::MemSizeOrZero)
    }
}

/// Which map types a map argument accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// Maps with values: hash, array, their per-CPU and LRU variants, LPM trie.
    Values,
    ProgArray,
    PerfEventArray,
    /// Devmap, cpumap, xskmap.
    Redirect,
    QueueStack,
    Ringbuf,
}

impl MapKind {
    pub fn accepts(self, map_type: u32) -> bool {
        use crate::map_type as t;
        match self {
            MapKind::Values => t::has_values(map_type),
            MapKind::ProgArray => map_type == t::PROG_ARRAY,
            MapKind::PerfEventArray => map_type == t::PERF_EVENT_ARRAY,
            MapKind::Redirect => t::is_redirect_target(map_type),
            MapKind::QueueStack => matches!(map_type, t::QUEUE | t::STACK),
            MapKind::Ringbuf => map_type == t::RINGBUF,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            MapKind::Values => "a hash, array or LPM map",
            MapKind::ProgArray => "a program array",
            MapKind::PerfEventArray => "a perf event array",
            MapKind::Redirect => "a devmap, cpumap or xskmap",
            MapKind::QueueStack => "a queue or stack map",
            MapKind::Ringbuf => "a ring buffer",
        }
    }
}

/// What a helper returns in `r0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    Scalar,
    /// Nothing: `r0` is uninitialised after the call (`RET_VOID`, `bpf_tail_call` when the
    /// program array slot is empty).
    Void,
    /// A pointer into the value of the first argument's map, or NULL.
    MapValueOrNull,
}

/// One helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Helper {
    pub id: i32,
    pub name: &'static str,
    pub args: &'static [Arg],
    pub ret: Ret,
    /// Callable from XDP programs.
    pub xdp: bool,
    /// Callable from raw-memory test programs (no context-bound helpers).
    pub raw: bool,
    /// Offloadable to the NFP (the offload's short list).
    pub nfp: bool,
    /// Executable by the userspace VM backend.
    pub vm: bool,
    /// Invalidates every packet pointer (the packet may move).
    pub changes_packet: bool,
}

impl Helper {
    pub fn allowed_on(&self, backend: Backend) -> bool {
        match backend {
            Backend::Kernel => true,
            Backend::Nfp => self.nfp,
            Backend::Vm => self.vm,
        }
    }
}

use Arg::*;

const fn h(
    id: i32,
    name: &'static str,
    args: &'static [Arg],
    ret: Ret,
    (xdp, raw, nfp, vm): (bool, bool, bool, bool),
    changes_packet: bool,
) -> Helper {
    Helper {
        id,
        name,
        args,
        ret,
        xdp,
        raw,
        nfp,
        vm,
        changes_packet,
    }
}

/// Every helper the verifier knows. Anything else is refused. Signatures follow the kernel's
/// `bpf_func_proto`s (include/linux/bpf.h argument types); the flags are
/// `(xdp, raw, nfp, vm)`: the `vm` column is exactly the VM's `SUPPORTED` list
/// (loader/src/vm/helpers.rs), the `nfp` column the offload's short list.
#[rustfmt::skip]
pub const HELPERS: &[Helper] = &[
    h(1, "bpf_map_lookup_elem", &[Map(MapKind::Values), MapKey], Ret::MapValueOrNull, (true, false, true, true), false),
    h(2, "bpf_map_update_elem", &[Map(MapKind::Values), MapKey, MapValue, Scalar], Ret::Scalar, (true, false, true, true), false),
    h(3, "bpf_map_delete_elem", &[Map(MapKind::Values), MapKey], Ret::Scalar, (true, false, true, true), false),
    h(5, "bpf_ktime_get_ns", &[], Ret::Scalar, (true, true, false, true), false),
    // The kernel checks only the format string; the values are printed, never dereferenced
    // (the kernel's `%s` reads through a fault-safe copy).
    h(6, "bpf_trace_printk", &[Mem, MemSize], Ret::Scalar, (true, false, false, true), false),
    h(7, "bpf_get_prandom_u32", &[], Ret::Scalar, (true, true, true, true), false),
    h(8, "bpf_get_smp_processor_id", &[], Ret::Scalar, (true, true, false, true), false),
    h(12, "bpf_tail_call", &[Ctx, Map(MapKind::ProgArray), Scalar], Ret::Void, (true, false, false, false), false),
    h(23, "bpf_redirect", &[Scalar, Scalar], Ret::Scalar, (true, false, false, false), false),
    h(25, "bpf_perf_event_output", &[Ctx, Map(MapKind::PerfEventArray), Scalar, Mem, MemSizeOrZero], Ret::Scalar, (true, false, true, false), false),
    h(28, "bpf_csum_diff", &[MemOrNull, MemSizeOrZero, MemOrNull, MemSizeOrZero, Scalar], Ret::Scalar, (true, true, false, true), false),
    h(42, "bpf_get_numa_node_id", &[], Ret::Scalar, (true, true, false, false), false),
    h(44, "bpf_xdp_adjust_head", &[Ctx, Scalar], Ret::Scalar, (true, false, true, true), true),
    h(51, "bpf_redirect_map", &[Map(MapKind::Redirect), Scalar, Scalar], Ret::Scalar, (true, false, false, false), false),
    h(54, "bpf_xdp_adjust_meta", &[Ctx, Scalar], Ret::Scalar, (true, false, false, true), true),
    h(65, "bpf_xdp_adjust_tail", &[Ctx, Scalar], Ret::Scalar, (true, false, true, true), true),
    h(87, "bpf_map_push_elem", &[Map(MapKind::QueueStack), MapValue, Scalar], Ret::Scalar, (true, false, false, false), false),
    h(88, "bpf_map_pop_elem", &[Map(MapKind::QueueStack), MapValueOut], Ret::Scalar, (true, false, false, false), false),
    h(89, "bpf_map_peek_elem", &[Map(MapKind::QueueStack), MapValueOut], Ret::Scalar, (true, false, false, false), false),
    h(125, "bpf_ktime_get_boot_ns", &[], Ret::Scalar, (true, true, false, true), false),
    h(130, "bpf_ringbuf_output", &[Map(MapKind::Ringbuf), Mem, MemSizeOrZero, Scalar], Ret::Scalar, (true, false, false, true), false),
    h(160, "bpf_ktime_get_coarse_ns", &[], Ret::Scalar, (true, true, false, false), false),
    h(188, "bpf_xdp_get_buff_len", &[Ctx], Ret::Scalar, (true, false, false, false), false),
    // The kernel does not clear the buffer when the copy fails; like the kernel we count it
    // initialised after the call (its bytes are the program's own stack, never kernel data).
    h(189, "bpf_xdp_load_bytes", &[Ctx, Scalar, MemOut, MemSize], Ret::Scalar, (true, false, false, true), false),
    h(190, "bpf_xdp_store_bytes", &[Ctx, Scalar, Mem, MemSize], Ret::Scalar, (true, false, false, true), false),
];

/// The helper with number `id`.
pub fn lookup(id: i32) -> Option<&'static Helper> {
    HELPERS.iter().find(|helper| helper.id == id)
}

/// The id of `bpf_tail_call`, which the NFP and VM profiles refuse by name.
pub const TAIL_CALL: i32 = 12;

/// Largest size a `MemSize` argument may have: helpers copy at most one stack frame or map
/// value, and a bound keeps the range arithmetic far from overflow.
pub const MAX_MEM_SIZE: u64 = 1 << 16;
