//! Abstract values and states.
//!
//! A register holds a [`Value`]: uninitialised, a scalar with unsigned and signed intervals, or a
//! pointer of a known kind with an offset interval. The stack of each frame records which bytes
//! are initialised and, for whole stores, the value stored (so a spilled pointer or a loop
//! counter kept on the stack keeps its abstract value). Packet accesses are allowed by facts
//! "data + v + k ≤ data_end" learnt from comparisons on the current path, where v is the
//! variable part of a packet pointer (identified by the instruction that added it).

use std::collections::HashSet;
use std::fmt;

/// Bytes in one stack frame (the kernel's MAX_BPF_STACK).
pub const STACK_SIZE: i64 = 512;

/// Largest constant or variable offset a packet pointer may carry: the kernel's MAX_PACKET_OFF.
/// Bounding it keeps every range computation far from overflow.
pub const MAX_PACKET_OFF: i64 = 0xffff;

/// Largest offset magnitude tracked on other pointers (the kernel refuses pointer arithmetic
/// beyond 2^29, BPF_MAX_VAR_OFF).
pub const MAX_POINTER_OFF: i64 = 1 << 29;

/// `var` of a packet pointer without a variable part.
pub const NO_VAR: u32 = 0;
/// `var` (or nullable `id`) of a value whose identity was lost in a join: no fact applies to it
/// except through its interval.
pub const ANON: u32 = u32::MAX;

/// An interval of signed offsets, `lo ≤ hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    pub lo: i64,
    pub hi: i64,
}

impl Interval {
    pub const fn exact(v: i64) -> Interval {
        Interval { lo: v, hi: v }
    }

    pub fn hull(self, other: Interval) -> Interval {
        Interval {
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
        }
    }

    pub fn plus(self, other: Interval) -> Interval {
        Interval {
            lo: self.lo.saturating_add(other.lo),
            hi: self.hi.saturating_add(other.hi),
        }
    }

    pub fn shift(self, k: i64) -> Interval {
        Interval {
            lo: self.lo.saturating_add(k),
            hi: self.hi.saturating_add(k),
        }
    }

    pub fn is_exact(self) -> bool {
        self.lo == self.hi
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_exact() {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "[{}, {}]", self.lo, self.hi)
        }
    }
}

/// A 64-bit scalar: the set of values within both an unsigned and a signed interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Scalar {
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
}

impl Scalar {
    pub const TOP: Scalar = Scalar {
        umin: 0,
        umax: u64::MAX,
        smin: i64::MIN,
        smax: i64::MAX,
    };

    pub fn exact(v: u64) -> Scalar {
        Scalar {
            umin: v,
            umax: v,
            smin: v as i64,
            smax: v as i64,
        }
    }

    /// Any value of `bits` bits, zero-extended.
    pub fn width(bits: u32) -> Scalar {
        Scalar::unsigned(0, mask(bits))
    }

    pub fn unsigned(umin: u64, umax: u64) -> Scalar {
        Scalar {
            umin,
            umax,
            smin: i64::MIN,
            smax: i64::MAX,
        }
        .sync()
        .unwrap_or(Scalar::TOP)
    }

    pub fn signed(smin: i64, smax: i64) -> Scalar {
        Scalar {
            umin: 0,
            umax: u64::MAX,
            smin,
            smax,
        }
        .sync()
        .unwrap_or(Scalar::TOP)
    }

    pub fn constant(self) -> Option<u64> {
        (self.umin == self.umax).then_some(self.umin)
    }

    /// Tightens each interval with the other; None when the set is empty.
    pub fn sync(mut self) -> Option<Scalar> {
        for _ in 0..2 {
            if self.umin > self.umax || self.smin > self.smax {
                return None;
            }
            // The signed interval does not cross zero: it is an unsigned interval too.
            if self.smin >= 0 || self.smax < 0 {
                self.umin = self.umin.max(self.smin as u64);
                self.umax = self.umax.min(self.smax as u64);
            }
            // The unsigned interval does not cross the sign bit: it is a signed interval too.
            if (self.umin as i64) <= (self.umax as i64) {
                self.smin = self.smin.max(self.umin as i64);
                self.smax = self.smax.min(self.umax as i64);
            }
        }
        (self.umin <= self.umax && self.smin <= self.smax).then_some(self)
    }

