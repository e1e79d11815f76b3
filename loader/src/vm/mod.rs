//! The VM backend: the unchanged lambda object, run in userspace by our interpreter or by
//! rbpf's JIT, over userspace maps with the kernel's semantics.
//!
//! [`VmProgram::load`] links the object (calls, map references), creates its maps, seeds them,
//! writes the attach-time globals and patches every map reference into an address the helpers
//! understand. A [`Worker`] owns what one thread needs to run it: a packet frame below 4 GiB
//! (see [`memory`]), a context, a stack, and its per-CPU index.

pub mod helpers;
pub mod interp;
pub mod jit;
pub mod memory;
pub mod raw;

use std::fmt;
use std::sync::Arc;

use ebpf_isa::{Insn, opcode as op};
use thiserror::Error;

use crate::image::LambdaImage;
use crate::lambda::{LambdaParams, XdpAction};
use crate::lineinfo::LineInfo;
use crate::link::{LinkError, LinkedMapKind, LinkedProgram, link_xdp};
use crate::maps::{MapAccess, MapError, MapSpec, UpdateFlags, VmMap};
use helpers::{MapSlot, RunState};
use interp::{FRAME_STACK, MAX_FRAMES, Machine, Region};
use memory::{LowFrame, MAX_PACKET};

/// Instructions one run may execute before the interpreter stops it. The kernel's verifier
/// accepts programs of up to a million instructions; a run longer than that is a runaway.
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// Which engine runs the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Interpreter,
    Jit,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Interpreter => "interpreter",
            Engine::Jit => "jit",
        })
    }
}

/// Load/store, for errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Load,
    Store,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Load => "load",
            Access::Store => "store",
        })
    }
}

/// Why the VM refused or stopped a program.
#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(
        "insn {insn}: {access} of {len} bytes at {addr:#x} is outside every region the program may access"
    )]
    OutOfBounds {
        insn: usize,
        access: Access,
        addr: u64,
        len: u64,
    },
    #[error("insn {insn}: the run exceeded its budget of {budget} instructions (a runaway loop?)")]
    BudgetExceeded { budget: u64, insn: usize },
    #[error("insn {insn}: helper {helper} ({}) is not available in the VM backend", helper_name(*.helper))]
    UnknownHelper { insn: usize, helper: u32 },
    #[error("insn {insn}: bad argument to helper {helper} ({}): {what}", helper_name(*.helper))]
    BadHelperArgument {
        insn: usize,
        helper: u32,
        what: &'static str,
    },
    #[error("insn {insn}: {what} are not supported by the VM backend")]
    Unsupported { insn: usize, what: &'static str },
    #[error("insn {insn}: the {engine} cannot execute {what}")]
    EngineCannot {
        insn: usize,
        engine: Engine,
        what: String,
    },
    #[error("insn {insn}: opcode {opcode:#04x} is not a valid instruction")]
    BadOpcode { insn: usize, opcode: u8 },
    #[error("insn {insn}: register out of range or r10 written")]
    BadRegister { insn: usize },
    #[error("insn {insn}: jump or call target outside the program")]
    JumpOutOfRange { insn: usize },
    #[error("insn {insn}: execution ran past the last instruction")]
    FellOffEnd { insn: usize },
    #[error("insn {insn}: call chain deeper than {max} frames")]
    CallDepth { insn: usize, max: usize },
    #[error("insn {insn}: atomic {width}-byte access at {addr:#x} is not aligned")]
    Misaligned {
        insn: usize,
        addr: u64,
        width: usize,
    },
    #[error("map `{map}`: {source}")]
    Map {
        map: String,
        #[source]
        source: MapError,
    },
    #[error("a {len}-byte packet does not fit the VM's {MAX_PACKET}-byte frame")]
    PacketTooLarge { len: usize },
    #[error("a {len}-byte packet is shorter than an Ethernet header")]
    PacketTooShort { len: usize },
    #[error("cannot map a packet frame below 4 GiB: {0}")]
    Frame(std::io::Error),
    #[error("rbpf refused the program: {0}")]
    Rbpf(String),
    #[error("the program left its context's packet pointers outside its frame")]
    BadContext,
    #[error(transparent)]
    Verify(#[from] crate::verify::VerifyError),
    #[error("{error} (at {line})")]
    Located { error: Box<VmError>, line: LineInfo },
    #[error(
        "the JIT runs only programs the verifier has proved safe and bounded (compiled code checks \
         neither memory accesses nor instruction counts); verify it, or use the interpreter"
    )]
    JitNeedsVerification,
    #[error(
        "the verifier bounds a run at {bound} instructions, over the budget of {budget}: the \
         JIT cannot stop a run, so it refuses the program (raise --budget, or use the interpreter)"
    )]
    JitOverBudget { bound: u64, budget: u64 },
}

