//! NIC models as data: what each offload target accepts and how fast it runs.
//!
//! Sources, by field (the Linux nfp driver is the authority on what the offload accepts, since
//! its JIT and verifier hooks decide; the firmware reports the numeric limits at probe time
//! through capability TLVs, so the numbers here are the values our planning assumes):
//!
//! - helpers: `drivers/net/ethernet/netronome/nfp/bpf/verifier.c`
//!   (`nfp_bpf_check_helper_call`) accepts `bpf_map_lookup_elem`, `bpf_map_update_elem`,
//!   `bpf_map_delete_elem`, `bpf_get_prandom_u32`, `bpf_perf_event_output`, and
//!   `bpf_xdp_adjust_head` / `bpf_xdp_adjust_tail` when the firmware advertises them
//!   (`NFP_BPF_CAP_TYPE_ADJUST_HEAD` / `_ADJUST_TAIL` in `bpf/fw.h`).
//! - map types: `bpf/offload.c` (`nfp_bpf_map_alloc`) refuses any type the firmware's
//!   `maps.types` bitmap lacks (EOPNOTSUPP); the firmware offers ARRAY and HASH. It also
//!   refuses any `map_flags` (EINVAL), so read-only global data (`BPF_F_RDONLY_PROG`) cannot
//!   be offloaded as such, and element sizes with `round_up(key, 8) + round_up(value, 8) >
//!   maps.max_elem_sz` (E2BIG).
//! - entry size, total entries, instruction budget: the firmware's values are read at probe
//!   time (`nfp_bpf_parse_cap_maps`, `NFP_NET_CFG_BPF_MAX_LEN`); the figures below are the ones
//!   reported for Agilio CX firmware in CentaurusInfra/mizar's offload design notes
//!   (`docs/design/features/offload_XDP/design_and_limitations.md`: ≤ 64 bytes per entry,
//!   < 3,072,000 entries in total, at most 2800 instructions on the NIC, no XDP_REDIRECT).
//! - stack: the nfp JIT refuses programs whose stack exceeds the firmware's
//!   (`NFP_NET_CFG_BPF_STACK_SZ`, in 64-byte units, checked in `bpf/verifier.c`); 512 bytes is the
//!   eBPF maximum and what Agilio firmware reports.
//! - cores and clock: the NFP-4000 has 60 flow processing cores (Netronome, "NFP-4000 Theory of
//!   Operation" white paper); Agilio CX firmware leaves 48 of them to the datapath program in the
//!   configuration the λ-NIC issue describes ("48 or 60 cores"), so both are models here. 800 MHz
//!   is the NFP-4000 FPC clock of the white paper's family; treat cycle figures as estimates.
//! - XDP actions: the nfp JIT implements XDP_ABORTED, XDP_DROP, XDP_PASS and XDP_TX; it has no
//!   XDP_REDIRECT (no `bpf_redirect*` helpers in its list, and the mizar notes above).

use serde::Serialize;

