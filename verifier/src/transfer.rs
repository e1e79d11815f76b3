//! Abstract interpretation: every reachable (instruction, call context, loop iteration counts)
//! node is analysed once, with the join of the states of all its predecessors, in an order in
//! which predecessors come first (see [`crate::bound`] for why loops are unrolled and how the
//! bound on executed instructions falls out of it).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ebpf_isa::{Insn, opcode as op};

use crate::assertions::{self, Assertion, Operand};
use crate::bound::{self, MAX_ANALYSIS_STEPS, MAX_LOOP_ITERATIONS};
use crate::cfg::Cfg;
use crate::checks::{self, HelperCall, Target, xdp_md};
use crate::domain::{self, ANON, Frame, Interval, NO_VAR, Scalar, Stack, State, Value};
use crate::error::{ErrorKind, Located};
use crate::helpers;
use crate::{ProgramInput, ProgramKind};

/// What the analysis learnt about one instruction over all its visits, for the profiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InsnFacts {
    pub visited: bool,
    /// A store or atomic update went into a map value.
    pub map_value_store: bool,
    /// A 64-bit multiply had an operand that may not fit 32 bits.
    pub wide_mul: bool,
    /// A division or modulo by a register whose value was not a known constant.
    pub variable_divisor: bool,
    /// A packet access in bounds only by the bounds of its variable offset (see
    /// [`checks::packet_by_bounds`]): safe, but the kernel refuses it.
    pub packet_by_bounds: bool,
}

/// The result of a successful analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    /// Sound upper bound on instructions executed by any run.
    pub max_insns: u64,
    /// Deepest stack access per subprogram, in bytes below its frame pointer.
    pub stack_depth: Vec<i64>,
    pub helpers_used: BTreeSet<i32>,
    pub maps_used: BTreeSet<u32>,
    pub facts: Vec<InsnFacts>,
    /// Abstract instruction steps taken.
    pub steps: u64,
    /// Conditional jumps analysed with both directions feasible: each is a state the kernel's
    /// depth-first verifier pushes for later, and it gives up past
    /// `profile::KERNEL_JMP_SEQ_LIMIT` of them.
    pub two_way_branches: u64,
    /// The same branches by the outermost call site they were reached through (`None`: in the
    /// main program itself), for programs whose called functions the kernel verifies one by
    /// one (BTF global functions, see `Options::global_functions`).
    pub two_way_branches_by_root: BTreeMap<Option<usize>, u64>,
}

/// Where a node sits beyond its instruction: the call sites it was called from (with their
/// loop counts) and the iteration counts of the loops around it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Context {
    calls: Vec<(usize, Vec<u32>)>,
    counts: Vec<u32>,
}

/// A node's place in the analysis order: for each call site and then the node itself, the
/// positions of the enclosing loop heads with their counts, then the instruction's position
/// (see [`Analyzer::key`]). Compared as a sequence; held inline up to [`Key::INLINE`] words,
/// so loop-free code without calls never allocates one.
#[derive(Clone, Debug)]
enum Key {
    Inline { len: u8, words: [u32; Key::INLINE] },
    Heap(Vec<u32>),
}

impl Key {
    const INLINE: usize = 7;

    fn new() -> Key {
        Key::Inline {
            len: 0,
            words: [0; Key::INLINE],
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Key::Inline { len, words } => &words[..usize::from(*len)],
            Key::Heap(v) => v,
        }
    }

    fn push(&mut self, word: u32) {
        match self {
            Key::Inline { len, words } if usize::from(*len) < Key::INLINE => {
                words[usize::from(*len)] = word;
                *len += 1;
            }
            Key::Inline { words, .. } => {
                let mut v = words.to_vec();
                v.push(word);
                *self = Key::Heap(v);
            }
            Key::Heap(v) => v.push(word),
        }
    }
}

