//! Errors of the kernel backend, and the kernel verifier's log.

use std::{error::Error as StdError, fmt, io, path::Path, path::PathBuf};

use super::{ModeUsed, VERIFIER_LOG_TAIL};
use crate::image::ImageError;

/// The kernel's verifier log for a rejected program.
///
/// `Display` shows the last [`VERIFIER_LOG_TAIL`] lines and how many were omitted (the failing
/// instruction and the kernel's reason are at the end); [`VerifierLog::full`] has everything.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierLog(String);

impl VerifierLog {
    pub fn new(log: impl Into<String>) -> VerifierLog {
        VerifierLog(log.into())
    }

    /// The whole log as the kernel wrote it.
    pub fn full(&self) -> &str {
        &self.0
    }

    /// The last `keep` non-blank lines, preceded by a count of the lines left out.
    pub fn trimmed(&self, keep: usize) -> String {
        let lines: Vec<&str> = self
            .0
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect();
        let omitted = lines.len().saturating_sub(keep);
        let mut out = String::new();
        if omitted > 0 {
            out.push_str(&format!("[… {omitted} earlier lines omitted]\n"));
        }
        out.push_str(&lines[omitted..].join("\n"));
        out
    }

    /// Number of non-blank lines.
    pub fn line_count(&self) -> usize {
        self.0.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

impl fmt::Display for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.trimmed(VERIFIER_LOG_TAIL))
    }
}

impl fmt::Debug for VerifierLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierLog({} lines)", self.line_count())
    }
}