impl VmError {
    /// The instruction the error is about, if it is about one.
    pub fn insn(&self) -> Option<usize> {
        match self {
            VmError::OutOfBounds { insn, .. }
            | VmError::BudgetExceeded { insn, .. }
            | VmError::UnknownHelper { insn, .. }
            | VmError::BadHelperArgument { insn, .. }
            | VmError::Unsupported { insn, .. }
            | VmError::EngineCannot { insn, .. }
            | VmError::BadOpcode { insn, .. }
            | VmError::BadRegister { insn }
            | VmError::JumpOutOfRange { insn }
            | VmError::FellOffEnd { insn }
            | VmError::CallDepth { insn, .. }
            | VmError::Misaligned { insn, .. } => Some(*insn),
            VmError::Located { error, .. } => error.insn(),
            _ => None,
        }
    }
}

fn helper_name(id: u32) -> &'static str {
    helpers::SUPPORTED
        .iter()
        .find(|(n, _)| *n == id)
        .map_or("unknown", |(_, name)| name)
}

/// The kernel's `struct xdp_md`: what an XDP program's `r1` points to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

/// How to load a program into the VM.
#[derive(Clone, Debug)]
pub struct VmOptions {
    pub engine: Engine,
    /// Run our verifier (`vm` profile) before loading, and refuse what it rejects. The JIT
    /// requires it; the interpreter checks memory and counts instructions itself, so it can
    /// also run unverified programs.
    pub verify: bool,
    /// Limits on the verified contract.
    pub limits: crate::verify::Limits,
    /// Instruction budget per run (interpreter), see [`DEFAULT_BUDGET`].
    pub budget: u64,
    /// Worker threads that will run the program: the number of per-CPU copies maps keep.
    pub workers: usize,
    pub params: LambdaParams,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            engine: Engine::Interpreter,
            verify: true,
            limits: crate::verify::Limits::default(),
            budget: DEFAULT_BUDGET,
            workers: 1,
            params: LambdaParams::default(),
        }
    }
}

/// One map of a loaded program.
pub struct VmMapEntry {
    pub name: String,
    pub kind: LinkedMapKind,
    pub map: Arc<VmMap>,
}

/// A program loaded into the VM: linked, maps created and seeded, map references patched.
pub struct VmProgram {
    pub name: String,
    pub engine: Engine,
    pub budget: u64,
    /// Linked code with map references patched to addresses.
    code: Vec<Insn>,
    /// Code for the JIT, frames laid out (see [`jit`]); empty for the interpreter.
    jit_code: Arc<[u8]>,
    slots: Vec<MapSlot>,
    regions: Vec<Region>,
    pub maps: Vec<VmMapEntry>,
    /// Source lines of the linked code.
    lines: Vec<Option<LineInfo>>,
    /// What the verifier proved, when it ran.
    pub contract: Option<verifier::Contract>,
    /// `(map, records)` seeded at load.
    pub seeded: Vec<(String, usize)>,
    pub workers: usize,
}

impl VmProgram {
    /// Loads the object's XDP program. Refuses, naming the instruction, anything the chosen
    /// engine cannot execute.
    pub fn load(bytes: &[u8], name: &str, options: &VmOptions) -> Result<VmProgram, VmError> {
        let (image, linked) = link_xdp(bytes, name, &options.params)?;
        Self::from_linked(&image, linked, options)
    }