    pub fn hull(self, other: Scalar) -> Scalar {
        Scalar {
            umin: self.umin.min(other.umin),
            umax: self.umax.max(other.umax),
            smin: self.smin.min(other.smin),
            smax: self.smax.max(other.smax),
        }
    }

    /// Every value plus `delta`, when no value wraps (unsigned or signed); `None` otherwise.
    pub fn add_const(self, delta: i64) -> Option<Scalar> {
        Some(Scalar {
            umin: self.umin.checked_add_signed(delta)?,
            umax: self.umax.checked_add_signed(delta)?,
            smin: self.smin.checked_add(delta)?,
            smax: self.smax.checked_add(delta)?,
        })
    }

    pub fn meet(self, other: Scalar) -> Option<Scalar> {
        Scalar {
            umin: self.umin.max(other.umin),
            umax: self.umax.min(other.umax),
            smin: self.smin.max(other.smin),
            smax: self.smax.min(other.smax),
        }
        .sync()
    }

    /// The low `bits` bits, zero-extended.
    pub fn truncate(self, bits: u32) -> Scalar {
        if bits >= 64 || self.umax <= mask(bits) {
            self
        } else if let Some(c) = self.constant() {
            Scalar::exact(c & mask(bits))
        } else {
            Scalar::width(bits)
        }
    }

    /// The low `bits` bits, sign-extended to 64.
    pub fn sign_extend(self, bits: u32) -> Scalar {
        if let Some(c) = self.constant() {
            return Scalar::exact(sext(c, bits));
        }
        let half = 1i64 << (bits - 1);
        if self.umax < half as u64 {
            self
        } else {
            Scalar::signed(-half, half - 1)
        }
    }

    /// As an offset interval, if it fits `±MAX_POINTER_OFF`.
    pub fn as_offset(self) -> Option<Interval> {
        (self.smin >= -MAX_POINTER_OFF && self.smax <= MAX_POINTER_OFF).then_some(Interval {
            lo: self.smin,
            hi: self.smax,
        })
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.constant() {
            return write!(f, "{}", c as i64);
        }
        if *self == Scalar::TOP {
            return f.write_str("scalar");
        }
        if self.smin >= 0 || self.smax < 0 || self.smin == i64::MIN {
            write!(f, "scalar[{}, {}]", self.umin, self.umax)
        } else {
            write!(f, "scalar[{}, {}]", self.smin, self.smax)
        }
    }
}

pub fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

pub fn sext(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        let shift = 64 - bits;
        (((v << shift) as i64) >> shift) as u64
    }
}

/// An abstract register or stack value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Uninit,
    /// A packet pointer made stale by a helper that may move the packet (pc of the call).
    Invalidated {
        by: usize,
    },
    /// Different kinds on different paths.
    Mixed,
    Scalar(Scalar),
    /// The program context (`struct xdp_md`), offset 0: arithmetic on it is refused.
    Ctx,
    /// `data + v + k` where `v` is the variable part named `var` (within `var_range`).
    Packet {
        var: u32,
        var_range: Interval,
        k: i64,
    },
    PacketEnd,
    /// `data_meta + k`.
    PacketMeta {
        k: i64,
    },
    /// A pointer into the stack of frame `frame` (0 = main), relative to that frame's `r10`.
    Stack {
        frame: u8,
        off: Interval,
    },
    /// A pointer into the raw memory block of a [`crate::ProgramKind::RawMemory`] program.
    Mem {
        off: Interval,
    },
    MapValue {
        map: u32,
        off: Interval,
    },
    /// A map lookup's result before its NULL check; `id` ties copies together.
    MapValueOrNull {
        map: u32,
        off: Interval,
        id: u32,
    },
    MapPtr {
        map: u32,
    },
}

impl Value {
    pub const ZERO: Value = Value::Scalar(Scalar {
        umin: 0,
        umax: 0,
        smin: 0,
        smax: 0,
    });

    pub fn is_pointer(self) -> bool {
        !matches!(
            self,
            Value::Uninit | Value::Scalar(_) | Value::Invalidated { .. } | Value::Mixed
        )
    }

    pub fn is_packet_kind(self) -> bool {
        matches!(
            self,
            Value::Packet { .. } | Value::PacketEnd | Value::PacketMeta { .. }
        )
    }

