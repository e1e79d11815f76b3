//! Statistics of attached lambdas: the kernel's run count and run time of the program behind
//! each pinned link, and the SDK's counters from its pinned `LNIC_STATS` map. Lambdas deployed
//! in coalesced mode share one program per interface: the kernel's figures are that program's
//! (one [`StatsKind::CoalescedProgram`] row), and each lambda's row has its own SDK counters.
//!
//! The kernel counts runs and their time only while BPF statistics are enabled: by a
//! `BPF_ENABLE_STATS` file descriptor that some process holds open ([`RunTimeStats`]), or
//! globally by the `kernel.bpf_stats_enabled` sysctl. Timing every run costs two clock reads
//! per packet on every BPF program of the host, so nothing here turns it on for good: `attach`
//! leaves it off, and `lambdactl stats --watch` holds a [`RunTimeStats`] for as long as it
//! watches. The SDK's counters cost a map update per packet and are always on.

use std::{fs, io, os::fd::OwnedFd, path::Path};

use lambda_ebpf::stats::{MAP_NAME, SLOTS, StatsSnapshot};

use super::{
    Host, KernelError, Liveness,
    error::{aya_err, io_err, is_permission},
    sys,
};
use crate::maps::{KernelMap, MapAccess, MapError};

/// Where the sysctl that enables BPF statistics globally lives.
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel's figures for one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelRunStats {
    /// Runs counted while BPF statistics were enabled.
    pub run_count: u64,
    /// Nanoseconds those runs took.
    pub run_time_ns: u64,
}

impl KernelRunStats {
    /// Mean nanoseconds per run, when there were runs.
    pub fn mean_ns(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }

    /// What was counted since `earlier` (of the same program).
    pub fn since(&self, earlier: &KernelRunStats) -> KernelRunStats {
        KernelRunStats {
            run_count: self.run_count.saturating_sub(earlier.run_count),
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
        }
    }
}

/// What a [`LambdaStats`] row is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsKind {
    /// A lambda attached alone: the program's figures are the lambda's.
    Attached,
    /// A lambda inside its interface's coalesced program: its own SDK counters only (the
    /// kernel counts runs per program, not per function).
    Coalesced,
    /// The coalesced program of an interface (its `lambda` is empty): the kernel's figures,
    /// for every request to any of `lambdas` and every other packet it passed.
    CoalescedProgram { lambdas: Vec<String> },
    /// A lambda deployed behind a dispatcher: its own SDK counters only (the kernel counts
    /// runs of the program a packet enters, the dispatcher, not of tail-call targets).
    Deployed,
    /// The dispatcher of an interface (its `lambda` is empty): the kernel's figures, for every
    /// packet it dispatched to any of `lambdas` or passed.
    Dispatcher { lambdas: Vec<String> },
}

impl StatsKind {
    pub fn name(&self) -> &'static str {
        match self {
            StatsKind::Attached => "attached",
            StatsKind::Coalesced => "coalesced",
            StatsKind::CoalescedProgram { .. } => "coalesced-program",
            StatsKind::Deployed => "deployed",
            StatsKind::Dispatcher { .. } => "dispatcher",
        }
    }

    /// A row of a whole program (a coalesced program or a dispatcher), not of one lambda.
    pub fn is_program(&self) -> bool {
        matches!(
            self,
            StatsKind::CoalescedProgram { .. } | StatsKind::Dispatcher { .. }
        )
    }
}

/// The statistics of one attached lambda, coalesced lambda or coalesced program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LambdaStats {
    pub iface: String,
    pub lambda: String,
    pub kind: StatsKind,
    /// The program the pinned link runs now (an upgrade or a re-coalescing changes it, and
    /// with it the kernel's figures, which are per program; the SDK counters live in a pinned
    /// map and carry on).
    pub program_id: u32,
    /// The program's figures; `None` for a [`StatsKind::Coalesced`] or [`StatsKind::Deployed`]
    /// lambda, whose packets the kernel counts on its interface's program row.
    pub kernel: Option<KernelRunStats>,
    /// The SDK's counters summed over CPUs; `None` when the program keeps none (written
    /// without the SDK, or an object older than the counters).
    pub sdk: Option<StatsSnapshot>,
}