    /// Loads an already linked program (its maps are created here).
    pub fn from_linked(
        image: &LambdaImage,
        linked: LinkedProgram,
        options: &VmOptions,
    ) -> Result<VmProgram, VmError> {
        // A refusal that names an instruction also names its source line.
        let lines = linked.lines.clone();
        Self::load_linked(image, linked, options).map_err(|error| {
            match error
                .insn()
                .and_then(|insn| lines.get(insn).cloned().flatten())
            {
                Some(line) => VmError::Located {
                    error: Box::new(error),
                    line,
                },
                None => error,
            }
        })
    }

    fn load_linked(
        image: &LambdaImage,
        linked: LinkedProgram,
        options: &VmOptions,
    ) -> Result<VmProgram, VmError> {
        let workers = options.workers.max(1);
        let contract = if options.verify {
            let verify_options = options
                .limits
                .options(verifier::Backend::Vm, workers as u32);
            Some(crate::verify::verify_linked(&linked, &verify_options)?)
        } else {
            None
        };
        if options.engine == Engine::Jit {
            match &contract {
                None => return Err(VmError::JitNeedsVerification),
                Some(c) if c.max_insns_executed > options.budget => {
                    return Err(VmError::JitOverBudget {
                        bound: c.max_insns_executed,
                        budget: options.budget,
                    });
                }
                Some(_) => {}
            }
        }
        check_supported(&linked.insns)?;
        interp::check_registers(&linked.insns)?;
        let mut maps = Vec::with_capacity(linked.maps.len());
        for m in &linked.maps {
            let spec = MapSpec {
                name: m.name.clone(),
                map_type: m.map_type.into(),
                key_size: m.key_size,
                value_size: m.value_size,
                max_entries: m.max_entries,
                flags: m.flags,
            };
            let map_err = |source| VmError::Map {
                map: m.name.clone(),
                source,
            };
            let map = VmMap::new(spec, workers).map_err(map_err)?;
            if let LinkedMapKind::GlobalData { .. } = m.kind {
                let mut value = Vec::with_capacity(m.initial.len() * workers);
                for _ in 0..workers {
                    let mut copy = m.initial.clone();
                    copy.resize(map.spec().value_stride(), 0);
                    value.extend_from_slice(&copy);
                }
                value.truncate(map.spec().userspace_value_size(workers));
                map.update(&0u32.to_le_bytes(), &value, UpdateFlags::Any)
                    .map_err(map_err)?;
            }
            maps.push(VmMapEntry {
                name: m.name.clone(),
                kind: m.kind,
                map: Arc::new(map),
            });
        }

        let mut seeded = Vec::new();
        for seed in &image.seeds {
            let Some(entry) = maps.iter().find(|e| e.name == seed.map) else {
                continue;
            };
            let map_err = |source| VmError::Map {
                map: seed.map.clone(),
                source,
            };
            for (key, value) in seed.records() {
                let mut full = Vec::new();
                for _ in 0..entry.map.ncpus() {
                    let mut copy = value.to_vec();
                    copy.resize(entry.map.spec().value_stride(), 0);
                    full.extend_from_slice(&copy);
                }
                full.truncate(entry.map.spec().userspace_value_size(entry.map.ncpus()));
                entry
                    .map
                    .update(key, &full, UpdateFlags::Any)
                    .map_err(map_err)?;
            }
            seeded.push((seed.map.clone(), seed.record_count()));
        }

        let slots: Vec<MapSlot> = maps
            .iter()
            .map(|e| MapSlot {
                handle: Arc::as_ptr(&e.map) as u64,
                map: Arc::clone(&e.map),
            })
            .collect();
        let regions = maps
            .iter()
            .map(|e| {
                let range = e.map.value_memory();
                Region {
                    start: range.start as u64,
                    end: range.end as u64,
                    writable: !matches!(e.kind, LinkedMapKind::GlobalData { read_only: true }),
                }
            })
            .collect();
        let code = patch_map_references(&linked.insns, &maps)?;
        let jit_code: Arc<[u8]> = match options.engine {
            Engine::Interpreter => Arc::from(Vec::new()),
            Engine::Jit => Arc::from(jit::prepare(&code)?),
        };
        Ok(VmProgram {
            name: linked.lambda.clone(),
            engine: options.engine,
            budget: options.budget,
            code,
            jit_code,
            slots,
            regions,
            maps,
            lines: linked.lines,
            contract,
            seeded,
            workers,
        })
    }