    pub fn scalar(self) -> Option<Scalar> {
        match self {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the kind, for messages.
    pub fn kind_name(self) -> &'static str {
        match self {
            Value::Uninit => "uninitialised",
            Value::Invalidated { .. } => "an invalidated packet pointer",
            Value::Mixed => "a pointer on some paths and something else on others",
            Value::Scalar(_) => "a scalar",
            Value::Ctx => "the context pointer",
            Value::Packet { .. } => "a packet pointer",
            Value::PacketEnd => "the packet end pointer",
            Value::PacketMeta { .. } => "a packet metadata pointer",
            Value::Stack { .. } => "a stack pointer",
            Value::Mem { .. } => "a memory pointer",
            Value::MapValue { .. } => "a map value pointer",
            Value::MapValueOrNull { .. } => "a map value pointer or NULL",
            Value::MapPtr { .. } => "a map pointer",
        }
    }

    /// The least value both `self` and `other` are contained in.
    pub fn join(self, other: Value) -> Value {
        use Value::*;
        if self == other {
            return self;
        }
        match (self, other) {
            (Scalar(a), Scalar(b)) => Scalar(a.hull(b)),
            (Uninit, _) | (_, Uninit) => Uninit,
            (
                Packet {
                    var: v1,
                    var_range: r1,
                    k: k1,
                },
                Packet {
                    var: v2,
                    var_range: r2,
                    k: k2,
                },
            ) => {
                if v1 == v2 && k1 == k2 {
                    Packet {
                        var: v1,
                        var_range: r1.hull(r2),
                        k: k1,
                    }
                } else {
                    let whole = r1.shift(k1).hull(r2.shift(k2));
                    if whole.is_exact() {
                        Packet {
                            var: NO_VAR,
                            var_range: Interval::exact(0),
                            k: whole.lo,
                        }
                    } else {
                        Packet {
                            var: ANON,
                            var_range: whole,
                            k: 0,
                        }
                    }
                }
            }
            (Stack { frame: f1, off: o1 }, Stack { frame: f2, off: o2 }) if f1 == f2 => Stack {
                frame: f1,
                off: o1.hull(o2),
            },
            (Mem { off: o1 }, Mem { off: o2 }) => Mem { off: o1.hull(o2) },
            (MapValue { map: m1, off: o1 }, MapValue { map: m2, off: o2 }) if m1 == m2 => {
                MapValue {
                    map: m1,
                    off: o1.hull(o2),
                }
            }
            (
                MapValueOrNull {
                    map: m1,
                    off: o1,
                    id: i1,
                },
                MapValueOrNull {
                    map: m2,
                    off: o2,
                    id: i2,
                },
            ) if m1 == m2 => MapValueOrNull {
                map: m1,
                off: o1.hull(o2),
                id: if i1 == i2 { i1 } else { ANON },
            },
            (MapValueOrNull { map, off, .. }, MapValue { map: m2, off: o2 })
            | (MapValue { map: m2, off: o2 }, MapValueOrNull { map, off, .. })
                if map == m2 =>
            {
                MapValueOrNull {
                    map,
                    off: off.hull(o2),
                    id: ANON,
                }
            }
            (MapValue { map, off } | MapValueOrNull { map, off, .. }, Scalar(s))
            | (Scalar(s), MapValue { map, off } | MapValueOrNull { map, off, .. })
                if s.constant() == Some(0) =>
            {
                MapValueOrNull { map, off, id: ANON }
            }
            (Invalidated { by }, _) | (_, Invalidated { by }) => Invalidated { by },
            _ => Mixed,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Uninit => f.write_str("uninit"),
            Value::Invalidated { by } => write!(f, "invalidated(by {by})"),
            Value::Mixed => f.write_str("mixed"),
            Value::Scalar(s) => write!(f, "{s}"),
            Value::Ctx => f.write_str("ctx"),
            Value::Packet { var, var_range, k } => {
                if var == NO_VAR {
                    write!(f, "packet(off={k})")
                } else {
                    write!(f, "packet(off={k}+v{var}∈{var_range})")
                }
            }
            Value::PacketEnd => f.write_str("packet_end"),
            Value::PacketMeta { k } => write!(f, "packet_meta(off={k})"),
            Value::Stack { frame, off } => write!(f, "stack(frame={frame}, off={off})"),
            Value::Mem { off } => write!(f, "mem(off={off})"),
            Value::MapValue { map, off } => write!(f, "map_value(map={map}, off={off})"),
            Value::MapValueOrNull { map, off, id } => {
                write!(f, "map_value_or_null(map={map}, off={off}, id={id})")
            }
            Value::MapPtr { map } => write!(f, "map_ptr(map={map})"),
        }
    }
}

/// One stored value on the stack: `width` bytes at `off` (relative to the frame pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cell {
    pub off: i64,
    pub width: u8,
    pub value: Value,
}

