//! Logs of attached lambdas: the records a lambda wrote into the SDK's ring buffer
//! (`lambda_ebpf::log`, map `LNIC_LOG`), read from the map `attach` pinned for its interface.
//! A lambda deployed in coalesced mode keeps its own ring buffer inside the coalesced program,
//! pinned under its name ([`Host::coalesced_logs`]).
//!
//! A ring buffer has one consumer position: reading a record consumes it, for every reader.
//! Two `lambdactl logs` at once therefore split the records between them, and a record shown
//! once is never shown again.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use lambda_ebpf::log::{LogRecord, MAP_NAME};

use super::{
    Host, KernelError, Liveness,
    error::{aya_err, io_err},
    stats::program_info_err,
    sys,
};

/// One logged line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `bpf_ktime_get_ns()` when it was logged: CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    /// The text (the lambda's bytes; not necessarily UTF-8).
    pub text: Vec<u8>,
}

/// A reader of one lambda's log ring buffer.
pub struct LogReader {
    ring: RingBuf<MapData>,
    /// The interface the lambda is attached to and the lambda's name, for display.
    pub iface: String,
    pub lambda: String,
    /// Records that were not SDK log records (another writer, or a layout mismatch).
    pub malformed: u64,
}

impl Host {
    /// Opens the log ring buffer of the lambda on `iface`. [`KernelError::NotAttached`] when
    /// nothing is attached there, [`KernelError::NotLive`] when its link is gone,
    /// [`KernelError::NoLog`] when the running program does not log.
    pub fn logs(&self, iface: &str) -> Result<LogReader, KernelError> {
        let listed = self
            .list()?
            .into_iter()
            .find(|l| l.record.iface == iface)
            .ok_or_else(|| KernelError::NotAttached {
                iface: iface.to_owned(),
            })?;
        let program_id = match listed.liveness {
            Liveness::Live { program_id, .. } | Liveness::Replaced { program_id } => program_id,
            Liveness::Stale { reason } | Liveness::Unknown { reason } => {
                return Err(KernelError::NotLive {
                    iface: iface.to_owned(),
                    reason,
                });
            }
        };
        let record = listed.record;
        let pin = self.maps_dir(iface).join(MAP_NAME);
        if record.mode == super::ModeUsed::Hw && !pin.exists() {
            // Offloaded programs are lowered first, which drops the log ring.
            return Err(KernelError::LogsLowered {
                iface: iface.to_owned(),
                lambda: record.lambda,
                nic: "the NIC (hw mode)".into(),
            });
        }
        open_ring(&pin, program_id, iface, &record.lambda)
    }

    /// Opens the log ring buffer of `name`, deployed behind a dispatcher or in coalesced mode:
    /// its own `LNIC_LOG`, pinned under its name. [`KernelError::NotDeployed`] when no lambda
    /// is deployed under that name, [`KernelError::NotLive`] when it is not running,
    /// [`KernelError::NoLog`] when it does not log.
    pub fn deployed_logs(&self, name: &str) -> Result<LogReader, KernelError> {
        let Some(record) = self.deploy_records()?.into_iter().find(|r| r.name == name) else {
            return self.coalesced_logs(name);
        };
        let Some(map) = record.maps.iter().find(|m| m.name == MAP_NAME) else {
            return Err(KernelError::NoLog {
                iface: record.iface.clone(),
                lambda: record.name.clone(),
            });
        };
        // The lambda's own program writes the ring (the dispatcher tail-calls into it).
        open_ring(&map.pin, record.program_id, &record.iface, &record.name)
    }

    /// Opens the log ring buffer of `name`, deployed in coalesced mode: its own `LNIC_LOG`,
    /// which the interface's coalesced program writes its log lines to.
    /// [`KernelError::NotDeployed`] when no coalesced lambda has that name,
    /// [`KernelError::NotLive`] when its program is not running, [`KernelError::NoLog`] when
    /// the lambda does not log.
    pub fn coalesced_logs(&self, name: &str) -> Result<LogReader, KernelError> {
        let record = self
            .coalesced_records()?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| KernelError::NotDeployed {
                name: name.to_owned(),
            })?;
        let not_live = |reason: String| KernelError::NotLive {
            iface: record.iface.clone(),
            reason,
        };
        let iface = self
            .coalesced_iface(&record.iface)
            .ok_or_else(|| not_live("it has no coalesced program record".into()))?;
        let program_id = match sys::pinned_link_state(&iface.link_pin) {
            Ok(s) if s.ifindex == record.ifindex => s.program_id,
            Ok(_) => return Err(not_live("its link is defunct or elsewhere".into())),
            Err(e) => return Err(not_live(format!("no link ({e})"))),
        };
        let Some(map) = record.maps.iter().find(|m| m.name == MAP_NAME) else {
            if let Some(nic) = &record.lower {
                return Err(KernelError::LogsLowered {
                    iface: record.iface.clone(),
                    lambda: record.name.clone(),
                    nic: nic.clone(),
                });
            }
            return Err(KernelError::NoLog {
                iface: record.iface.clone(),
                lambda: record.name.clone(),
            });
        };
        open_ring(&map.pin, program_id, &record.iface, &record.name)
    }
}