    /// The source line instruction `insn` came from.
    pub fn line(&self, insn: usize) -> Option<&LineInfo> {
        self.lines.get(insn).and_then(Option::as_ref)
    }

    /// The map called `name`.
    pub fn map(&self, name: &str) -> Option<&Arc<VmMap>> {
        self.maps.iter().find(|e| e.name == name).map(|e| &e.map)
    }

    pub fn insn_count(&self) -> usize {
        self.code.len()
    }
}

/// Refuses what no engine here runs, naming the first instruction that needs it.
fn check_supported(insns: &[Insn]) -> Result<(), VmError> {
    let mut skip = false;
    for (index, insn) in insns.iter().enumerate() {
        if std::mem::take(&mut skip) {
            continue;
        }
        if insn.is_lddw() {
            skip = true;
            if !matches!(
                insn.src,
                op::PSEUDO_NONE | op::PSEUDO_MAP_FD | op::PSEUDO_MAP_VALUE
            ) {
                return Err(VmError::Unsupported {
                    insn: index,
                    what: "64-bit loads of BTF ids, functions or map-in-map values",
                });
            }
        }
        if insn.is_helper_call()
            && helpers::SUPPORTED
                .iter()
                .all(|(id, _)| *id as i32 != insn.imm)
        {
            return Err(VmError::UnknownHelper {
                insn: index,
                helper: insn.imm as u32,
            });
        }
        if insn.opcode == op::CLASS_JMP | op::SRC_X | op::JMP_CALL {
            return Err(VmError::Unsupported {
                insn: index,
                what: "indirect calls (callx)",
            });
        }
        if insn.opcode == op::CALL && insn.src == op::CALL_KFUNC {
            return Err(VmError::Unsupported {
                insn: index,
                what: "calls of kernel functions (kfuncs)",
            });
        }
    }
    Ok(())
}

/// Replaces map references with what the VM's helpers take: a map's handle for `src = 1`, the
/// address inside its value for `src = 2`.
fn patch_map_references(insns: &[Insn], maps: &[VmMapEntry]) -> Result<Vec<Insn>, VmError> {
    let mut code = insns.to_vec();
    for index in 0..code.len() {
        let Some((map_index, value_offset)) = crate::link::map_reference(insns, index) else {
            continue;
        };
        let entry = maps.get(map_index).ok_or(VmError::Unsupported {
            insn: index,
            what: "references to maps the object does not define",
        })?;
        let address = match value_offset {
            None => Arc::as_ptr(&entry.map) as u64,
            Some(offset) => {
                let value = entry.map.program_lookup(&0u32.to_le_bytes(), 0).ok_or(
                    VmError::Unsupported {
                        insn: index,
                        what: "direct value access to maps other than global data",
                    },
                )?;
                if offset >= entry.map.spec().value_size {
                    return Err(VmError::Unsupported {
                        insn: index,
                        what: "direct value access past the end of a global-data map",
                    });
                }
                value.as_ptr() as u64 + u64::from(offset)
            }
        };
        code[index].src = op::PSEUDO_NONE;
        code[index].imm = address as u32 as i32;
        code[index + 1].imm = (address >> 32) as u32 as i32;
    }
    Ok(code)
}

/// The result of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmOutcome {
    pub action: XdpAction,
    /// The packet as the program left it (`data` to `data_end`).
    pub packet_out: Vec<u8>,
    /// Instructions executed (the interpreter counts them; 0 under the JIT).
    pub executed: u64,
    /// `bpf_trace_printk` lines.
    pub log: Vec<String>,
}

/// The result of [`Worker::run_in_place`]; the packet is in [`Worker::output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub action: XdpAction,
    /// Instructions executed (the interpreter counts them; 0 under the JIT).
    pub executed: u64,
}

/// What one thread needs to run a program: frame, context, stack, per-CPU index.
pub struct Worker {
    program: Arc<VmProgram>,
    frame: LowFrame,
    ctx: Box<XdpMd>,
    stack: Box<[u8; FRAME_STACK * MAX_FRAMES]>,
    regions: Vec<Region>,
    jit: Option<jit::JitProgram>,
    cpu: usize,
    rng: u64,
    log: Vec<String>,
}