/// Keeps the kernel's BPF run-time statistics on for every program while it lives
/// (`BPF_ENABLE_STATS`; the kernel turns them off when the last such fd closes, unless the
/// sysctl has them on).
#[derive(Debug)]
pub struct RunTimeStats {
    _fd: OwnedFd,
}

impl RunTimeStats {
    /// Turns the statistics on. Needs CAP_SYS_ADMIN.
    pub fn enable() -> Result<RunTimeStats, KernelError> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map_err(|e| aya_err("enabling BPF run-time statistics (BPF_ENABLE_STATS)", e))?;
        Ok(RunTimeStats { _fd: fd })
    }
}

/// Whether the `kernel.bpf_stats_enabled` sysctl has BPF statistics on for every program
/// (`None` when it cannot be read). It does not see [`RunTimeStats`] holders.
pub fn stats_sysctl_enabled() -> Option<bool> {
    let text = fs::read_to_string(BPF_STATS_SYSCTL).ok()?;
    Some(text.trim() != "0")
}

impl Host {
    /// The statistics of every live attachment in this network namespace, or of `iface`'s
    /// alone.
    pub fn stats(&self, iface: Option<&str>) -> Result<Vec<LambdaStats>, KernelError> {
        let listed = self.list()?;
        let coalesced = self.coalesced_records()?;
        let deployed = self.deploy_records()?;
        if let Some(iface) = iface
            && !listed.iter().any(|l| l.record.iface == iface)
            && !coalesced.iter().any(|r| r.iface == iface)
            && !deployed.iter().any(|r| r.iface == iface)
        {
            return Err(KernelError::NotAttached {
                iface: iface.to_owned(),
            });
        }
        let mut out = Vec::new();
        for l in listed {
            if iface.is_some_and(|i| i != l.record.iface) {
                continue;
            }
            let program_id = match &l.liveness {
                Liveness::Live { program_id, .. } | Liveness::Replaced { program_id } => {
                    *program_id
                }
                Liveness::Stale { reason } | Liveness::Unknown { reason } => {
                    // Naming one interface asks for its figures: say why there are none.
                    // Listing all skips what is not running.
                    if iface.is_some() {
                        return Err(KernelError::NotLive {
                            iface: l.record.iface.clone(),
                            reason: reason.clone(),
                        });
                    }
                    continue;
                }
            };
            let info = sys::program_run_info(program_id)
                .map_err(|source| program_info_err(program_id, source))?;
            let pin = self.maps_dir(&l.record.iface).join(MAP_NAME);
            let sdk = sdk_counters(&pin, &info.map_ids)?;
            out.push(LambdaStats {
                iface: l.record.iface,
                lambda: l.record.lambda,
                kind: StatsKind::Attached,
                program_id,
                kernel: Some(KernelRunStats {
                    run_count: info.run_count,
                    run_time_ns: info.run_time_ns,
                }),
                sdk,
            });
        }
        self.dispatched_stats(iface, &deployed, &mut out)?;
        let mut ifaces: Vec<&str> = coalesced.iter().map(|r| r.iface.as_str()).collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        for name in ifaces {
            if iface.is_some_and(|i| i != name) {
                continue;
            }
            let live = self
                .coalesced_iface(name)
                .ok_or_else(|| "it has no coalesced program record".to_owned())
                .and_then(|r| match sys::pinned_link_state(&r.link_pin) {
                    Ok(s) if s.ifindex == r.ifindex => Ok((r, s.program_id)),
                    Ok(_) => Err("its link is defunct or elsewhere".to_owned()),
                    Err(e) => Err(format!("no link ({e})")),
                });
            let (record, program_id) = match live {
                Ok(x) => x,
                Err(reason) if iface.is_some() => {
                    return Err(KernelError::NotLive {
                        iface: name.to_owned(),
                        reason,
                    });
                }
                Err(_) => continue,
            };
            let info = sys::program_run_info(program_id)
                .map_err(|source| program_info_err(program_id, source))?;
            out.push(LambdaStats {
                iface: name.to_owned(),
                lambda: String::new(),
                kind: StatsKind::CoalescedProgram {
                    lambdas: record.lambdas.clone(),
                },
                program_id,
                kernel: Some(KernelRunStats {
                    run_count: info.run_count,
                    run_time_ns: info.run_time_ns,
                }),
                sdk: None,
            });
            // In the program's order (deploy order), the members the program runs.
            for lambda in &record.lambdas {
                let Some(member) = coalesced
                    .iter()
                    .find(|r| &r.name == lambda && r.iface == name)
                else {
                    continue;
                };
                let sdk = match member.maps.iter().find(|m| m.name == MAP_NAME) {
                    Some(m) => sdk_counters(&m.pin, &info.map_ids)?,
                    None => None,
                };
                out.push(LambdaStats {
                    iface: name.to_owned(),
                    lambda: lambda.clone(),
                    kind: StatsKind::Coalesced,
                    program_id,
                    kernel: None,
                    sdk,
                });
            }
        }
        Ok(out)
    }

