//! The policy of a hardware attach, in the order that leaves nothing behind on refusal:
//!
//! 1. the NFP lowering pass ([`crate::lower`]) on the whole linked program — logs made
//!    no-ops, `.rodata` folded, per-CPU counters made atomic adds on plain maps — and then our
//!    verifier's `nfp` profile (with the model's instruction budget) and the model's map rules
//!    on the LOWERED program ([`lower_and_check`]); no SDK lambda passes them as written.
//!    Either refuses before anything is loaded, with every reason;
//! 2. the probe ([`crate::probe`]) — a trivial program bound to the device, closed at once
//!    (first, before step 1, with [`CheckOrder::ProbeFirst`]);
//! 3. only then the real load of the lowered program: `loader::Host::attach_offloaded_program`
//!    (its maps, as the lowering left them, with `map_ifindex`; the program with
//!    `prog_ifindex`; a `XDP_FLAGS_HW_MODE` link), which removes what it created if a later
//!    step fails.

use std::path::Path;

use loader::kernel::OffloadProgram;
use loader::verify::{Limits, VerifyError, verify_linked};
use loader::{Attached, Host, KernelError, LambdaParams};
use verifier::Contract;

use crate::coalesce::{CoalesceInput, MatchRule};
use crate::lower::{LowerError, LowerReport, lower};
use crate::model::NicModel;
use crate::plan::offload_refusals;
use crate::probe::{OffloadSupport, ProbeError, probe};

/// A lambda lowered for a NIC model and accepted for it: what the NIC would get.
#[derive(Clone, Debug)]
pub struct NicReady {
    /// The lowered lambda (its maps as the lowering left them, its seeds by their index).
    pub input: CoalesceInput,
    /// What the lowering did.
    pub report: LowerReport,
    /// Our verifier's contract of the lowered program (kernel and nfp profiles).
    pub contract: Contract,
}

/// Why a lambda cannot go to a NIC model, found before anything is loaded.
#[derive(Debug, thiserror::Error)]
pub enum NicCheckError {
    /// The lowering pass refuses it (each reason named, with the object's instructions).
    #[error(
        "`{lambda}` is refused for {nic} before anything is loaded: the NFP lowering pass cannot make it fit: {} (lowered as far as it goes: {})",
        reasons.join("; "),
        report.summary()
    )]
    Lowering {
        lambda: String,
        nic: &'static str,
        reasons: Vec<String>,
        report: Box<LowerReport>,
    },
    /// Lowered, it is still refused by our verifier's nfp profile or the model's rules.
    #[error(
        "`{lambda}` is refused for {nic} before anything is loaded: lowered ({}), {}",
        report.summary(),
        reasons.join("; ")
    )]
    Refused {
        lambda: String,
        nic: &'static str,
        reasons: Vec<String>,
        report: Box<LowerReport>,
    },
    /// The lowered program is not one our verifier accepts at all (kernel profile).
    #[error("`{lambda}` lowered for {nic}: {source}")]
    Verify {
        lambda: String,
        nic: &'static str,
        #[source]
        source: Box<VerifyError>,
    },
    /// The lowering could not read the program.
    #[error(transparent)]
    Malformed(LowerError),
}

impl NicCheckError {
    /// What the lowering did before the refusal, when it ran.
    pub fn report(&self) -> Option<&LowerReport> {
        match self {
            NicCheckError::Lowering { report, .. } | NicCheckError::Refused { report, .. } => {
                Some(report)
            }
            _ => None,
        }
    }
}

/// Lowers `input` for `model` ([`crate::lower`]) and checks the result with our verifier's
/// kernel and nfp profiles (the model's instruction budget, `limits`) and the model's own
/// rules ([`offload_refusals`]): the program the NIC would get, or every reason it cannot.
pub fn lower_and_check(
    input: &CoalesceInput,
    model: &'static NicModel,
    limits: &Limits,
) -> Result<NicReady, NicCheckError> {
    let lowered = match lower(input, model) {
        Ok(lowered) => lowered,
        Err(LowerError::Refused {
            refusals, report, ..
        }) => {
            return Err(NicCheckError::Lowering {
                lambda: input.name.clone(),
                nic: model.name,
                reasons: refusals.iter().map(ToString::to_string).collect(),
                report,
            });
        }
        Err(e) => return Err(NicCheckError::Malformed(e)),
    };
    let options = model.verifier_options(limits);
    let contract =
        verify_linked(&lowered.input.linked, &options).map_err(|source| NicCheckError::Verify {
            lambda: input.name.clone(),
            nic: model.name,
            source: Box::new(source),
        })?;
    let reasons = offload_refusals(model, &lowered.input.linked, &contract);
    if !reasons.is_empty() {
        return Err(NicCheckError::Refused {
            lambda: input.name.clone(),
            nic: model.name,
            reasons,
            report: Box::new(lowered.report),
        });
    }
    Ok(NicReady {
        input: lowered.input,
        report: lowered.report,
        contract,
    })
}