/// The abstract stack of one frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stack {
    /// One bit per byte, byte `i` is `r10 - 512 + i`.
    init: [u64; 8],
    /// Values of whole stores, non-overlapping.
    pub cells: Vec<Cell>,
}

impl Stack {
    fn byte(off: i64) -> usize {
        (off + STACK_SIZE) as usize
    }

    /// Whether `[off, off + width)` lies inside the frame. Even an empty range must start
    /// inside it (the kernel refuses a zero-size helper buffer at `fp+0`).
    pub fn in_frame(off: i64, width: i64) -> bool {
        (-STACK_SIZE..0).contains(&off) && off + width <= 0
    }

    /// All bytes of the (in-frame) range initialised?
    pub fn is_init(&self, off: i64, width: i64) -> bool {
        (off..off + width).all(|o| {
            let b = Stack::byte(o);
            self.init[b / 64] & (1 << (b % 64)) != 0
        })
    }

    /// First uninitialised byte of the (in-frame) range.
    pub fn first_uninit(&self, off: i64, width: i64) -> Option<i64> {
        (off..off + width).find(|&o| {
            let b = Stack::byte(o);
            self.init[b / 64] & (1 << (b % 64)) == 0
        })
    }

    /// Cells overlapping `[off, off + width)`.
    pub fn overlapping(&self, off: i64, width: i64) -> impl Iterator<Item = &Cell> {
        self.cells
            .iter()
            .filter(move |c| c.off < off + width && off < c.off + i64::from(c.width))
    }

    /// The value stored exactly at `[off, off + width)`, if one is.
    pub fn cell(&self, off: i64, width: u8) -> Option<Value> {
        self.cells
            .iter()
            .find(|c| c.off == off && c.width == width)
            .map(|c| c.value)
    }

    /// Records a store of `value` (None: unknown bytes) to the in-frame `[off, off + width)`.
    pub fn store(&mut self, off: i64, width: u8, value: Option<Value>) {
        let w = i64::from(width);
        self.cells
            .retain(|c| !(c.off < off + w && off < c.off + i64::from(c.width)));
        for o in off..off + w {
            let b = Stack::byte(o);
            self.init[b / 64] |= 1 << (b % 64);
        }
        if let Some(value) = value {
            self.cells.push(Cell { off, width, value });
        }
    }

    /// Forgets the values of the range but keeps its bytes initialised.
    pub fn clobber(&mut self, off: i64, width: i64) {
        self.cells
            .retain(|c| !(c.off < off + width && off < c.off + i64::from(c.width)));
    }

    pub fn map_values(&mut self, f: impl Fn(Value) -> Value) {
        for cell in &mut self.cells {
            cell.value = f(cell.value);
        }
    }

    pub fn join_with(&self, other: &Stack, joiner: &mut Joiner<'_>) -> Stack {
        let mut init = [0; 8];
        for (i, word) in init.iter_mut().enumerate() {
            *word = self.init[i] & other.init[i];
        }
        let cells = self
            .cells
            .iter()
            .filter_map(|c| {
                let v = other.cell(c.off, c.width)?;
                Some(Cell {
                    value: joiner.value(c.value, v),
                    ..*c
                })
            })
            .collect();
        Stack { init, cells }
    }
}

/// A bpf-to-bpf call frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub stack: Stack,
    /// The caller's r6–r9, restored at `exit`.
    pub saved: [Value; 4],
    /// Where the caller continues.
    pub return_to: usize,
    /// Subprogram index.
    pub subprog: usize,
}

/// The abstract state at one program point on one set of paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub regs: [Value; 11],
    pub frames: Vec<Frame>,
    /// Facts `data + v + k ≤ data_end`: `(var, k)`, the largest proven `k` per variable part.
    pub pkt_valid: Vec<(u32, i64)>,
    /// Largest `k` with `data_meta + k ≤ data` proven.
    pub meta_valid: i64,
    /// Per register, an id shared by registers that hold the same scalar (a copy made by
    /// `mov`), 0 for none: a comparison that bounds one bounds its copies too, as compilers
    /// test a copy and use the original (the kernel links such registers the same way).
    pub links: [u32; 11],
    /// Per linked register, its constant distance (modulo 2^64) from the value its link id
    /// names: a copy moved once by a 64-bit add or subtract of a constant stays linked, as
    /// the kernel's linked registers do (`BPF_ADD_CONST`; a second move unlinks there, and
    /// here), so `r1 = r8 - 34; if r1 > 40` bounds r8 to 34..=74 too.
    pub link_offs: [i64; 11],
}