impl FromIterator<u32> for Key {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Key {
        let mut key = Key::new();
        for word in iter {
            key.push(word);
        }
        key
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

struct Node {
    pc: usize,
    ctx: Context,
    /// The states of the paths reaching the node, kept apart while they differ in the kinds of
    /// their live values (see [`MAX_DISJUNCTS`]).
    states: Vec<State>,
    /// Longest path, in executed instructions, from the program entry to this node.
    dist: u64,
}

enum Edge {
    Intra(usize),
    Call(usize),
    Return,
}

/// What an instruction's proven assertions found: the memory it accesses and, for a helper
/// call, the helper and what its arguments resolved to.
type Checked = (
    Option<Target>,
    Option<(&'static helpers::Helper, HelperCall)>,
);

/// Where a state goes after its instruction, which [`Analyzer::step`] applied to it in place.
enum Flow {
    /// On along this edge.
    One(Edge),
    /// A conditional jump: the taken branch, when feasible, with its own copy of the state (in
    /// a vector of one, which becomes the successor node's list of states), and the edge of
    /// the fall-through, when feasible, which goes on with the state itself.
    Branch {
        taken: Option<(Edge, Vec<State>)>,
        fall: Option<Edge>,
    },
}

/// States kept apart per node. Joining a state where a register holds a map value with one
/// where it holds a scalar (a dangling slice pointer of an empty body, say) loses both; the
/// kernel explores such paths separately, and so do we, up to this many per node: beyond it,
/// the newest state is joined into the last kept one (always sound, only less precise).
pub const MAX_DISJUNCTS: usize = 8;

struct Analyzer<'a> {
    input: &'a ProgramInput,
    cfg: &'a Cfg,
    /// Registers live before each instruction: only their kinds keep states apart.
    live: Vec<u16>,
    /// Whether the program may go to the kernel (XDP): then the analysis is never more
    /// precise than the kernel's own where precision decides which paths exist (see
    /// [`Analyzer::kernel_like`] uses), so that what the `kernel` profile accepts, the kernel
    /// accepts too.
    kernel_like: bool,
    /// The assertions of the instruction being checked (derived again at each visit: that
    /// costs less than keeping them for every instruction, and this buffer is reused).
    assertions: Vec<Assertion>,
    /// The nodes waiting to be analysed, smallest key first. `next`, when set, is the smallest
    /// of all: the one successor of the node just analysed, when it comes next anyway. Keeping
    /// it out of the map saves an insertion and a removal per instruction on straight-line
    /// code; together they are one ordered set.
    work: BTreeMap<Key, Node>,
    next: Option<(Key, Node)>,
    /// Per loop context (key without the head's count), the last head states and their count.
    heads: HashMap<Key, (u32, Vec<State>)>,
    /// The outermost call site of the node being stepped (`None` in the main program).
    root: Option<usize>,
    out: Analysis,
}

/// Runs the abstract interpretation of a well-formed program.
pub fn analyse(input: &ProgramInput, cfg: &Cfg) -> Result<Analysis, Located> {
    let mut a = Analyzer {
        input,
        cfg,
        live: cfg.live_registers(&input.insns),
        kernel_like: matches!(input.kind, ProgramKind::Xdp),
        assertions: Vec::new(),
        work: BTreeMap::new(),
        next: None,
        heads: HashMap::new(),
        root: None,
        out: Analysis {
            max_insns: 0,
            stack_depth: vec![0; cfg.subprogs.len()],
            helpers_used: BTreeSet::new(),
            maps_used: BTreeSet::new(),
            facts: vec![InsnFacts::default(); cfg.len],
            steps: 0,
            two_way_branches: 0,
            two_way_branches_by_root: BTreeMap::new(),
        },
    };
    let mut regs = [Value::Uninit; 11];
    match input.kind {
        ProgramKind::Xdp => regs[1] = Value::Ctx,
        ProgramKind::RawMemory { size } => {
            regs[1] = Value::Mem {
                off: Interval::exact(0),
            };
            regs[2] = Value::Scalar(Scalar::exact(u64::from(size)));
        }
    }
    regs[10] = Value::Stack {
        frame: 0,
        off: Interval::exact(0),
    };
    let state = State {
        regs,
        frames: vec![Frame {
            stack: Stack::default(),
            saved: [Value::Uninit; 4],
            return_to: 0,
            subprog: 0,
        }],
        pkt_valid: Vec::new(),
        meta_valid: 0,
        links: [0; 11],
        link_offs: [0; 11],
    };
    let ctx = Context {
        calls: Vec::new(),
        counts: vec![0; cfg.loops_at[0].len()],
    };
    a.push(0, ctx, vec![state], 0);
    a.run()?;
    Ok(a.out)
}

impl Analyzer<'_> {
    fn key(&self, pc: usize, ctx: &Context) -> Key {
        let mut key = Key::new();
        let mut part = |pc: usize, counts: &[u32]| {
            for (head, count) in self.cfg.loops_at[pc].iter().zip(counts) {
                key.push(self.cfg.pos[*head]);
                key.push(*count);
            }
            key.push(self.cfg.pos[pc]);
        };
        for (call, counts) in &ctx.calls {
            part(*call, counts);
        }
        part(pc, &ctx.counts);
        key
    }

    /// Adds the states (one, in practice) reaching `pc` in `ctx` on a path of `dist`
    /// instructions; the vector becomes the list of states of the node when it is new.
    fn push(&mut self, pc: usize, ctx: Context, states: Vec<State>, dist: u64) {
        let key = self.key(pc, &ctx);
        let live = self.live.get(pc).copied().unwrap_or(u16::MAX);
        // Whether the key comes before every waiting node's (then no node has it yet).
        let smallest = match (&self.next, self.work.first_key_value()) {
            (Some((next_key, _)), _) => key < *next_key,
            (None, Some((first, _))) => key < *first,
            (None, None) => true,
        };
        let existing = match self.next.as_mut() {
            _ if smallest => None,
            Some((next_key, node)) if *next_key == key => Some(node),
            _ => self.work.get_mut(&key),
        };
        if let Some(node) = existing {
            for state in states {
                merge(node, state, dist, live);
            }
            return;
        }
        let node = Node {
            pc,
            ctx,
            states,
            dist,
        };
        // The new node is the smallest of all: it becomes `next` (the old `next`, larger,
        // goes back to the map). Otherwise it waits in the map.
        if smallest {
            if let Some((k, n)) = self.next.replace((key, node)) {
                self.work.insert(k, n);
            }
        } else {
            self.work.insert(key, node);
        }
    }