    /// The rows of the interfaces with a dispatcher (all, or `iface`'s): the dispatcher's,
    /// then its lambdas' in name order.
    fn dispatched_stats(
        &self,
        iface: Option<&str>,
        deployed: &[super::DeployRecord],
        out: &mut Vec<LambdaStats>,
    ) -> Result<(), KernelError> {
        let mut ifaces: Vec<&str> = deployed.iter().map(|r| r.iface.as_str()).collect();
        ifaces.sort_unstable();
        ifaces.dedup();
        for name in ifaces {
            if iface.is_some_and(|i| i != name) {
                continue;
            }
            let live = self
                .dispatcher(name)
                .ok_or_else(|| "it has no dispatcher record".to_owned())
                .and_then(|r| match sys::pinned_link_state(&r.link_pin) {
                    Ok(s) if s.ifindex == r.ifindex => Ok(s.program_id),
                    Ok(_) => Err("the dispatcher's link is defunct or elsewhere".to_owned()),
                    Err(e) => Err(format!("no dispatcher link ({e})")),
                });
            let program_id = match live {
                Ok(id) => id,
                Err(reason) if iface.is_some() => {
                    return Err(KernelError::NotLive {
                        iface: name.to_owned(),
                        reason,
                    });
                }
                Err(_) => continue,
            };
            let info = sys::program_run_info(program_id)
                .map_err(|source| program_info_err(program_id, source))?;
            let members: Vec<&super::DeployRecord> =
                deployed.iter().filter(|r| r.iface == name).collect();
            out.push(LambdaStats {
                iface: name.to_owned(),
                lambda: String::new(),
                kind: StatsKind::Dispatcher {
                    lambdas: members.iter().map(|r| r.name.clone()).collect(),
                },
                program_id,
                kernel: Some(KernelRunStats {
                    run_count: info.run_count,
                    run_time_ns: info.run_time_ns,
                }),
                sdk: None,
            });
            for r in members {
                // The lambda's own program references its counters (not the dispatcher).
                let sdk = match r.maps.iter().find(|m| m.name == MAP_NAME) {
                    Some(m) => match sys::program_run_info(r.program_id) {
                        Ok(own) => sdk_counters(&m.pin, &own.map_ids)?,
                        // Undeployed meanwhile: no counters to show.
                        Err(_) => None,
                    },
                    None => None,
                };
                out.push(LambdaStats {
                    iface: name.to_owned(),
                    lambda: r.name.clone(),
                    kind: StatsKind::Deployed,
                    program_id: r.program_id,
                    kernel: None,
                    sdk,
                });
            }
        }
        Ok(())
    }
}