impl State {
    pub fn frame(&self) -> &Frame {
        // There is always at least the main frame.
        &self.frames[self.frames.len() - 1]
    }

    pub fn frame_mut(&mut self) -> &mut Frame {
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    pub fn proven(&self, var: u32) -> Option<i64> {
        self.pkt_valid
            .iter()
            .find(|(v, _)| *v == var)
            .map(|&(_, k)| k)
    }

    /// Records `data + var + k ≤ data_end`.
    pub fn prove(&mut self, var: u32, k: i64) {
        if var == ANON {
            return;
        }
        match self.pkt_valid.iter_mut().find(|(v, _)| *v == var) {
            Some(entry) => entry.1 = entry.1.max(k),
            None => self.pkt_valid.push((var, k)),
        }
    }

    /// Applies `f` to every value in registers, stacks and saved registers.
    pub fn map_values(&mut self, f: impl Fn(Value) -> Value) {
        for reg in &mut self.regs {
            *reg = f(*reg);
        }
        for frame in &mut self.frames {
            frame.stack.map_values(&f);
            for reg in &mut frame.saved {
                *reg = f(*reg);
            }
        }
    }

    /// Makes `reg` hold a copy of `src`'s scalar (id `fresh` if `src` has none yet).
    pub fn link(&mut self, reg: usize, src: usize, fresh: u32) {
        let id = match self.links[src] {
            0 => {
                for (l, off) in self.links.iter_mut().zip(&mut self.link_offs) {
                    if *l == fresh {
                        *l = 0;
                        *off = 0;
                    }
                }
                self.links[src] = fresh;
                self.link_offs[src] = 0;
                fresh
            }
            id => id,
        };
        self.links[reg] = id;
        self.link_offs[reg] = self.link_offs[src];
    }

    /// Narrows the scalar in `reg` and every register linked to it to `s` (shifted by their
    /// distance from `reg`).
    pub fn narrow(&mut self, reg: usize, s: Scalar) {
        self.regs[reg] = Value::Scalar(s);
        let id = self.links[reg];
        if id == 0 {
            return;
        }
        for i in 0..self.regs.len() {
            if i != reg
                && self.links[i] == id
                && let Value::Scalar(other) = self.regs[i]
                && let Some(shifted) = self.link_offs[i]
                    .checked_sub(self.link_offs[reg])
                    .and_then(|delta| s.add_const(delta))
            {
                // Linked registers hold the same value up to their distance, so `other`
                // contains the shifted bound too: the meet is never empty on a feasible path;
                // keep `other` if it were.
                self.regs[i] = Value::Scalar(other.meet(shifted).unwrap_or(other));
            }
        }
    }

    /// Every variable id (packet variable parts, nullable map values, proven facts) in use.
    fn ids(&self, out: &mut HashSet<u32>) {
        let mut add = |v: Value| match v {
            Value::Packet { var, .. } => {
                out.insert(var);
            }
            Value::MapValueOrNull { id, .. } => {
                out.insert(id);
            }
            _ => {}
        };
        for &reg in &self.regs {
            add(reg);
        }
        for frame in &self.frames {
            for cell in &frame.stack.cells {
                add(cell.value);
            }
            for &reg in &frame.saved {
                add(reg);
            }
        }
        for &(v, _) in &self.pkt_valid {
            out.insert(v);
        }
    }

    /// The least state containing both, such that values that are equal on both sides stay
    /// related (see [`Joiner`]).
    pub fn join(&self, other: &State) -> State {
        let mut j = Joiner::new(self, other);
        let mut regs = self.regs;
        for (i, reg) in regs.iter_mut().enumerate() {
            *reg = j.value(*reg, other.regs[i]);
        }
        let frames = self
            .frames
            .iter()
            .zip(&other.frames)
            .map(|(a, b)| {
                let mut saved = a.saved;
                for (i, reg) in saved.iter_mut().enumerate() {
                    *reg = j.value(*reg, b.saved[i]);
                }
                Frame {
                    stack: a.stack.join_with(&b.stack, &mut j),
                    saved,
                    return_to: a.return_to,
                    subprog: a.subprog,
                }
            })
            .collect();
        let mut pkt_valid: Vec<(u32, i64)> = self
            .pkt_valid
            .iter()
            .filter_map(|&(v, k)| other.proven(v).map(|k2| (v, k.min(k2))))
            .collect();
        pkt_valid.extend(j.facts());
        let mut links = [0; 11];
        let mut link_offs = [0; 11];
        for i in 0..11 {
            if self.links[i] == other.links[i] && self.link_offs[i] == other.link_offs[i] {
                links[i] = self.links[i];
                link_offs[i] = self.link_offs[i];
            }
        }
        State {
            regs,
            frames,
            pkt_valid,
            meta_valid: self.meta_valid.min(other.meta_valid),
            links,
            link_offs,
        }
    }
}

/// First id of packet variables made by joins; ids below are `pc + 1` of the instruction that
/// made the value, and programs are far smaller than 2^31 instructions.
pub const JOIN_ID_BASE: u32 = 1 << 31;

/// Joins two states value by value. Two packet pointers that differ (in variable part or in
/// constant offset) become one pointer with a new variable part `w` — "data + w" where `w` is
/// the whole offset on either side — instead of an anonymous one, so bounds checks made after
/// the join still prove accesses through it, and every pair of sides gets the same `w`, so
/// copies stay copies. A fact proven on both sides for the old variables carries over to `w`.
pub struct Joiner<'a> {
    a: &'a State,
    b: &'a State,
    used: HashSet<u32>,
    /// (var and k on side a, var and k on side b) → the new variable.
    made: Vec<((u32, i64, u32, i64), u32)>,
}