/// Why a hardware attach did not happen. Every variant but [`HwAttachError::Kernel`] is raised
/// before anything was loaded.
#[derive(Debug, thiserror::Error)]
pub enum HwAttachError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("linking {}: {source}", path.display())]
    Link {
        path: std::path::PathBuf,
        #[source]
        source: Box<loader::link::LinkError>,
    },
    /// The lowering, our verifier or the model refuses the program for the NIC.
    #[error(transparent)]
    Refused(#[from] NicCheckError),
    /// The device cannot offload.
    #[error("{support}")]
    NoOffload { support: OffloadSupport },
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The offloaded load or attach itself failed (and was undone).
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl HwAttachError {
    /// Whether trying another mode makes sense (not for permission problems or a missing
    /// interface, which every mode would hit again).
    pub fn falls_through(&self) -> bool {
        !matches!(
            self,
            HwAttachError::Read { .. }
                | HwAttachError::Link { .. }
                | HwAttachError::Probe(ProbeError::PermissionDenied { .. })
                | HwAttachError::Probe(ProbeError::Discover(
                    crate::discover::DiscoverError::NoSuchInterface { .. },
                ))
                | HwAttachError::Kernel(KernelError::PermissionDenied { .. })
                | HwAttachError::Kernel(KernelError::NoSuchInterface { .. })
                | HwAttachError::Kernel(KernelError::AlreadyAttached { .. })
        )
    }
}

/// The steps a hardware attach passed, for the caller to report.
#[derive(Clone, Debug)]
pub struct HwOutcome {
    pub attached: Attached,
    pub support: OffloadSupport,
    /// Our verifier's contract of the program loaded (the lowered one).
    pub contract: Contract,
    /// What the lowering did to it.
    pub lowering: LowerReport,
}

/// Which check a hardware attach makes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOrder {
    /// Lowering and our verifier first, so a program the NIC could never run is refused with
    /// its reason even where there is no NIC (`--mode hw`).
    VerifyFirst,
    /// The probe first: it takes a millisecond where lowering and the nfp verification of an
    /// SDK lambda take a few hundred, so hosts without an offload NIC fall through at once
    /// (`--mode auto`).
    ProbeFirst,
}

/// What to offload where: `object` linked for `params`, lowered for `model` and checked with
/// `limits`, onto the NIC behind `iface`, the checks in `order`.
#[derive(Clone, Debug)]
pub struct HwRequest<'a> {
    pub object: &'a Path,
    pub iface: &'a str,
    pub params: LambdaParams,
    pub model: &'static NicModel,
    pub order: CheckOrder,
    pub limits: Limits,
}

/// Lowers the object for the model and checks it ([`lower_and_check`]), probes the interface
/// (in the request's order), then loads the lowered program and attaches it offloaded.
/// `prepared` is called with the lowered, checked program before the probe (or, probe first,
/// before loading), so the caller can say what the lowering did even when the probe then
/// says no.
pub fn attach_hw(
    host: &Host,
    request: &HwRequest<'_>,
    prepared: &mut dyn FnMut(&NicReady),
) -> Result<HwOutcome, HwAttachError> {
    let HwRequest {
        object,
        iface,
        params,
        model,
        order,
        ref limits,
    } = *request;
    let params = &params;
    let probed = match order {
        CheckOrder::ProbeFirst => Some(probe_works(iface)?),
        CheckOrder::VerifyFirst => None,
    };
    let bytes = std::fs::read(object).map_err(|source| HwAttachError::Read {
        path: object.to_owned(),
        source,
    })?;
    let name = object
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lambda".to_owned());
    let rule = MatchRule {
        port: params.port,
        lambda_id: params.lambda_id,
    };
    let input =
        CoalesceInput::from_object(&bytes, &name, rule).map_err(|source| HwAttachError::Link {
            path: object.to_owned(),
            source: Box::new(source),
        })?;
    let ready = lower_and_check(&input, model, limits)?;
    prepared(&ready);
    let support = match probed {
        Some(support) => support,
        None => probe_works(iface)?,
    };
    let attached = host.attach_offloaded_program(
        &OffloadProgram {
            object,
            lambda: &name,
            linked: &ready.input.linked,
            seeds: &ready.input.seeds,
            params: *params,
        },
        iface,
    )?;
    Ok(HwOutcome {
        attached,
        support,
        contract: ready.contract,
        lowering: ready.report,
    })
}

/// The probe's answer when offload works, else the error that names why not.
fn probe_works(iface: &str) -> Result<OffloadSupport, HwAttachError> {
    let support = probe(iface)?;
    if support.works() {
        Ok(support)
    } else {
        Err(HwAttachError::NoOffload { support })
    }
}