pub(super) fn program_info_err(program_id: u32, source: io::Error) -> KernelError {
    if is_permission(source.raw_os_error()) {
        return KernelError::PermissionDenied {
            operation: format!("reading the statistics of program {program_id}"),
            detail: Some(source.to_string()),
        };
    }
    KernelError::ProgramInfo { program_id, source }
}

/// The SDK counters in the map pinned at `pin`, summed over CPUs, if the program (whose maps
/// are `map_ids`) uses that map. Every object built with the SDK carries the map, even a
/// lambda that never calls `serve` (the loader creates every map of an object): only one the
/// program references counts anything.
fn sdk_counters(pin: &Path, map_ids: &[u32]) -> Result<Option<StatsSnapshot>, KernelError> {
    if !pin.exists() {
        return Ok(None);
    }
    let map_err = |e: MapError| KernelError::Aya {
        operation: format!("reading {}", pin.display()),
        source: Box::new(e),
    };
    let map = KernelMap::from_pin(pin).map_err(map_err)?;
    let id = sys::map_info(map.fd())
        .map_err(|e| io_err("reading the map info of", pin)(e))?
        .id;
    if !map_ids.contains(&id) {
        return Ok(None);
    }
    sum_slots(&map).map(Some).map_err(map_err)
}

/// Reads every slot of an SDK counter map and sums each over CPUs. A map of another shape is
/// read as far as it matches (slots past the map's size count 0).
pub fn sum_slots<M: MapAccess + ?Sized>(map: &M) -> Result<StatsSnapshot, MapError> {
    let spec = map.spec();
    let stride = spec.value_stride();
    let mut slots = Vec::with_capacity(SLOTS as usize);
    for slot in 0..SLOTS.min(spec.max_entries) {
        let value = map.lookup(&slot.to_ne_bytes())?.unwrap_or_default();
        slots.push(sum_per_cpu(&value, stride, spec.value_size as usize));
    }
    Ok(StatsSnapshot::from_slots(&slots))
}

/// Sums the per-CPU copies of a counter (`stride` bytes apart, the first `width` of them the
/// native-endian count; only the first 8 are read).
fn sum_per_cpu(value: &[u8], stride: usize, width: usize) -> u64 {
    let width = width.min(8);
    if stride == 0 || width == 0 {
        return 0;
    }
    value
        .chunks(stride)
        .map(|copy| {
            let mut bytes = [0u8; 8];
            let n = width.min(copy.len());
            bytes[..n].copy_from_slice(&copy[..n]);
            u64::from_ne_bytes(bytes)
        })
        .fold(0u64, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_copies_are_summed() {
        let mut value = Vec::new();
        for n in [3u64, 4, 5] {
            value.extend_from_slice(&n.to_ne_bytes());
        }
        assert_eq!(sum_per_cpu(&value, 8, 8), 12);
        assert_eq!(sum_per_cpu(&[], 8, 8), 0);
        // A 4-byte counter padded to 8 bytes per CPU.
        let mut narrow = Vec::new();
        for n in [1u32, 2] {
            narrow.extend_from_slice(&n.to_ne_bytes());
            narrow.extend_from_slice(&[0xff; 4]);
        }
        assert_eq!(sum_per_cpu(&narrow, 8, 4), 3);
    }

    #[test]
    fn run_stats_mean_and_delta() {
        let a = KernelRunStats {
            run_count: 4,
            run_time_ns: 1000,
        };
        assert_eq!(a.mean_ns(), Some(250.0));
        assert_eq!(KernelRunStats::default().mean_ns(), None);
        let b = KernelRunStats {
            run_count: 10,
            run_time_ns: 2200,
        };
        assert_eq!(
            b.since(&a),
            KernelRunStats {
                run_count: 6,
                run_time_ns: 1200
            }
        );
    }
}