impl<'a> Joiner<'a> {
    fn new(a: &'a State, b: &'a State) -> Joiner<'a> {
        let mut used = HashSet::new();
        a.ids(&mut used);
        b.ids(&mut used);
        Joiner {
            a,
            b,
            used,
            made: Vec::new(),
        }
    }

    fn value(&mut self, x: Value, y: Value) -> Value {
        match (x, y) {
            (
                Value::Packet {
                    var: v1,
                    var_range: r1,
                    k: k1,
                },
                Value::Packet {
                    var: v2,
                    var_range: r2,
                    k: k2,
                },
            ) if (v1 != v2 || k1 != k2) && v1 != ANON && v2 != ANON => {
                let whole_of = |v: u32, r: Interval, k: i64| {
                    if v == NO_VAR {
                        Interval::exact(k)
                    } else {
                        r.shift(k)
                    }
                };
                let whole = whole_of(v1, r1, k1).hull(whole_of(v2, r2, k2));
                if whole.is_exact() && v1 == NO_VAR && v2 == NO_VAR {
                    return Value::Packet {
                        var: NO_VAR,
                        var_range: Interval::exact(0),
                        k: whole.lo,
                    };
                }
                let key = (v1, k1, v2, k2);
                let id = match self.made.iter().find(|(k, _)| *k == key) {
                    Some(&(_, id)) => id,
                    None => {
                        let id = self.fresh(key);
                        self.made.push((key, id));
                        id
                    }
                };
                Value::Packet {
                    var: id,
                    var_range: whole,
                    k: 0,
                }
            }
            _ => x.join(y),
        }
    }

    /// A deterministic id for `key` (so that joining the same states twice gives equal
    /// states) that neither side uses.
    fn fresh(&mut self, key: (u32, i64, u32, i64)) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for word in [
            u64::from(key.0),
            key.1 as u64,
            u64::from(key.2),
            key.3 as u64,
        ] {
            h = (h ^ word).wrapping_mul(0x0100_0000_01b3);
        }
        let span = u64::from(ANON - JOIN_ID_BASE);
        let mut id = JOIN_ID_BASE + (h % span) as u32;
        while self.used.contains(&id) || id == ANON {
            // `id < ANON`, so `id + 1` does not overflow.
            id = if id + 1 == ANON { JOIN_ID_BASE } else { id + 1 };
        }
        self.used.insert(id);
        id
    }

    /// `data + w + p ≤ data_end` for each new `w`, when both sides proved it for their
    /// variable: `w = v + k` on each side, so `p` is the side's proof less its `k`.
    fn facts(&self) -> Vec<(u32, i64)> {
        self.made
            .iter()
            .filter_map(|&((v1, k1, v2, k2), id)| {
                let p1 = self.a.proven(v1)?.checked_sub(k1)?;
                let p2 = self.b.proven(v2)?.checked_sub(k2)?;
                Some((id, p1.min(p2)))
            })
            .collect()
    }
}