/// `BPF_MAP_TYPE_HASH`.
pub const MAP_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const MAP_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERF_EVENT_ARRAY` (only as the target of `bpf_perf_event_output`).
pub const MAP_PERF_EVENT_ARRAY: u32 = 4;

/// What one SmartNIC model offers an offloaded XDP program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NicModel {
    /// The name `--nic` takes.
    pub name: &'static str,
    pub description: &'static str,
    /// Cores that run the offloaded program; each holds one copy of it.
    pub cores: u32,
    /// eBPF instructions one core's code store takes (after the driver's own prologue).
    pub insn_budget: usize,
    /// Stack bytes the firmware gives a program.
    pub stack_bytes: u32,
    /// `BPF_MAP_TYPE_*` the firmware can hold.
    pub map_types: &'static [u32],
    /// Largest `round_up(key, 8) + round_up(value, 8)` of a map element, in bytes.
    pub max_elem_bytes: u32,
    /// Entries over all maps of the device.
    pub max_total_entries: u64,
    /// `(id, name)` of each helper the offload JIT accepts.
    pub helpers: &'static [(i32, &'static str)],
    /// XDP actions the offload implements.
    pub xdp_actions: &'static [&'static str],
    /// Core clock, MHz (for the planner's cycle and latency estimates).
    pub clock_mhz: u32,
    /// Estimated NFP cycles per eBPF instruction: the nfp JIT emits one to a few NFP
    /// instructions per eBPF instruction (more for 64-bit ALU on the 32-bit cores), each one
    /// cycle when the thread runs. 2 is our planning estimate, not a measured figure.
    pub cycles_per_insn: u64,
    /// Estimated cycles of one map helper call: a lookup goes to the NFP's external memory
    /// through the memory unit's hash engine; a few hundred cycles is the planning estimate.
    pub cycles_per_map_call: u64,
}

const NFP_HELPERS: &[(i32, &str)] = &[
    (1, "bpf_map_lookup_elem"),
    (2, "bpf_map_update_elem"),
    (3, "bpf_map_delete_elem"),
    (7, "bpf_get_prandom_u32"),
    (25, "bpf_perf_event_output"),
    (44, "bpf_xdp_adjust_head"),
    (65, "bpf_xdp_adjust_tail"),
];

const NFP_ACTIONS: &[&str] = &["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX"];

/// Every model `--nic` knows.
pub const MODELS: &[NicModel] = &[
    NicModel {
        name: "nfp-4000",
        description: "Netronome NFP-4000 (all 60 flow processing cores)",
        cores: 60,
        insn_budget: 2800,
        stack_bytes: 512,
        map_types: &[MAP_HASH, MAP_ARRAY, MAP_PERF_EVENT_ARRAY],
        max_elem_bytes: 64,
        max_total_entries: 3_072_000,
        helpers: NFP_HELPERS,
        xdp_actions: NFP_ACTIONS,
        clock_mhz: 800,
        cycles_per_insn: 2,
        cycles_per_map_call: 300,
    },
    NicModel {
        name: "agilio-cx",
        description: "Netronome Agilio CX (NFP-4000, 48 cores for the datapath program)",
        cores: 48,
        insn_budget: 2800,
        stack_bytes: 512,
        map_types: &[MAP_HASH, MAP_ARRAY, MAP_PERF_EVENT_ARRAY],
        max_elem_bytes: 64,
        max_total_entries: 3_072_000,
        helpers: NFP_HELPERS,
        xdp_actions: NFP_ACTIONS,
        clock_mhz: 800,
        cycles_per_insn: 2,
        cycles_per_map_call: 300,
    },
];

/// The model called `name` (case-insensitive).
pub fn model(name: &str) -> Option<&'static NicModel> {
    MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

impl NicModel {
    /// Our verifier's options for judging a program for this NIC under `limits`: the `kernel`
    /// profile (the host loads it too) and the `nfp` profile with this model's instruction
    /// budget.
    pub fn verifier_options(&self, limits: &loader::verify::Limits) -> verifier::Options {
        let mut options = limits.options(verifier::Backend::Kernel, 1);
        options.profiles = vec![verifier::Backend::Kernel, verifier::Backend::Nfp];
        options.nfp_insn_budget = self.insn_budget;
        options
    }

    /// Whether the offload accepts helper `id`.
    pub fn has_helper(&self, id: i32) -> bool {
        self.helpers.iter().any(|&(h, _)| h == id)
    }

    /// Whether the firmware can hold maps of `map_type`.
    pub fn has_map_type(&self, map_type: u32) -> bool {
        self.map_types.contains(&map_type)
    }

    /// The element size the firmware counts: key and value each rounded up to 8 bytes.
    pub fn elem_bytes(key_size: u32, value_size: u32) -> u32 {
        key_size.next_multiple_of(8) + value_size.next_multiple_of(8)
    }

    /// The names of the models, for help and error messages.
    pub fn names() -> String {
        MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_agree_with_the_verifiers_nfp_helper_list() {
        // The verifier's nfp profile and the model must not drift apart: every helper the
        // profile allows is in the model (the model may add adjust_head/tail, which the
        // profile also allows).
        for helper in verifier::helpers::HELPERS {
            let in_model = model("nfp-4000").unwrap().has_helper(helper.id);
            assert_eq!(
                helper.allowed_on(verifier::Backend::Nfp),
                in_model,
                "{} differs between the verifier's nfp profile and the model",
                helper.name
            );
        }
    }

    #[test]
    fn models_are_found_by_name_and_sizes_round_like_the_firmware() {
        assert_eq!(model("NFP-4000").unwrap().cores, 60);
        assert_eq!(model("agilio-cx").unwrap().cores, 48);
        assert!(model("connectx-6").is_none());
        assert_eq!(NicModel::elem_bytes(4, 8), 16);
        assert_eq!(NicModel::elem_bytes(5, 57), 72);
        assert!(NicModel::names().contains("nfp-4000"));
    }
}
