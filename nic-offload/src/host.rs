//! The coalescer as the kernel backend's builder for `deploy --mode coalesced`
//! ([`loader::Host::deploy_coalesced`]): links each lambda for its rule, coalesces them, checks
//! the kernel's structural limits and runs our verifier (kernel profile) on the result.

use loader::kernel::{CoalesceMember, CoalescedProgram, MAX_USED_MAPS};
use loader::link::LinkedProgram;
use loader::verify::{Limits, verify_linked};

use crate::coalesce::{CoalesceError, CoalesceInput, CoalesceReport, MatchRule, coalesce};

/// The kernel's limit on the functions of one program (`BPF_MAX_SUBPROGS`).
pub const MAX_SUBPROGS: usize = 256;

/// Why the lambdas of an interface cannot run as one host program.
#[derive(Debug, thiserror::Error)]
pub enum HostCoalesceError {
    #[error("linking `{lambda}`: {source}")]
    Link {
        lambda: String,
        #[source]
        source: Box<loader::link::LinkError>,
    },
    #[error(transparent)]
    Coalesce(#[from] CoalesceError),
    #[error(
        "the coalesced program of {lambdas} lambdas uses {maps} maps; the kernel lets one program use at most {MAX_USED_MAPS} (MAX_USED_MAPS): deploy the rest in tail-call mode on another interface"
    )]
    TooManyMaps { lambdas: usize, maps: usize },
    #[error(
        "the coalesced program of {lambdas} lambdas has {functions} functions; the kernel takes at most {MAX_SUBPROGS} per program (BPF_MAX_SUBPROGS): deploy the rest in tail-call mode on another interface"
    )]
    TooManyFunctions { lambdas: usize, functions: usize },
    #[error("our verifier (kernel profile) rejects the coalesced program: {0}")]
    Rejected(String),
}

/// What [`build`] checked, for the CLI to report.
#[derive(Clone, Debug)]
pub struct HostBuild {
    pub report: CoalesceReport,
    /// Our verifier's bound on the instructions one request executes.
    pub max_insns_executed: u64,
}

/// Coalesces `members` into one program for the host and verifies it with `limits` (the map
/// memory limit applies per lambda, as it does in tail-call mode).
pub fn build(
    members: &[CoalesceMember],
    limits: &Limits,
) -> Result<(CoalescedProgram, HostBuild), HostCoalesceError> {
    let mut inputs = Vec::with_capacity(members.len());
    for m in members {
        let rule = MatchRule {
            port: m.rule.port,
            lambda_id: m.rule.lambda_id,
        };
        inputs.push(
            CoalesceInput::from_object(&m.bytes, &m.name, rule).map_err(|source| {
                HostCoalesceError::Link {
                    lambda: m.name.clone(),
                    source: Box::new(source),
                }
            })?,
        );
    }
    let coalesced = coalesce(&inputs)?;
    if coalesced.maps.len() > MAX_USED_MAPS {
        return Err(HostCoalesceError::TooManyMaps {
            lambdas: members.len(),
            maps: coalesced.maps.len(),
        });
    }
    let functions = coalesced.btf.func_info.len();
    if functions > MAX_SUBPROGS {
        return Err(HostCoalesceError::TooManyFunctions {
            lambdas: members.len(),
            functions,
        });
    }
    let program = LinkedProgram {
        lambda: "coalesced".into(),
        program: "coalesced".into(),
        section: "xdp".into(),
        insns: coalesced.insns.clone(),
        maps: coalesced.maps.clone(),
        lines: vec![],
    };
    let mut options = limits.options(
        verifier::Backend::Kernel,
        loader::maps::possible_cpus().map_or(1, |n| n as u32),
    );
    // The lambda entries are BTF global functions: the kernel verifies each on its own.
    options.global_functions = coalesced.entries.clone();
    options.max_map_bytes = limits
        .max_map_bytes
        .saturating_mul(members.len().max(1) as u64);
    let contract = verify_linked(&program, &options)
        .map_err(|e| HostCoalesceError::Rejected(e.to_string()))?;
    Ok((
        CoalescedProgram {
            insns: coalesced.insns,
            maps: coalesced.maps,
            seeds: coalesced.seeds,
            btf: Some(coalesced.btf),
        },
        HostBuild {
            report: coalesced.report,
            max_insns_executed: contract.max_insns_executed,
        },
    ))
}