/// ALU operations on scalars (the opcode's operation nibble).
pub fn alu(operation: u8, a: Scalar, b: Scalar, alu64: bool, signed: bool) -> Scalar {
    use ebpf_isa::opcode as op;
    let bits: u32 = if alu64 { 64 } else { 32 };
    let (a, b) = if alu64 {
        (a, b)
    } else {
        (a.truncate(32), b.truncate(32))
    };
    if let (Some(x), Some(y)) = (a.constant(), b.constant()) {
        return Scalar::exact(concrete(operation, x, y, alu64, signed));
    }
    let shift_mask = u64::from(bits - 1);
    let result = match operation {
        op::ALU_ADD => {
            let u = match (a.umin.checked_add(b.umin), a.umax.checked_add(b.umax)) {
                (Some(lo), Some(hi)) => Scalar::unsigned(lo, hi),
                _ => Scalar::TOP,
            };
            let s = match (a.smin.checked_add(b.smin), a.smax.checked_add(b.smax)) {
                (Some(lo), Some(hi)) => Scalar::signed(lo, hi),
                _ => Scalar::TOP,
            };
            u.meet(s).unwrap_or(Scalar::TOP)
        }
        op::ALU_SUB => {
            let u = if a.umin >= b.umax {
                Scalar::unsigned(a.umin - b.umax, a.umax - b.umin)
            } else {
                Scalar::TOP
            };
            let s = match (a.smin.checked_sub(b.smax), a.smax.checked_sub(b.smin)) {
                (Some(lo), Some(hi)) => Scalar::signed(lo, hi),
                _ => Scalar::TOP,
            };
            u.meet(s).unwrap_or(Scalar::TOP)
        }
        op::ALU_MUL => match a.umax.checked_mul(b.umax) {
            Some(hi) => Scalar::unsigned(a.umin * b.umin, hi),
            None => Scalar::TOP,
        },
        op::ALU_DIV if !signed => match b.constant() {
            Some(c) if c > 0 => Scalar::unsigned(a.umin / c, a.umax / c),
            // Division by zero yields 0 in eBPF.
            _ => Scalar::unsigned(0, a.umax),
        },
        op::ALU_MOD if !signed => match b.constant() {
            Some(c) if c > 0 && a.umax < c => a,
            Some(c) if c > 0 => Scalar::unsigned(0, c - 1),
            // Modulo by zero leaves the dividend.
            _ => Scalar::unsigned(0, a.umax),
        },
        op::ALU_AND => Scalar::unsigned(0, a.umax.min(b.umax)),
        op::ALU_OR | op::ALU_XOR => {
            let top = a.umax.max(b.umax);
            let ones = mask(64 - top.leading_zeros());
            let lo = if operation == op::ALU_OR {
                a.umin.max(b.umin)
            } else {
                0
            };
            Scalar::unsigned(lo, ones)
        }
        op::ALU_LSH => match b.constant() {
            Some(s) => {
                let s = (s & shift_mask) as u32;
                if a.umax.leading_zeros() >= s {
                    Scalar::unsigned(a.umin << s, a.umax << s)
                } else {
                    Scalar::TOP
                }
            }
            None => Scalar::TOP,
        },
        op::ALU_RSH => match b.constant() {
            Some(s) => {
                let s = (s & shift_mask) as u32;
                Scalar::unsigned(a.umin >> s, a.umax >> s)
            }
            None => Scalar::unsigned(0, a.umax),
        },
        op::ALU_ARSH if alu64 => match b.constant() {
            Some(s) => {
                let s = (s & shift_mask) as u32;
                Scalar::signed(a.smin >> s, a.smax >> s)
            }
            None => Scalar::signed(a.smin.min(0), a.smax.max(0)),
        },
        op::ALU_NEG if alu64 && a.smin != i64::MIN => Scalar::signed(-a.smax, -a.smin),
        op::ALU_MOV => b,
        _ => Scalar::TOP,
    };
    if alu64 { result } else { result.truncate(32) }
}

