//! The conclusive probe: load a trivial XDP program (`r0 = XDP_PASS; exit`) bound to the
//! interface (`prog_ifindex`). The kernel hands it to the driver's offload verifier and JIT, so
//! the only answers are "offload works" or a named reason why not. The probe program is closed
//! at once: it was never attached and leaves nothing loaded.

use std::fmt;

use ebpf_isa::Insn;
use loader::kernel::{RawRunError, load_xdp_bound};
use serde::Serialize;

use crate::discover::{InterfaceInfo, discover};

/// The probe's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "offload", rename_all = "snake_case")]
pub enum OffloadSupport {
    /// The device took a program for offload.
    Works { iface: String, driver: String },
    /// It did not; `capability` names what is missing, `reason` says how we know.
    Unsupported {
        iface: String,
        driver: String,
        capability: String,
        reason: String,
    },
}

impl OffloadSupport {
    pub fn works(&self) -> bool {
        matches!(self, OffloadSupport::Works { .. })
    }
}

impl fmt::Display for OffloadSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadSupport::Works { iface, driver } => {
                write!(f, "{iface} (driver {driver}) offloads XDP programs")
            }
            OffloadSupport::Unsupported {
                iface,
                capability,
                reason,
                ..
            } => write!(f, "{iface} cannot offload: {capability} ({reason})"),
        }
    }
}

/// Why the probe could not answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Discover(#[from] crate::discover::DiscoverError),
    #[error(
        "permission denied while probing offload on `{iface}`: needs CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN (run as root)"
    )]
    PermissionDenied { iface: String },
}

/// `r0 = XDP_PASS; exit`.
const PROBE_PROGRAM: [Insn; 2] = [Insn::new(0xb7, 0, 0, 0, 2), Insn::new(0x95, 0, 0, 0, 0)];

/// Probes `iface`: discovery, then the trivial bound load.
pub fn probe(iface: &str) -> Result<OffloadSupport, ProbeError> {
    let info = discover(iface)?;
    let result = load_xdp_bound(&PROBE_PROGRAM, info.ifindex).map(drop);
    classify(&info, result)
}

/// The answer for `info` given what the bound load returned.
pub fn classify(
    info: &InterfaceInfo,
    result: Result<(), RawRunError>,
) -> Result<OffloadSupport, ProbeError> {
    let iface = info.iface.clone();
    let driver = info.driver.clone();
    let unsupported = |capability: String, reason: String| {
        Ok(OffloadSupport::Unsupported {
            iface: iface.clone(),
            driver: driver.clone(),
            capability,
            reason,
        })
    };
    let no_ndo = || {
        format!(
            "driver {driver} has no BPF offload (its ndo_bpf does not support \
             BPF_OFFLOAD_VERIFIER_PREP / XDP_SETUP_PROG_HW)"
        )
    };
    let errno = match result {
        Ok(()) => return Ok(OffloadSupport::Works { iface, driver }),
        Err(RawRunError::PermissionDenied { .. }) => {
            return Err(ProbeError::PermissionDenied { iface });
        }
        Err(RawRunError::VerifierRejected { log, .. }) => {
            // Only a device that takes offloads gets as far as its verifier: a refusal of the
            // trivial program means the firmware lacks the BPF application.
            return unsupported(
                format!("firmware of {driver} refuses even a trivial program"),
                log.lines().last().unwrap_or_default().to_owned(),
            );
        }
        Err(RawRunError::Syscall { source, .. }) => source,
        Err(other) => return unsupported(no_ndo(), other.to_string()),
    };
    let code = errno.raw_os_error().unwrap_or(0);
    match code {
        // The kernel finds no offload device behind the netdev (bpf_offload_dev_netdev lookup
        // fails: EINVAL), or the driver's ndo_bpf answers the verifier-prep command with
        // EOPNOTSUPP.
        libc::EINVAL | libc::EOPNOTSUPP => unsupported(
            no_ndo(),
            format!("BPF_PROG_LOAD with prog_ifindex {}: {errno}", info.ifindex),
        ),
        libc::ENODEV | libc::ENXIO => unsupported(
            format!("interface {iface} went away during the probe"),
            errno.to_string(),
        ),
        libc::EBUSY => unsupported(
            format!("the {driver} offload is busy (another program is offloaded to the device)"),
            errno.to_string(),
        ),
        libc::ENOMEM | libc::ENOSPC => unsupported(
            format!("the {driver} device has no room for a program"),
            errno.to_string(),
        ),
        _ => unsupported(
            format!("offload refused by {driver}"),
            format!("BPF_PROG_LOAD with prog_ifindex {}: {errno}", info.ifindex),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> InterfaceInfo {
        InterfaceInfo {
            iface: "veth0".into(),
            ifindex: 7,
            driver: "veth".into(),
            tc_offload: Some(false),
        }
    }

    #[test]
    fn errnos_become_named_capabilities() {
        let syscall = |code| {
            Err(RawRunError::Syscall {
                operation: "BPF_PROG_LOAD",
                source: std::io::Error::from_raw_os_error(code),
            })
        };
        for code in [libc::EINVAL, libc::EOPNOTSUPP] {
            match classify(&info(), syscall(code)).unwrap() {
                OffloadSupport::Unsupported { capability, .. } => assert_eq!(
                    capability,
                    "driver veth has no BPF offload (its ndo_bpf does not support \
                     BPF_OFFLOAD_VERIFIER_PREP / XDP_SETUP_PROG_HW)"
                ),
                other => panic!("{other:?}"),
            }
        }
        assert!(classify(&info(), Ok(())).unwrap().works());
        assert!(matches!(
            classify(
                &info(),
                Err(RawRunError::PermissionDenied {
                    operation: "loading a program",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                })
            ),
            Err(ProbeError::PermissionDenied { .. })
        ));
    }

    #[test]
    fn loopback_does_not_offload() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: the offload probe loads a program (needs root)");
            return;
        }
        let answer = probe("lo").unwrap();
        assert!(!answer.works(), "{answer}");
        assert!(
            answer.to_string().contains("has no BPF offload"),
            "{answer}"
        );
    }
}