    fn run(&mut self) -> Result<(), Located> {
        while let Some((key, mut node)) = self.next.take().or_else(|| self.work.pop_first()) {
            self.out.steps += 1;
            if self.out.steps > MAX_ANALYSIS_STEPS {
                // Blame the innermost loop being unrolled, if any: that is where time went.
                let kind = match (self.cfg.loops_at[node.pc].last(), node.ctx.counts.last()) {
                    (Some(&head), Some(&count)) => ErrorKind::UnboundedLoop {
                        head,
                        iterations: u64::from(count),
                    },
                    _ => ErrorKind::TooComplex {
                        steps: self.out.steps,
                        limit: MAX_ANALYSIS_STEPS,
                    },
                };
                let head = match kind {
                    ErrorKind::UnboundedLoop { head, .. } => head,
                    _ => node.pc,
                };
                return Err(Located::new(kind, head));
            }
            self.check_repeat(&key, &node)?;
            let pc = node.pc;
            let insn = self.input.insns[pc];
            self.out.facts[pc].visited = true;
            self.root = node.ctx.calls.first().map(|&(site, _)| site);
            // The node's states are stepped in place, in order: nothing else needs them
            // afterwards. Each travels on in a vector of one that becomes the list of states of
            // the successor node when that node is new; the last one in the node's own vector.
            let mut states = std::mem::take(&mut node.states);
            states.reverse();
            while !states.is_empty() {
                let mut carrier = if states.len() == 1 {
                    std::mem::take(&mut states)
                } else {
                    states.split_off(states.len() - 1)
                };
                let state = &mut carrier[0];
                // `update_links` needs the source and destination registers as they were
                // before the step.
                let src_before = state.regs.get(usize::from(insn.src)).copied();
                let dst_before = state.regs.get(usize::from(insn.dst)).copied();
                let flow = match self.step(pc, state) {
                    Ok(flow) => flow,
                    // A refused instruction leaves the state as it was.
                    Err(kind) => {
                        return Err(Located {
                            kind,
                            insn: pc,
                            registers: registers(insn, state),
                        });
                    }
                };
                match flow {
                    Flow::One(edge) => {
                        update_links(pc, insn, (src_before, dst_before), &mut carrier[0]);
                        self.follow(&node, edge, carrier)?;
                    }
                    Flow::Branch { taken, fall } => {
                        if let Some((edge, mut taken)) = taken {
                            update_links(pc, insn, (src_before, dst_before), &mut taken[0]);
                            self.follow(&node, edge, taken)?;
                        }
                        if let Some(edge) = fall {
                            update_links(pc, insn, (src_before, dst_before), &mut carrier[0]);
                            self.follow(&node, edge, carrier)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A loop head whose state equals the previous iteration's never terminates in the
    /// abstraction: refuse it now instead of unrolling to the cap.
    fn check_repeat(&mut self, key: &Key, node: &Node) -> Result<(), Located> {
        let pc = node.pc;
        if self.cfg.loops_at[pc].last() != Some(&pc) {
            return Ok(());
        }
        let count = node.ctx.counts.last().copied().unwrap_or(0);
        // The key ends with [pos(head), count, pos(head)]: drop the count.
        let key = key.as_slice();
        let drop_at = key.len().checked_sub(2);
        let loop_key: Key = key
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != drop_at)
            .map(|(_, &word)| word)
            .collect();
        if let Some((prev, state)) = self.heads.get(&loop_key)
            && *prev + 1 == count
            && *state == node.states
        {
            return Err(Located {
                kind: ErrorKind::UnboundedLoop {
                    head: pc,
                    iterations: u64::from(count),
                },
                insn: pc,
                registers: String::from("the state at the loop head repeats"),
            });
        }
        self.heads.insert(loop_key, (count, node.states.clone()));
        Ok(())
    }

    /// Takes `edge` from `node` with `state`, a vector of one state.
    fn follow(&mut self, node: &Node, edge: Edge, state: Vec<State>) -> Result<(), Located> {
        let dist = node.dist + 1;
        let unbounded = |head: usize| {
            Located::new(
                ErrorKind::UnboundedLoop {
                    head,
                    iterations: u64::from(MAX_LOOP_ITERATIONS),
                },
                head,
            )
        };
        match edge {
            Edge::Intra(to) => {
                let counts = bound::next_counts(self.cfg, node.pc, to, &node.ctx.counts)
                    .map_err(unbounded)?;
                let ctx = Context {
                    calls: node.ctx.calls.clone(),
                    counts,
                };
                self.push(to, ctx, state, dist);
            }
            Edge::Call(target) => {
                let mut calls = node.ctx.calls.clone();
                calls.push((node.pc, node.ctx.counts.clone()));
                let ctx = Context {
                    calls,
                    counts: vec![0; self.cfg.loops_at[target].len()],
                };
                self.push(target, ctx, state, dist);
            }
            Edge::Return => {
                let mut calls = node.ctx.calls.clone();
                let Some((call, counts)) = calls.pop() else {
                    // Exit of the main program.
                    self.out.max_insns = self.out.max_insns.max(dist);
                    return Ok(());
                };
                let to = call + 1;
                let counts = bound::next_counts(self.cfg, call, to, &counts).map_err(unbounded)?;
                self.push(to, Context { calls, counts }, state, dist);
            }
        }
        Ok(())
    }

    fn record_stack(&mut self, state: &State, frame: u8, off: i64) {
        if let Some(fr) = state.frames.get(usize::from(frame))
            && let Some(depth) = self.out.stack_depth.get_mut(fr.subprog)
        {
            *depth = (*depth).max(-off);
        }
    }

    /// Checks the assertions of the node's instruction and applies it to `state` in place;
    /// an error leaves `state` as it was.
    fn step(&mut self, pc: usize, state: &mut State) -> Result<Flow, ErrorKind> {
        let (target, call) = self.check(pc, state)?;
        self.apply(pc, state, target, call)
    }

    /// Proves the assertions of the instruction at `pc`: which memory it accesses and, for a
    /// helper call, what its arguments resolved to.
    fn check(&mut self, pc: usize, state: &State) -> Result<Checked, ErrorKind> {
        let mut list = std::mem::take(&mut self.assertions);
        list.clear();
        if self.cfg.is_insn[pc] {
            let is_head = self.cfg.loops_at[pc].last() == Some(&pc);
            assertions::push_of(self.input.insns[pc], is_head, pc, &mut list);
        }
        let found = self.check_each(pc, state, &list);
        self.assertions = list;
        found
    }

    /// Proves `list`, the assertions of the instruction at `pc`; see [`Analyzer::check`].
    fn check_each(
        &mut self,
        pc: usize,
        state: &State,
        list: &[Assertion],
    ) -> Result<Checked, ErrorKind> {
        let insn = self.input.insns[pc];
        let mut target = None;
        let mut call = None;
        for &assertion in list {
            match assertion {
                Assertion::Initialized { reg } => checks::initialized(state, reg)?,
                Assertion::ValidAccess {
                    reg,
                    off,
                    width,
                    access,
                    value,
                } => {
                    let stored = value.map(|v| operand(state, v));
                    let ptr = state.regs[usize::from(reg)];
                    let found = checks::region(
                        self.input,
                        state,
                        reg,
                        ptr,
                        (i64::from(off), i64::from(width)),
                        access,
                        stored,
                    )?;
                    if let checks::Target::Stack { off: at, .. } = found
                        && self.kernel_like
                        && at % i64::from(width) != 0
                    {
                        return Err(ErrorKind::MisalignedStack {
                            access,
                            off: at,
                            width: i64::from(width),
                        });
                    }
                    if checks::packet_by_bounds(state, ptr, i64::from(off), i64::from(width)) {
                        self.out.facts[pc].packet_by_bounds = true;
                    }
                    target = Some(found);
                }
                Assertion::ValidArithmetic {
                    operation,
                    dst,
                    src,
                    alu64,
                } => {
                    let src = operand(state, src);
                    checks::arithmetic(operation, state.regs[usize::from(dst)], src, alu64)?;
                }
                Assertion::ValidComparison { left, right } => {
                    let right = operand(state, right);
                    let left_value = state.regs[usize::from(left)];
                    // The kernel compares pointers only with 64-bit jumps.
                    if insn.class() == op::CLASS_JMP32
                        && (left_value.is_pointer() || right.is_pointer())
                    {
                        return Err(ErrorKind::PointerComparison {
                            left: format!("{} (32-bit)", left_value.kind_name()),
                            right: right.kind_name().to_string(),
                        });
                    }
                    checks::comparison(
                        op::operation(insn.opcode),
                        state.regs[usize::from(left)],
                        right,
                    )?;
                }
                Assertion::HelperArgs { helper } => {
                    let Some(h) = helpers::lookup(helper) else {
                        return Err(ErrorKind::UnknownHelper { id: helper });
                    };
                    let args = checks::helper_args(self.input, state, h)?;
                    if args.packet_by_bounds {
                        self.out.facts[pc].packet_by_bounds = true;
                    }
                    call = Some((h, args));
                }
                Assertion::ValidReturn => checks::valid_return(state, state.frames.len() == 1)?,
                Assertion::BoundedLoop { .. } => {}
            }
        }
        Ok((target, call))
    }

    /// Applies the instruction at `pc`, whose assertions hold, to `state`; an error leaves
    /// `state` as it was.
    fn apply(
        &mut self,
        pc: usize,
        state: &mut State,
        target: Option<Target>,
        call: Option<(&'static helpers::Helper, HelperCall)>,
    ) -> Result<Flow, ErrorKind> {
        let insn = self.input.insns[pc];
        let next = pc + 1;
        match insn.class() {
            op::CLASS_ALU | op::CLASS_ALU64 => {
                self.alu(pc, insn, state);
                Ok(Flow::One(Edge::Intra(next)))
            }
            op::CLASS_LD => {
                let second = self.input.insns.get(pc + 1).copied().unwrap_or_default();
                let value = match insn.src {
                    op::PSEUDO_MAP_FD => {
                        self.out.maps_used.insert(insn.imm as u32);
                        Value::MapPtr {
                            map: insn.imm as u32,
                        }
                    }
                    op::PSEUDO_MAP_VALUE => {
                        self.out.maps_used.insert(insn.imm as u32);
                        Value::MapValue {
                            map: insn.imm as u32,
                            off: Interval::exact(i64::from(second.imm)),
                        }
                    }
                    _ => Value::Scalar(Scalar::exact(
                        u64::from(insn.imm as u32) | (u64::from(second.imm as u32) << 32),
                    )),
                };
                state.regs[usize::from(insn.dst)] = value;
                Ok(Flow::One(Edge::Intra(pc + 2)))
            }
            op::CLASS_LDX => {
                let width = op::size_bytes(op::size(insn.opcode)) as u32;
                let signed = op::mode(insn.opcode) == op::MODE_MEMSX;
                let loaded = match target {
                    Some(Target::Ctx(off)) => match off {
                        xdp_md::DATA => Value::Packet {
                            var: NO_VAR,
                            var_range: Interval::exact(0),
                            k: 0,
                        },
                        xdp_md::DATA_END => Value::PacketEnd,
                        xdp_md::DATA_META => Value::PacketMeta { k: 0 },
                        _ => Value::Scalar(Scalar::width(32)),
                    },
                    Some(Target::Stack { frame, off }) => {
                        self.record_stack(state, frame, off);
                        state
                            .frames
                            .get(usize::from(frame))
                            .and_then(|f| f.stack.cell(off, width as u8))
                            .unwrap_or(Value::Scalar(Scalar::width(width * 8)))
                    }
                    _ => Value::Scalar(Scalar::width(width * 8)),
                };
                let loaded = match loaded {
                    Value::Scalar(s) if signed => Value::Scalar(s.sign_extend(width * 8)),
                    v => v,
                };
                state.regs[usize::from(insn.dst)] = loaded;
                Ok(Flow::One(Edge::Intra(next)))
            }
            op::CLASS_ST | op::CLASS_STX => {
                self.store(pc, insn, target, state);
                Ok(Flow::One(Edge::Intra(next)))
            }
            _ => self.jump(pc, insn, state, call),
        }
    }

    fn alu(&mut self, pc: usize, insn: Insn, state: &mut State) {
        let alu64 = insn.class() == op::CLASS_ALU64;
        let operation = op::operation(insn.opcode);
        let dst = usize::from(insn.dst);
        let src = if op::source(insn.opcode) == op::SRC_X {
            state.regs[usize::from(insn.src)]
        } else if alu64 || operation != op::ALU_MOV {
            Value::Scalar(Scalar::exact(i64::from(insn.imm) as u64))
        } else {
            Value::Scalar(Scalar::exact(u64::from(insn.imm as u32)))
        };
        let d = state.regs[dst];
        let result = match operation {
            op::ALU_MOV if insn.off != 0 => {
                let bits = insn.off as u32;
                let s = src.scalar().unwrap_or(Scalar::TOP).sign_extend(bits);
                Value::Scalar(if alu64 { s } else { s.truncate(32) })
            }
            op::ALU_MOV if alu64 => src,
            op::ALU_MOV => Value::Scalar(src.scalar().unwrap_or(Scalar::TOP).truncate(32)),
            op::ALU_END => {
                let bits = insn.imm as u32;
                let s = d.scalar().unwrap_or(Scalar::TOP);
                let little = insn.class() == op::CLASS_ALU && op::source(insn.opcode) == op::SRC_K;
                Value::Scalar(if little {
                    s.truncate(bits)
                } else if let Some(c) = s.constant() {
                    let swapped = match bits {
                        16 => u64::from((c as u16).swap_bytes()),
                        32 => u64::from((c as u32).swap_bytes()),
                        _ => c.swap_bytes(),
                    };
                    Scalar::exact(swapped)
                } else {
                    Scalar::width(bits)
                })
            }
            _ if d.is_pointer() || src.is_pointer() => pointer_alu(pc, operation, d, src, state),
            _ => {
                let a = d.scalar().unwrap_or(Scalar::TOP);
                let b = if operation == op::ALU_NEG {
                    a
                } else {
                    src.scalar().unwrap_or(Scalar::TOP)
                };
                let facts = &mut self.out.facts[pc];
                if operation == op::ALU_MUL
                    && alu64
                    && (a.umax > u64::from(u32::MAX) || b.umax > u64::from(u32::MAX))
                {
                    facts.wide_mul = true;
                }
                if matches!(operation, op::ALU_DIV | op::ALU_MOD)
                    && op::source(insn.opcode) == op::SRC_X
                    && b.constant().is_none()
                {
                    facts.variable_divisor = true;
                }
                if self.kernel_like && matches!(operation, op::ALU_DIV | op::ALU_MOD) {
                    // The kernel does not track division or modulo (not even of constants):
                    // its result is any value of the width.
                    Value::Scalar(if alu64 {
                        Scalar::TOP
                    } else {
                        Scalar::width(32)
                    })
                } else {
                    Value::Scalar(domain::alu(operation, a, b, alu64, insn.off == 1))
                }
            }
        };
        state.regs[dst] = result;
    }

    fn store(&mut self, pc: usize, insn: Insn, target: Option<Target>, state: &mut State) {
        let width = op::size_bytes(op::size(insn.opcode)) as u8;
        let atomic = insn.class() == op::CLASS_STX && op::mode(insn.opcode) == op::MODE_ATOMIC;
        let value = if insn.class() == op::CLASS_ST {
            Value::Scalar(Scalar::exact(i64::from(insn.imm) as u64))
        } else {
            state.regs[usize::from(insn.src)]
        };
        let value = match value {
            Value::Scalar(s) => Value::Scalar(s.truncate(u32::from(width) * 8)),
            v => v,
        };
        match target {
            Some(Target::Stack { frame, off }) => {
                self.record_stack(state, frame, off);
                // The kernel remembers a stored scalar only in an 8-byte-aligned slot, or
                // when it is zero; elsewhere the bytes become "some data".
                let remembered = !self.kernel_like
                    || off % 8 == 0
                    || value.scalar().and_then(|s| s.constant()) == Some(0);
                if let Some(fr) = state.frames.get_mut(usize::from(frame)) {
                    if atomic {
                        fr.stack.clobber(off, i64::from(width));
                    } else {
                        fr.stack.store(off, width, remembered.then_some(value));
                    }
                }
            }
            Some(Target::MapValue { .. }) => self.out.facts[pc].map_value_store = true,
            _ => {}
        }
        if atomic {
            let old = Value::Scalar(Scalar::width(u32::from(width) * 8));
            if insn.imm == op::ATOMIC_CMPXCHG {
                state.regs[0] = old;
            } else if insn.imm & op::ATOMIC_FETCH != 0 {
                state.regs[usize::from(insn.src)] = old;
            }
        }
    }

    fn jump(
        &mut self,
        pc: usize,
        insn: Insn,
        state: &mut State,
        call: Option<(&'static helpers::Helper, HelperCall)>,
    ) -> Result<Flow, ErrorKind> {
        let next = pc + 1;
        let target = crate::cfg::jump_target(insn, pc).unwrap_or(0) as usize;
        match op::operation(insn.opcode) {
            op::JMP_JA => Ok(Flow::One(Edge::Intra(target))),
            op::JMP_EXIT => {
                if state.frames.len() > 1 {
                    let popped = state.frames.len() - 1;
                    let frame = state.frames.pop().unwrap_or_else(|| state.frame().clone());
                    for reg in 1..=5 {
                        state.regs[reg] = Value::Uninit;
                    }
                    state.regs[6..10].copy_from_slice(&frame.saved);
                    state.regs[10] = Value::Stack {
                        frame: (popped - 1) as u8,
                        off: Interval::exact(0),
                    };
                    // Pointers into the dead frame may not be used any more.
                    state.map_values(|v| match v {
                        Value::Stack { frame, .. } if usize::from(frame) == popped => Value::Uninit,
                        v => v,
                    });
                }
                Ok(Flow::One(Edge::Return))
            }
            op::JMP_CALL if insn.is_local_call() => {
                let callee = self.cfg.subprog_of[target];
                let saved = [state.regs[6], state.regs[7], state.regs[8], state.regs[9]];
                state.frames.push(Frame {
                    stack: Stack::default(),
                    saved,
                    return_to: next,
                    subprog: callee,
                });
                state.regs[0] = Value::Uninit;
                for reg in 6..=9 {
                    state.regs[reg] = Value::Uninit;
                }
                state.regs[10] = Value::Stack {
                    frame: (state.frames.len() - 1) as u8,
                    off: Interval::exact(0),
                };
                Ok(Flow::One(Edge::Call(target)))
            }
            op::JMP_CALL => {
                let Some((helper, args)) = call else {
                    return Err(ErrorKind::UnknownHelper { id: insn.imm });
                };
                self.out.helpers_used.insert(helper.id);
                for write in &args.writes {
                    if let Value::Stack { frame, off } = state.regs[usize::from(write.reg)] {
                        self.record_stack(state, frame, off.lo);
                        if let Some(fr) = state.frames.get_mut(usize::from(frame)) {
                            fr.stack.clobber(off.lo, write.maybe);
                            for o in off.lo..off.lo + write.surely {
                                fr.stack.store(o, 1, None);
                            }
                        }
                    }
                }
                for reg in 1..=5 {
                    if let Value::Stack { frame, off } = state.regs[reg] {
                        self.record_stack(state, frame, off.lo);
                    }
                }
                if helper.changes_packet {
                    state.map_values(|v| {
                        if v.is_packet_kind() {
                            Value::Invalidated { by: pc }
                        } else {
                            v
                        }
                    });
                    state.pkt_valid.clear();
                    state.meta_valid = 0;
                }
                for reg in 1..=5 {
                    state.regs[reg] = Value::Uninit;
                }
                state.regs[0] = match helper.ret {
                    helpers::Ret::MapValueOrNull => {
                        let id = checks::fresh_id(pc);
                        forget_id(state, id);
                        Value::MapValueOrNull {
                            map: args.map.unwrap_or(0),
                            off: Interval::exact(0),
                            id,
                        }
                    }
                    helpers::Ret::Scalar if helper.id == 7 || helper.id == 8 || helper.id == 42 => {
                        Value::Scalar(Scalar::width(32))
                    }
                    helpers::Ret::Scalar => Value::Scalar(Scalar::TOP),
                    helpers::Ret::Void => Value::Uninit,
                };
                Ok(Flow::One(Edge::Intra(next)))
            }
            operation => {
                let jmp32 = insn.class() == op::CLASS_JMP32;
                let right = if op::source(insn.opcode) == op::SRC_X {
                    Operand::Reg(insn.src)
                } else {
                    Operand::Imm(i64::from(insn.imm))
                };
                // The taken branch works on a copy, the fall-through on the state itself.
                let mut taken = vec![state.clone()];
                let taken_feasible = branch(
                    &mut taken[0],
                    operation,
                    (insn.dst, right),
                    (true, jmp32),
                    self.kernel_like,
                );
                let fall_feasible = branch(
                    state,
                    operation,
                    (insn.dst, right),
                    (false, jmp32),
                    self.kernel_like,
                );
                if taken_feasible && fall_feasible && target != next {
                    self.out.two_way_branches += 1;
                    *self
                        .out
                        .two_way_branches_by_root
                        .entry(self.root)
                        .or_default() += 1;
                }
                if taken_feasible && fall_feasible && target == next {
                    // Both branches to the same place: one edge.
                    *state = taken[0].join(state);
                    return Ok(Flow::One(Edge::Intra(target)));
                }
                Ok(Flow::Branch {
                    taken: taken_feasible.then_some((Edge::Intra(target), taken)),
                    fall: fall_feasible.then_some(Edge::Intra(next)),
                })
            }
        }
    }
}

/// Adds a state reaching `node` on another path: joined into the kept state of the same shape,
/// else kept apart (up to [`MAX_DISJUNCTS`], beyond which it is joined into the last one).
fn merge(node: &mut Node, state: State, dist: u64, live: u16) {
    node.dist = node.dist.max(dist);
    if let Some(same) = node
        .states
        .iter_mut()
        .find(|s| shape(&state, live).eq(shape(s, live)))
    {
        *same = same.join(&state);
    } else if node.states.len() < MAX_DISJUNCTS {
        node.states.push(state);
    } else if let Some(last) = node.states.last_mut() {
        *last = last.join(&state);
    }
}

/// The kinds of a state's live registers, its spilled pointers and its saved registers: states
/// with the same shape are joined, others kept apart. Compared lazily, without collecting.
fn shape(state: &State, live: u16) -> impl Iterator<Item = u64> + '_ {
    let regs = state
        .regs
        .iter()
        .enumerate()
        .filter(move |&(r, _)| live & (1 << r) != 0)
        .map(|(_, &v)| kind_tag(v));
    let frames = state.frames.iter().flat_map(|frame| {
        let saved = frame.saved.iter().map(|&v| kind_tag(v));
        let cells = frame
            .stack
            .cells
            .iter()
            .filter(|cell| !matches!(cell.value, Value::Scalar(_)))
            .map(|cell| {
                ((cell.off as u64) << 40) ^ (u64::from(cell.width) << 36) ^ kind_tag(cell.value)
            });
        saved.chain(cells)
    });
    regs.chain(frames)
}

/// The kind of a value, with the map or frame it points into.
fn kind_tag(v: Value) -> u64 {
    let (kind, detail) = match v {
        Value::Uninit => (0, 0),
        Value::Invalidated { .. } => (1, 0),
        Value::Mixed => (2, 0),
        Value::Scalar(_) => (3, 0),
        Value::Ctx => (4, 0),
        Value::Packet { .. } => (5, 0),
        Value::PacketEnd => (6, 0),
        Value::PacketMeta { .. } => (7, 0),
        Value::Stack { frame, .. } => (8, u32::from(frame)),
        Value::Mem { .. } => (9, 0),
        Value::MapValue { map, .. } => (10, map),
        Value::MapValueOrNull { map, .. } => (11, map),
        Value::MapPtr { map } => (12, map),
    };
    (kind << 32) | u64::from(detail)
}

/// Keeps [`State::links`] up to date after `insn` turned a state whose source and
/// destination registers held `(src_before, dst_before)` into `after`: a `mov` of a scalar
/// register links the destination to the source, one 64-bit add or subtract of a constant
/// keeps a linked destination linked at its new distance (as the kernel's `BPF_ADD_CONST`),
/// any other write unlinks what it writes, and calls and returns unlink everything (frames
/// change under them).
fn update_links(
    pc: usize,
    insn: Insn,
    (src_before, dst_before): (Option<Value>, Option<Value>),
    after: &mut State,
) {
    let (_, defs) = crate::cfg::uses_defs(insn);
    let is_call_or_exit = matches!(insn.class(), op::CLASS_JMP | op::CLASS_JMP32)
        && matches!(op::operation(insn.opcode), op::JMP_CALL | op::JMP_EXIT);
    if is_call_or_exit {
        after.links = [0; 11];
        after.link_offs = [0; 11];
        return;
    }
    let dst = usize::from(insn.dst);
    // `dst += k` / `dst -= k` on a linked scalar that no value of which wraps.
    let moved_by = (insn.class() == op::CLASS_ALU64
        && op::source(insn.opcode) == op::SRC_K
        && dst < 11
        && after.links[dst] != 0)
        .then(|| match op::operation(insn.opcode) {
            op::ALU_ADD => Some(i64::from(insn.imm)),
            op::ALU_SUB => i64::from(insn.imm).checked_neg(),
            _ => None,
        })
        .flatten()
        // Once only, as the kernel: a register that already moved from its link is unlinked
        // by a second move (and `+= 0` counts as a move there).
        // The relation holds modulo 2^64 whether or not a value wraps: `narrow` shifts a
        // bound only where the shifted interval does not wrap.
        .filter(|&k| {
            k != 0 && after.link_offs[dst] == 0 && matches!(dst_before, Some(Value::Scalar(_)))
        });
    for r in 0..11 {
        if defs & (1 << r) != 0 && !(r == dst && moved_by.is_some()) {
            after.links[r] = 0;
            after.link_offs[r] = 0;
        }
    }
    if let Some(k) = moved_by {
        after.link_offs[dst] += k;
    }
    let alu64 = insn.class() == op::CLASS_ALU64;
    let is_mov = matches!(insn.class(), op::CLASS_ALU | op::CLASS_ALU64)
        && op::operation(insn.opcode) == op::ALU_MOV
        && op::source(insn.opcode) == op::SRC_X
        && insn.off == 0;
    let src = usize::from(insn.src);
    if is_mov
        && dst != src
        && dst < 11
        && src < 11
        && let Some(Value::Scalar(v)) = src_before
        // A 32-bit move copies the value only when it fits 32 bits.
        && (alu64 || v.umax <= u64::from(u32::MAX))
    {
        after.link(dst, src, checks::fresh_id(pc));
    }
    // Links only relate scalars.
    for r in 0..11 {
        if !matches!(after.regs[r], Value::Scalar(_)) {
            after.links[r] = 0;
            after.link_offs[r] = 0;
        }
    }
}

fn operand(state: &State, operand: Operand) -> Value {
    match operand {
        Operand::Reg(r) => state.regs[usize::from(r)],
        Operand::Imm(i) => Value::Scalar(Scalar::exact(i as u64)),
    }
}

/// Makes values created earlier with `id` anonymous: a new value takes the id over.
fn forget_id(state: &mut State, id: u32) {
    state.map_values(|v| match v {
        Value::MapValueOrNull { map, off, id: i } if i == id => {
            Value::MapValueOrNull { map, off, id: ANON }
        }
        Value::Packet { var, var_range, k } if var == id => Value::Packet {
            var: ANON,
            var_range,
            k,
        },
        v => v,
    });
    state.pkt_valid.retain(|(v, _)| *v != id);
}

/// Pointer ± scalar and pointer − pointer, as allowed by `checks::arithmetic`.
fn pointer_alu(pc: usize, operation: u8, d: Value, src: Value, state: &mut State) -> Value {
    let sub = operation == op::ALU_SUB;
    if d.is_pointer() && src.is_pointer() {
        return Value::Scalar(pointer_difference(d, src));
    }
    let (ptr, s) = if d.is_pointer() { (d, src) } else { (src, d) };
    let s = s.scalar().unwrap_or(Scalar::TOP);
    let delta = match s.as_offset() {
        Some(i) if sub => Interval {
            lo: -i.hi,
            hi: -i.lo,
        },
        Some(i) => i,
        None => return Value::Mixed,
    };
    match ptr {
        Value::Packet { var, var_range, k } => {
            if delta.is_exact() {
                Value::Packet {
                    var,
                    var_range,
                    k: k + delta.lo,
                }
            } else {
                let id = checks::fresh_id(pc);
                forget_id(state, id);
                let base = if var == NO_VAR {
                    Interval::exact(0)
                } else {
                    var_range
                };
                Value::Packet {
                    var: id,
                    var_range: base.plus(delta),
                    k,
                }
            }
        }
        Value::PacketMeta { k } => Value::PacketMeta { k: k + delta.lo },
        Value::Stack { frame, off } => Value::Stack {
            frame,
            off: off.plus(delta),
        },
        Value::Mem { off } => Value::Mem {
            off: off.plus(delta),
        },
        Value::MapValue { map, off } => Value::MapValue {
            map,
            off: off.plus(delta),
        },
        _ => Value::Mixed,
    }
}

/// `d - src` for two pointers (a privileged loader's subtraction, see
/// `checks::arithmetic`): the difference of their offsets when both point into the same region
/// at known offsets from its start, any scalar otherwise (the kernel itself always says "any").
fn pointer_difference(d: Value, src: Value) -> Scalar {
    let same_region = match (d, src) {
        (Value::Packet { var: v1, .. }, Value::Packet { var: v2, .. }) => {
            if v1 == v2 && v1 != ANON {
                // Same variable part: it cancels out.
                if let (Value::Packet { k: k1, .. }, Value::Packet { k: k2, .. }) = (d, src) {
                    return Scalar::exact(k1.wrapping_sub(k2) as u64);
                }
            }
            true
        }
        (Value::PacketMeta { .. }, Value::PacketMeta { .. })
        | (Value::Mem { .. }, Value::Mem { .. }) => true,
        (Value::Stack { frame: a, .. }, Value::Stack { frame: b, .. }) => a == b,
        (Value::MapValue { map: a, .. }, Value::MapValue { map: b, .. }) => a == b,
        // Packet end, context, map pointers, different frames or maps: addresses the
        // analysis does not relate.
        _ => false,
    };
    if !same_region {
        return Scalar::TOP;
    }
    let (a, b) = (offset_of(d), offset_of(src));
    match (a.lo.checked_sub(b.hi), a.hi.checked_sub(b.lo)) {
        (Some(lo), Some(hi)) => Scalar::signed(lo, hi),
        _ => Scalar::TOP,
    }
}

/// The offset interval of a pointer, relative to the start of its region.
fn offset_of(v: Value) -> Interval {
    match v {
        Value::Packet { var, var_range, k } => {
            if var == NO_VAR {
                Interval::exact(k)
            } else {
                var_range.shift(k)
            }
        }
        Value::PacketMeta { k } => Interval::exact(k),
        Value::Stack { off, .. } | Value::Mem { off } | Value::MapValue { off, .. } => off,
        _ => Interval::exact(0),
    }
}

/// Restricts `state` to the branch of `dst <operation> right` (`taken`) or its negation;
/// false when the branch is infeasible.
///
/// With `kernel_like`, comparisons of two pointers never decide a branch (the kernel explores
/// both), and a `data_end` check on a pointer with a variable part proves nothing about the
/// packet's constant-offset pointers (the kernel tracks ranges per pointer identity).
fn branch(
    state: &mut State,
    operation: u8,
    (dst, right): (u8, Operand),
    (taken, jmp32): (bool, bool),
    kernel_like: bool,
) -> bool {
    let left = state.regs[usize::from(dst)];
    let rv = operand(state, right);
    // The comparison that holds on this branch.
    let holds = if taken {
        Some(operation)
    } else {
        domain::negate(operation)
    };
    match (left, rv) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            let fits = |s: Scalar| s.smin >= 0 && s.umax <= i32::MAX as u64;
            if jmp32 && !(fits(a) && fits(b)) {
                // Decide only when both are known.
                if let (Some(x), Some(y)) = (a.constant(), b.constant()) {
                    return ebpf_isa::semantics::condition(
                        operation,
                        u64::from(x as u32),
                        u64::from(y as u32),
                        true,
                    )
                    .unwrap_or(true)
                        == taken;
                }
                return true;
            }
            let Some(holds) = holds else {
                // JSET's fall-through: no bit in common.
                return match (a.constant(), b.constant()) {
                    (Some(x), Some(y)) => x & y == 0,
                    _ => true,
                };
            };
            match domain::refine(holds, a, b) {
                Some((a2, b2)) => {
                    state.narrow(usize::from(dst), a2);
                    if let Operand::Reg(r) = right {
                        state.narrow(usize::from(r), b2);
                    }
                    true
                }
                None => false,
            }
        }
        (Value::MapValueOrNull { map, off, id }, z)
        | (z, Value::MapValueOrNull { map, off, id })
            if z.scalar().and_then(|s| s.constant()) == Some(0) =>
        {
            let is_null = match holds {
                Some(op::JMP_JEQ) => true,
                Some(op::JMP_JNE) => false,
                _ => return true,
            };
            let resolved = if is_null {
                Value::ZERO
            } else {
                Value::MapValue { map, off }
            };
            if id == ANON {
                let reg = if matches!(left, Value::MapValueOrNull { .. }) {
                    Some(dst)
                } else if let Operand::Reg(r) = right {
                    Some(r)
                } else {
                    None
                };
                if let Some(r) = reg {
                    state.regs[usize::from(r)] = resolved;
                }
            } else {
                state.map_values(|v| match v {
                    Value::MapValueOrNull { id: i, map, off } if i == id => {
                        if is_null {
                            Value::ZERO
                        } else {
                            Value::MapValue { map, off }
                        }
                    }
                    v => v,
                });
            }
            true
        }
        (Value::MapValue { .. }, z) | (z, Value::MapValue { .. })
            if z.scalar().and_then(|s| s.constant()) == Some(0) =>
        {
            // A checked map value is never NULL.
            holds != Some(op::JMP_JEQ)
        }
        (Value::Packet { var, var_range, k }, Value::PacketEnd) => {
            if let Some(extra) = holds.and_then(|h| le_end(h, true))
                && learns_range(k, extra, kernel_like)
            {
                prove_packet(state, var, var_range, k + extra, kernel_like);
            }
            true
        }
        (Value::PacketEnd, Value::Packet { var, var_range, k }) => {
            if let Some(extra) = holds.and_then(|h| le_end(h, false))
                && learns_range(k, extra, kernel_like)
            {
                prove_packet(state, var, var_range, k + extra, kernel_like);
            }
            true
        }
        (
            Value::PacketMeta { k },
            Value::Packet {
                var: NO_VAR, k: 0, ..
            },
        ) => {
            if let Some(extra) = holds.and_then(|h| le_end(h, true)) {
                state.meta_valid = state.meta_valid.max(k + extra);
            }
            true
        }
        (
            Value::Packet {
                var: NO_VAR, k: 0, ..
            },
            Value::PacketMeta { k },
        ) => {
            if let Some(extra) = holds.and_then(|h| le_end(h, false)) {
                state.meta_valid = state.meta_valid.max(k + extra);
            }
            true
        }
        (l, r) if l.is_pointer() && r.is_pointer() => {
            // Same-region pointers: decide on offsets when possible (address order is offset
            // order inside one region), learn nothing else. Pointers into different regions
            // (the packet and its metadata, say) have unrelated offsets.
            let (a, b) = (offset_of(l), offset_of(r));
            let same_region = match (l, r) {
                (Value::Packet { var: v1, .. }, Value::Packet { var: v2, .. }) => {
                    v1 == v2 && v1 != ANON
                }
                (Value::Stack { frame: f1, .. }, Value::Stack { frame: f2, .. }) => f1 == f2,
                (Value::MapValue { map: m1, .. }, Value::MapValue { map: m2, .. }) => m1 == m2,
                (Value::Mem { .. }, Value::Mem { .. })
                | (Value::PacketMeta { .. }, Value::PacketMeta { .. }) => true,
                _ => false,
            };
            let Some(holds) = holds else {
                return true;
            };
            if !same_region || kernel_like {
                return true;
            }
            let signed = match holds {
                op::JMP_JGT => op::JMP_JSGT,
                op::JMP_JGE => op::JMP_JSGE,
                op::JMP_JLT => op::JMP_JSLT,
                op::JMP_JLE => op::JMP_JSLE,
                other => other,
            };
            domain::refine(
                signed,
                Scalar::signed(a.lo, a.hi),
                Scalar::signed(b.lo, b.hi),
            )
            .is_some()
        }
        _ => true,
    }
}

/// For `ptr <holds> end` (or `end <holds> ptr` when `!ptr_left`): the `x` with
/// `ptr + x ≤ end` proven, if any.
fn le_end(holds: u8, ptr_left: bool) -> Option<i64> {
    match (holds, ptr_left) {
        (op::JMP_JLE, true) | (op::JMP_JGE, false) => Some(0),
        (op::JMP_JLT, true) | (op::JMP_JGT, false) => Some(1),
        _ => None,
    }
}

/// Whether a `data_end` comparison of a packet pointer at constant offset `k` that proves
/// `ptr + k + extra <= end` gives a range. Always, in logic; with `kernel_like`, as the kernel's
/// `find_good_pkt_pointers` decides: never for a negative offset, and not for a strict
/// comparison (`ptr < end`, `end > ptr`, where `extra` is 1) of a pointer at offset 0. That
/// comparison does prove one byte, but the kernel learns nothing from it and then refuses the
/// read, so the `kernel` profile must not accept it either.
fn learns_range(k: i64, extra: i64, kernel_like: bool) -> bool {
    !kernel_like || (k > 0 || (k == 0 && extra == 0))
}

fn prove_packet(state: &mut State, var: u32, var_range: Interval, k: i64, kernel_like: bool) {
    if var == NO_VAR {
        state.prove(NO_VAR, k);
    } else {
        state.prove(var, k);
        if !kernel_like {
            // data + v + k ≤ end with v ≥ var_range.lo.
            state.prove(NO_VAR, var_range.lo.saturating_add(k));
        }
    }
}

/// The registers an instruction involves, with their abstract values.
pub fn registers(insn: Insn, state: &State) -> String {
    let mut regs: Vec<u8> = Vec::new();
    match insn.class() {
        op::CLASS_JMP if insn.opcode == op::CALL => regs.extend(1..=5),
        op::CLASS_JMP if insn.opcode == op::EXIT => regs.push(0),
        op::CLASS_LD => {}
        _ => {
            regs.push(insn.dst);
            let uses_src = matches!(insn.class(), op::CLASS_LDX | op::CLASS_STX)
                || op::source(insn.opcode) == op::SRC_X;
            if uses_src && insn.src != insn.dst {
                regs.push(insn.src);
            }
        }
    }
    let mut out = String::new();
    for r in regs {
        if let Some(v) = state.regs.get(usize::from(r)) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("r{r}={v}"));
        }
    }
    let proven = state.proven(NO_VAR).unwrap_or(0);
    if proven > 0 {
        out.push_str(&format!(" (packet bytes proven: {proven})"));
    }
    out
}