/// Exact eBPF semantics of an ALU operation on constants (the ISA's, shared with the VM's
/// interpreter through `ebpf_isa::semantics`). An operation that is not one gives 0; the
/// well-formedness stage has refused such instructions already.
pub fn concrete(operation: u8, x: u64, y: u64, alu64: bool, signed: bool) -> u64 {
    use ebpf_isa::opcode as op;
    let class = if alu64 {
        op::CLASS_ALU64
    } else {
        op::CLASS_ALU
    };
    let off = i16::from(signed && matches!(operation, op::ALU_DIV | op::ALU_MOD));
    let insn = ebpf_isa::Insn::new(class | op::SRC_X | operation, 0, 0, off, 0);
    ebpf_isa::semantics::alu(insn, x, y, alu64).unwrap_or(0)
}

/// Refines `a` and `b` assuming `a <op> b` holds (`op` a jump operation, 64-bit); None when it
/// cannot hold.
pub fn refine(operation: u8, a: Scalar, b: Scalar) -> Option<(Scalar, Scalar)> {
    use ebpf_isa::opcode as op;
    let at_least = |s: Scalar, lo: u64| s.meet(Scalar::unsigned(lo, u64::MAX));
    let at_most = |s: Scalar, hi: u64| s.meet(Scalar::unsigned(0, hi));
    let s_at_least = |s: Scalar, lo: i64| s.meet(Scalar::signed(lo, i64::MAX));
    let s_at_most = |s: Scalar, hi: i64| s.meet(Scalar::signed(i64::MIN, hi));
    match operation {
        op::JMP_JEQ => {
            let m = a.meet(b)?;
            Some((m, m))
        }
        op::JMP_JNE => {
            let drop = |s: Scalar, c: Option<u64>| -> Option<Scalar> {
                match c {
                    Some(c) if s.constant() == Some(c) => None,
                    Some(c) if s.umin == c => s.meet(Scalar::unsigned(c + 1, u64::MAX)),
                    Some(c) if s.umax == c => s.meet(Scalar::unsigned(0, c - 1)),
                    _ => Some(s),
                }
            };
            Some((drop(a, b.constant())?, drop(b, a.constant())?))
        }
        op::JMP_JGT => {
            if a.umax == 0 || b.umin == u64::MAX {
                return None;
            }
            Some((at_least(a, b.umin + 1)?, at_most(b, a.umax - 1)?))
        }
        op::JMP_JGE => Some((at_least(a, b.umin)?, at_most(b, a.umax)?)),
        op::JMP_JLT => refine(op::JMP_JGT, b, a).map(|(b, a)| (a, b)),
        op::JMP_JLE => refine(op::JMP_JGE, b, a).map(|(b, a)| (a, b)),
        op::JMP_JSGT => {
            if a.smax == i64::MIN || b.smin == i64::MAX {
                return None;
            }
            Some((s_at_least(a, b.smin + 1)?, s_at_most(b, a.smax - 1)?))
        }
        op::JMP_JSGE => Some((s_at_least(a, b.smin)?, s_at_most(b, a.smax)?)),
        op::JMP_JSLT => refine(op::JMP_JSGT, b, a).map(|(b, a)| (a, b)),
        op::JMP_JSLE => refine(op::JMP_JSGE, b, a).map(|(b, a)| (a, b)),
        op::JMP_JSET => match (a.constant(), b.constant()) {
            (Some(x), Some(y)) => (x & y != 0).then_some((a, b)),
            _ if a.umax == 0 || b.umax == 0 => None,
            _ => Some((a, b)),
        },
        _ => Some((a, b)),
    }
}

/// The jump operation that holds when `operation` does not (the fall-through branch).
pub fn negate(operation: u8) -> Option<u8> {
    use ebpf_isa::opcode as op;
    Some(match operation {
        op::JMP_JEQ => op::JMP_JNE,
        op::JMP_JNE => op::JMP_JEQ,
        op::JMP_JGT => op::JMP_JLE,
        op::JMP_JLE => op::JMP_JGT,
        op::JMP_JGE => op::JMP_JLT,
        op::JMP_JLT => op::JMP_JGE,
        op::JMP_JSGT => op::JMP_JSLE,
        op::JMP_JSLE => op::JMP_JSGT,
        op::JMP_JSGE => op::JMP_JSLT,
        op::JMP_JSLT => op::JMP_JSGE,
        // "No bit in common" has no interval form: the fall-through learns nothing.
        _ => return None,
    })
}