/// Errors of the kernel backend.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Image(#[from] ImageError),

    #[error("cannot read {}: {source}", path.display())]
    ReadObject {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "permission denied while {operation}: λ-NIC needs CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN (run as root){}",
        detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    PermissionDenied {
        operation: String,
        detail: Option<String>,
    },

    #[error("no such network interface `{iface}` in this network namespace")]
    NoSuchInterface { iface: String },

    #[error("kernel verifier rejected program `{program}`:\n{log}")]
    VerifierRejected {
        program: String,
        errno: io::Error,
        log: VerifierLog,
    },

    #[error("attaching to `{iface}` in {mode} mode failed: {reason}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    AttachFailed {
        iface: String,
        mode: ModeUsed,
        reason: String,
        hint: Option<&'static str>,
    },

    #[error(
        "attaching to `{iface}` failed in both modes: drv: {drv_reason}; skb: {skb_reason}{}",
        hint.map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    AttachFailedAuto {
        iface: String,
        drv_reason: String,
        skb_reason: String,
        hint: Option<&'static str>,
    },

    /// A step of a hardware-offload attach failed ([`super::Host::attach_offloaded`]).
    #[error("offloading to `{iface}` failed while {step}: {reason}")]
    OffloadFailed {
        iface: String,
        step: String,
        reason: String,
    },

    #[error(
        "attachment on `{iface}` is not a bpf_link (aya fell back to netlink), so it cannot be pinned"
    )]
    NotALink { iface: String },

    #[error("`{iface}` already has a λ-NIC attachment ({}); run detach first", path.display())]
    AlreadyAttached { iface: String, path: PathBuf },

    #[error("`{iface}` has no λ-NIC attachment in this network namespace")]
    NotAttached { iface: String },

    /// The lambda has no log ring buffer: it never calls `lambda_ebpf::log`.
    #[error("lambda `{lambda}` on `{iface}` does not log (its object has no LNIC_LOG map)")]
    NoLog { iface: String, lambda: String },

    /// The lambda runs lowered for a NIC (`attach --mode hw`, `deploy --lower`): the lowering
    /// made its log lines no-ops.
    #[error(
        "lambda `{lambda}` on `{iface}` runs lowered for {nic}, which leaves it no log: the lowering makes log lines no-ops (the NIC has no ring buffer to carry them)"
    )]
    LogsLowered {
        iface: String,
        lambda: String,
        nic: String,
    },

    #[error("bpffs at {}: {reason}", path.display())]
    Bpffs { path: PathBuf, reason: String },

    #[error("object has no program `{program}` after load")]
    MissingProgram { program: String },

    #[error(
        "pinned map {} does not match the object's `{map}`: {field} is {pinned} there, {expected} in the object (detach first, or remove the pin)",
        path.display()
    )]
    MapMismatch {
        map: String,
        path: PathBuf,
        field: &'static str,
        pinned: u32,
        expected: u32,
    },

    #[error(
        "map {map}: {} in the running lambda, {} in the new object{} (the pinned map at {} keeps the running lambda's state and cannot change shape; detach first to start over with empty maps, or rename the map in the new version)",
        describe_map_field(field, *running),
        describe_map_value(field, *new),
        if *field == "max entries" { ", which must have at least as many" } else { "" },
        path.display()
    )]
    UpgradeIncompatible {
        map: String,
        path: PathBuf,
        /// `type`, `key size`, `value size` or `max entries`.
        field: &'static str,
        running: u32,
        new: u32,
    },

    #[error(
        "the λ-NIC attachment on `{iface}` is not live ({reason}): nothing to upgrade; detach and attach instead"
    )]
    NotLive { iface: String, reason: String },

    #[error(
        "the lambda on `{iface}` is offloaded to the NIC (hw mode): upgrade and rollback swap programs on the host only; detach and attach --mode hw instead"
    )]
    OffloadedUpgrade { iface: String },

    #[error("`{iface}` has no previous version to roll back to (it was attached, not upgraded)")]
    NoPreviousVersion { iface: String },

    #[error("cannot roll `{iface}` back to program {program_id} ({object}): {reason}", object = object.display())]
    PreviousUnavailable {
        iface: String,
        program_id: u32,
        object: PathBuf,
        reason: String,
    },

    #[error(
        "the link on `{iface}` no longer runs program {expected} (now {found}): someone else replaced it during this swap; nothing was changed, check `lambdactl ls` and retry"
    )]
    ConcurrentChange {
        iface: String,
        expected: u32,
        found: u32,
    },

    #[error("seeding map `{map}`: record {index}: {source}")]
    Seed {
        map: String,
        index: usize,
        #[source]
        source: io::Error,
    },

    #[error("cannot seed map `{map}`: {reason}")]
    SeedUnsupported { map: String, reason: String },

    #[error("test-run packet of {len} bytes is shorter than an Ethernet header (14)")]
    PacketTooShort { len: usize },

    #[error("{operation}: {}", chain(source.as_ref()))]
    Aya {
        operation: String,
        #[source]
        source: Box<dyn StdError + Send + Sync + 'static>,
    },

    #[error("{operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("reading the statistics of program {program_id}: {source}")]
    ProgramInfo {
        program_id: u32,
        #[source]
        source: io::Error,
    },

    #[error("`{name}` is not a valid lambda name: {reason}")]
    BadLambdaName { name: String, reason: &'static str },

    #[error(
        "a lambda named `{name}` is already deployed (on `{iface}`); undeploy it first or pick another name"
    )]
    AlreadyDeployed { name: String, iface: String },

    #[error("no lambda named `{name}` is deployed in this network namespace (see `lambdactl ls`)")]
    NotDeployed { name: String },

    #[error("match rule {rule} on `{iface}` is already held by lambda `{holder}`")]
    RuleTaken {
        rule: crate::dispatch::MatchRule,
        iface: String,
        holder: String,
    },

    #[error(
        "`{iface}` has a lambda attached alone (`{lambda}`, by `lambdactl attach`); detach it before deploying behind a dispatcher"
    )]
    AttachedAlone { iface: String, lambda: String },

    #[error(
        "`{iface}` has a dispatcher with deployed lambdas; `attach` needs the interface to itself (use `deploy`, or undeploy them first)"
    )]
    HasDispatcher { iface: String },

    #[error(
        "`{iface}` runs a coalesced program of deployed lambdas; `attach` needs the interface to itself (use `deploy --mode coalesced`, or undeploy them first)"
    )]
    HasCoalesced { iface: String },

    #[error(
        "`{iface}` runs lambdas deployed in {running} mode; one interface's lambdas are all tail-call or all coalesced: undeploy them first, or deploy in {asked} mode on another interface"
    )]
    ModeConflict {
        iface: String,
        running: &'static str,
        asked: &'static str,
    },

    #[error(
        "`{iface}` runs its coalesced program in {running} mode, attached by its first deploy; --xdp {asked} would need another attachment: undeploy its lambdas first, or deploy without --xdp (or with --xdp {running})"
    )]
    CoalescedXdpConflict {
        iface: String,
        running: ModeUsed,
        asked: &'static str,
    },

    /// Lowered and unlowered coalesced lambdas (or lambdas lowered for different NIC models)
    /// on one interface: refused, see [`super::Host::deploy_coalesced`].
    #[error(
        "`{iface}` runs a coalesced program {}; this deploy is {}: one interface's coalesced lambdas are all lowered for the same NIC model or none are (lowering turns per-CPU maps into shared ones, so the lambdas' pinned state could not move between the two forms, and the program is meant to be either what the NIC would get or what the host runs as written): deploy {}, or on another interface",
        lowering_text(.running.as_deref()),
        lowering_text(.asked.as_deref()),
        match .running.as_deref() { Some(m) => format!("with --lower --nic {m}"), None => "without --lower".to_owned() }
    )]
    LoweringConflict {
        iface: String,
        /// The NIC model the running lambdas were lowered for (`None`: not lowered).
        running: Option<String>,
        asked: Option<String>,
    },

    #[error("coalescing the lambdas of `{iface}`: {reason}")]
    CoalesceFailed { iface: String, reason: String },

    #[error("`{iface}` holds {max} lambdas already: no free slot in its dispatcher")]
    DispatcherFull { iface: String, max: u32 },

    #[error("dispatcher on `{iface}`: {operation}: {source}")]
    Dispatch {
        iface: String,
        operation: String,
        #[source]
        source: io::Error,
    },

    #[error("attachment record {} is not valid: {source}", path.display())]
    BadRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A map field and its value as the upgrade refusal shows them: `value size 8`, `type hash`.