/// Opens the ring buffer pinned at `pin` as the log of `lambda` on `iface`, when program
/// `program_id` (the running one) writes to it.
fn open_ring(
    pin: &std::path::Path,
    program_id: u32,
    iface: &str,
    lambda: &str,
) -> Result<LogReader, KernelError> {
    let no_log = || KernelError::NoLog {
        iface: iface.to_owned(),
        lambda: lambda.to_owned(),
    };
    if !pin.exists() {
        return Err(no_log());
    }
    let opening = || format!("opening the log ring buffer {}", pin.display());
    let data = MapData::from_pin(pin).map_err(|e| aya_err(opening(), e))?;
    let map = Map::from_map_data(data).map_err(|e| aya_err(opening(), e))?;
    let ring = RingBuf::try_from(map).map_err(|e| aya_err(opening(), e))?;
    // Pinned maps outlive the programs that used them (detach and upgrades keep state):
    // the pin only counts if the running program writes to it.
    let map_id = sys::map_info(ring.as_fd())
        .map_err(|e| io_err("reading the map info of", pin)(e))?
        .id;
    let info =
        sys::program_run_info(program_id).map_err(|source| program_info_err(program_id, source))?;
    if !info.map_ids.contains(&map_id) {
        return Err(no_log());
    }
    Ok(LogReader {
        ring,
        iface: iface.to_owned(),
        lambda: lambda.to_owned(),
        malformed: 0,
    })
}

impl LogReader {
    /// Consumes and returns every record available now (possibly none).
    pub fn drain(&mut self) -> Vec<LogLine> {
        let mut lines = Vec::new();
        while let Some(item) = self.ring.next() {
            match LogRecord::decode(&item) {
                Some((ktime_ns, text)) => lines.push(LogLine {
                    ktime_ns,
                    text: text.to_vec(),
                }),
                None => self.malformed += 1,
            }
        }
        lines
    }

    /// Waits up to `timeout` for records to arrive (the kernel wakes the ring buffer's file
    /// descriptor when it has data). Returns whether it became readable; an interrupted wait
    /// (a signal) counts as not readable.
    pub fn wait(&self, timeout: Duration) -> Result<bool, KernelError> {
        let mut fds = [libc::pollfd {
            fd: self.ring.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, whose fd the ring buffer keeps open during the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(aya_err("waiting for the log ring buffer", err));
        }
        Ok(n > 0 && fds[0].revents & libc::POLLIN != 0)
    }
}

/// The offset to add to a CLOCK_MONOTONIC time (what `bpf_ktime_get_ns` returns) to get
/// nanoseconds since the Unix epoch, as of now. Both clocks are read back to back; an NTP
/// step between a record and this call shifts the converted time by the step.
pub fn monotonic_to_realtime_offset_ns() -> i128 {
    fn now(clock: libc::clockid_t) -> i128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec; both clocks always exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    }
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Formats nanoseconds since the Unix epoch as UTC `YYYY-MM-DDTHH:MM:SS.mmmmmmZ`.
pub fn format_utc(epoch_ns: i128) -> String {
    let micros = epoch_ns.div_euclid(1_000);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01, by counting 400-year eras of
/// 146097 days from 0000-03-01 (starting the year in March puts the leap day last).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i128::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000000Z");
        // 2000-02-29 12:34:56.789012 UTC (a leap day in a year divisible by 400).
        let t = 951_827_696_789_012_000i128;
        assert_eq!(format_utc(t), "2000-02-29T12:34:56.789012Z");
        assert_eq!(format_utc(-1_000), "1969-12-31T23:59:59.999999Z");
        // 2026-11-30 00:00:00 UTC.
        assert_eq!(
            format_utc(1_795_996_800_000_000_000),
            "2026-11-30T00:00:00.000000Z"
        );
    }
}
