//! The policy of a hardware attach, in the order that leaves nothing behind on refusal:
//!
//! 1. our verifier's `nfp` profile (with the model's instruction budget) and the model's map
//!    rules — refuse before anything is loaded;
//! 2. the probe ([`crate::probe`]) — a trivial program bound to the device, closed at once;
//! 3. only then the real load: `loader::Host::attach_offloaded` (maps with `map_ifindex`, the
//!    program with `prog_ifindex`, a `XDP_FLAGS_HW_MODE` link), which removes what it created
//!    if a later step fails.

use std::path::Path;

use loader::{Attached, Host, KernelError, LambdaParams};

use crate::model::NicModel;
use crate::plan::{contract_for, offload_refusals};
use crate::probe::{OffloadSupport, ProbeError, probe};

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
    /// Our verifier or the model refuses the program for the NIC.
    #[error("refused for {nic} offload before loading anything: {}", reasons.join("; "))]
    Refused {
        nic: &'static str,
        reasons: Vec<String>,
    },
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
    pub contract: verifier::Contract,
}

/// Which check a hardware attach makes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOrder {
    /// Our verifier first, so a program the NIC could never run is refused with its reason
    /// even where there is no NIC (`--mode hw`).
    VerifyFirst,
    /// The probe first: it takes a millisecond where the nfp verification of an SDK lambda
    /// takes a few hundred, so hosts without an offload NIC fall through at once
    /// (`--mode auto`).
    ProbeFirst,
}

/// Verifies `object` for `model` and probes `iface` (in `order`), then loads and attaches it
/// offloaded.
pub fn attach_hw(
    host: &Host,
    object: &Path,
    iface: &str,
    params: &LambdaParams,
    model: &'static NicModel,
    order: CheckOrder,
) -> Result<HwOutcome, HwAttachError> {
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
    let (linked, contract) = match contract_for(&bytes, &name, params, model) {
        Ok(ok) => ok,
        Err(e) => {
            return Err(HwAttachError::Refused {
                nic: model.name,
                reasons: vec![e.to_string()],
            });
        }
    };
    let reasons = offload_refusals(model, &linked, &contract);
    if !reasons.is_empty() {
        return Err(HwAttachError::Refused {
            nic: model.name,
            reasons,
        });
    }
    let support = match probed {
        Some(support) => support,
        None => probe_works(iface)?,
    };
    let attached = host.attach_offloaded(object, iface, params)?;
    Ok(HwOutcome {
        attached,
        support,
        contract,
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
