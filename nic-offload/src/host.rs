//! The coalescer as the kernel backend's builder for `deploy --mode coalesced`
//! ([`loader::Host::deploy_coalesced`]): links each lambda for its rule, coalesces them, checks
//! the kernel's structural limits and runs our verifier (kernel profile) on the result.

use loader::kernel::{CoalesceMember, CoalescedProgram, MAX_USED_MAPS};
use loader::link::LinkedProgram;
use loader::verify::{Limits, verify_linked};

use crate::attach::lower_and_check;
use crate::coalesce::{
    CoalesceError, CoalesceInput, CoalesceReport, MatchRule, coalesce, pack_cores,
};
use crate::lower::LowerReport;

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
    #[error(
        "lambda `{lambda}` is recorded as lowered for `{nic}`, which is not a NIC model (known: {})",
        crate::NicModel::names()
    )]
    UnknownModel { lambda: String, nic: String },
    /// A lambda deployed with `--lower` that the lowering or the NIC model refuses.
    #[error(transparent)]
    Lowering(#[from] crate::attach::NicCheckError),
}

/// What [`build`] checked, for the CLI to report.
#[derive(Clone, Debug)]
pub struct HostBuild {
    pub report: CoalesceReport,
    /// Our verifier's bound on the instructions one request executes.
    pub max_insns_executed: u64,
    /// The limits it was verified with ([`combined_limits`]).
    pub limits: Limits,
    /// What the lowering did to each lowered member, in member order (empty when none is).
    pub lowered: Vec<LowerReport>,
    /// For lowered members: the model, and how many of its cores one copy of them needs.
    pub nic_cores: Option<(&'static str, usize)>,
}

/// The limits the coalesced program of `members` is verified with, from the limits each was
/// deployed with: a request runs the dispatch and ONE lambda, so the instruction and stack
/// bounds are the largest any member was admitted with (each lambda alone was checked against
/// its own at deploy); map memory is per lambda, as in tail-call mode, so the bounds add up.
pub fn combined_limits(members: &[CoalesceMember]) -> Limits {
    if members.is_empty() {
        return Limits::default();
    }
    Limits {
        max_insns: members
            .iter()
            .map(|m| m.limits.max_insns)
            .max()
            .unwrap_or(0),
        max_stack: members
            .iter()
            .map(|m| m.limits.max_stack)
            .max()
            .unwrap_or(0),
        max_map_bytes: members
            .iter()
            .fold(0u64, |sum, m| sum.saturating_add(m.limits.max_map_bytes)),
    }
}

/// Coalesces `members` into one program for the host and verifies it with their
/// [`combined_limits`].
pub fn build(
    members: &[CoalesceMember],
) -> Result<(CoalescedProgram, HostBuild), HostCoalesceError> {
    let limits = combined_limits(members);
    let mut inputs = Vec::with_capacity(members.len());
    let mut lowered = Vec::new();
    let mut nic = None;
    for m in members {
        let rule = MatchRule {
            port: m.rule.port,
            lambda_id: m.rule.lambda_id,
        };
        let input = CoalesceInput::from_object(&m.bytes, &m.name, rule).map_err(|source| {
            HostCoalesceError::Link {
                lambda: m.name.clone(),
                source: Box::new(source),
            }
        })?;
        match &m.lower {
            None => inputs.push(input),
            Some(name) => {
                // What the NIC would get: lowered, and accepted for it lambda by lambda (each
                // would run on the NIC's cores; the host program holds them all).
                let model =
                    crate::model::model(name).ok_or_else(|| HostCoalesceError::UnknownModel {
                        lambda: m.name.clone(),
                        nic: name.clone(),
                    })?;
                let ready = lower_and_check(&input, model, &m.limits)?;
                lowered.push(ready.report);
                inputs.push(ready.input);
                nic = Some(model);
            }
        }
    }
    let nic_cores = nic.map(|model| {
        let sizes: Vec<usize> = members
            .iter()
            .zip(&inputs)
            .filter(|(m, _)| m.lower.is_some())
            .map(|(_, i)| i.linked.insns.len())
            .collect();
        (model.name, pack_cores(model, &sizes).core_insns.len())
    });
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
            limits,
            lowered,
            nic_cores,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, max_insns: u64, max_stack: u32, max_map_bytes: u64) -> CoalesceMember {
        CoalesceMember {
            name: name.into(),
            bytes: vec![],
            rule: "port=9000".parse().unwrap(),
            limits: Limits {
                max_insns,
                max_stack,
                max_map_bytes,
            },
            lower: None,
        }
    }

    #[test]
    fn limits_combine_per_request_bounds_by_max_and_map_memory_by_sum() {
        let members = [member("a", 500, 256, 1000), member("b", 90_000, 64, 24)];
        assert_eq!(
            combined_limits(&members),
            Limits {
                max_insns: 90_000,
                max_stack: 256,
                max_map_bytes: 1024,
            }
        );
        assert_eq!(combined_limits(&[]), Limits::default());
        let one = [member("a", 7, 8, 9)];
        assert_eq!(combined_limits(&one), one[0].limits);
    }
}