impl Worker {
    /// A worker using per-CPU copy `cpu` (`< program.workers`).
    pub fn new(program: Arc<VmProgram>, cpu: usize) -> Result<Worker, VmError> {
        let frame = LowFrame::new().map_err(VmError::Frame)?;
        let ctx = Box::new(XdpMd::default());
        let mut regions = program.regions.clone();
        let ctx_addr = &*ctx as *const XdpMd as u64;
        regions.push(Region {
            start: ctx_addr,
            end: ctx_addr + std::mem::size_of::<XdpMd>() as u64,
            writable: false,
        });
        let jit = match program.engine {
            Engine::Interpreter => None,
            Engine::Jit => Some(jit::JitProgram::compile(Arc::clone(&program.jit_code))?),
        };
        Ok(Worker {
            cpu: cpu.min(program.workers - 1),
            rng: 0x9e37_79b9_7f4a_7c15 ^ (cpu as u64 + 1).wrapping_mul(0x2545_f491),
            program,
            frame,
            ctx,
            stack: Box::new([0; FRAME_STACK * MAX_FRAMES]),
            regions,
            jit,
            log: Vec::new(),
        })
    }

    pub fn program(&self) -> &Arc<VmProgram> {
        &self.program
    }

    /// Runs the program on one packet (an Ethernet frame) and returns a copy of what it left.
    pub fn run(&mut self, packet: &[u8]) -> Result<VmOutcome, VmError> {
        let summary = self.run_in_place(packet)?;
        Ok(VmOutcome {
            action: summary.action,
            packet_out: self.output().to_vec(),
            executed: summary.executed,
            log: std::mem::take(&mut self.log),
        })
    }

    /// The packet as the last run left it (`data` to `data_end`, in the frame).
    pub fn output(&self) -> &[u8] {
        self.frame
            .slice(u64::from(self.ctx.data), u64::from(self.ctx.data_end))
            .unwrap_or(&[])
    }

    /// `bpf_trace_printk` lines of the last run.
    pub fn log(&self) -> &[String] {
        &self.log
    }

    /// Runs the program on one packet and leaves the result in the frame ([`Worker::output`]):
    /// no copy, no allocation.
    pub fn run_in_place(&mut self, packet: &[u8]) -> Result<RunSummary, VmError> {
        if packet.len() > MAX_PACKET {
            return Err(VmError::PacketTooLarge { len: packet.len() });
        }
        if packet.len() < 14 {
            return Err(VmError::PacketTooShort { len: packet.len() });
        }
        let data = self.frame.load(packet);
        *self.ctx = XdpMd {
            data: data as u32,
            data_end: (data + packet.len() as u64) as u32,
            data_meta: data as u32,
            ingress_ifindex: 1,
            rx_queue_index: 0,
            egress_ifindex: 0,
        };
        self.log.clear();
        let ctx_addr = &*self.ctx as *const XdpMd as u64;
        let program = Arc::clone(&self.program);
        let mut state = RunState {
            ctx: &mut self.ctx,
            ctx_addr,
            frame_start: self.frame.start(),
            frame_hard_end: self.frame.hard_end(),
            high_water: data + packet.len() as u64,
            maps: &program.slots,
            cpu: self.cpu,
            rng: &mut self.rng,
            log: &mut self.log,
        };
        let result = match &self.jit {
            None => {
                let machine = Machine {
                    code: &program.code,
                    regions: &self.regions,
                    budget: program.budget,
                };
                machine
                    .run([ctx_addr, 0], &mut self.stack, &mut state)
                    .map(|finished| (finished.r0, finished.executed))
            }
            Some(jit) => jit.run(&mut state).map(|r0| (r0, 0)),
        };
        // Also after a fault: the next packet must find the frame clean.
        let high_water = state.high_water;
        self.frame.ran_up_to(high_water);
        let (r0, executed) = result?;
        let ctx = *self.ctx;
        if self
            .frame
            .slice(u64::from(ctx.data), u64::from(ctx.data_end))
            .is_none()
        {
            return Err(VmError::BadContext);
        }
        Ok(RunSummary {
            action: XdpAction::from_code(r0 as u32),
            executed,
        })
    }
}