fn describe_map_field(field: &str, value: u32) -> String {
    format!("{field} {}", describe_map_value(field, value))
}

/// A map field's value alone: type names for `type`, numbers else.
fn describe_map_value(field: &str, value: u32) -> String {
    if field == "type" {
        crate::image::map_type_name(value)
    } else {
        value.to_string()
    }
}

/// `a: b: c` for an error and its sources, skipping sources whose text the outer one repeats.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

/// The first OS error number in an error's source chain.
pub(super) fn os_errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        next = e.source();
    }
    None
}

pub(super) fn is_permission(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::EPERM) | Some(libc::EACCES))
}

pub(super) fn aya_err<E: StdError + Send + Sync + 'static>(
    operation: impl Into<String>,
    err: E,
) -> KernelError {
    let operation = operation.into();
    if is_permission(os_errno(&err)) {
        return KernelError::PermissionDenied {
            operation,
            detail: Some(chain(&err)),
        };
    }
    KernelError::Aya {
        operation,
        source: Box::new(err),
    }
}

pub(super) fn io_err<'a>(
    operation: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> KernelError + 'a {
    move |source| {
        if is_permission(source.raw_os_error()) {
            KernelError::PermissionDenied {
                operation: format!("{operation} {}", path.display()),
                detail: Some(source.to_string()),
            }
        } else {
            KernelError::Io {
                operation,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// `lowered for nfp-4000` or `not lowered`.
fn lowering_text(model: Option<&str>) -> String {
    match model {
        Some(m) => format!("lowered for {m}"),
        None => "not lowered".to_owned(),
    }
}
