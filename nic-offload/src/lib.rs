//! NIC offload: what a SmartNIC can run ([`model`]), what an interface is and whether it can
//! offload at all ([`discover`], [`probe`]), the policy of a hardware attach ([`attach`]), the
//! capacity planner ([`plan`]) and the workload optimizer that coalesces lambdas into one
//! program without tail calls ([`coalesce`], with its BTF in [`btf`]; [`host`] builds it for
//! `deploy --mode coalesced`), and the lowering that turns an SDK lambda into code the NIC's
//! offload accepts ([`lower`]).
//!
//! The loading itself (maps with `map_ifindex`, the program with `prog_ifindex`, the
//! `XDP_FLAGS_HW_MODE` link) is the kernel backend's: `loader::Host::attach_offloaded_program`,
//! which takes the lowered program's instructions and maps.

pub mod attach;
pub mod btf;
pub mod coalesce;
pub mod discover;
pub mod host;
pub mod lower;
pub mod model;
pub mod plan;
pub mod probe;

pub use attach::{
    CheckOrder, HwAttachError, HwOutcome, HwRequest, NicCheckError, NicReady, attach_hw,
    lower_and_check,
};
pub use coalesce::{
    CoalesceInput, CoalesceReport, Coalesced, CoreProgram, CoreSplit, MatchRule, coalesce,
    coalesce_per_core, pack_cores,
};
pub use discover::{InterfaceInfo, discover};
pub use lower::{LowerError, LowerReport, Lowered, Refusal, lower};
pub use model::{MODELS, NicModel, model};
pub use plan::{LambdaPlan, Plan, PlanError, plan};
pub use probe::{OffloadSupport, probe};
