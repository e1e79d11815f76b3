//! What an interface is: its driver (ETHTOOL_GDRVINFO) and its offload-related features
//! (ETHTOOL_GFEATURES with the names from ETHTOOL_GSTRINGS), read with the ethtool ioctl on a
//! throwaway socket. These are hints; only [`crate::probe`] is conclusive.

use std::{ffi::CStr, io};

use serde::Serialize;

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETH_SS_FEATURES: u32 = 4;
/// The feature that says the driver offloads tc classifiers, and with them BPF (the nfp driver
/// sets it when its firmware has the BPF application).
pub const FEATURE_TC_OFFLOAD: &str = "hw-tc-offload";

/// What discovery found out about an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InterfaceInfo {
    pub iface: String,
    pub ifindex: u32,
    /// The kernel driver's name (`veth`, `nfp`, …).
    pub driver: String,
    /// The `hw-tc-offload` feature: `None` when the driver does not report features.
    pub tc_offload: Option<bool>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("no such network interface `{iface}` in this network namespace")]
    NoSuchInterface { iface: String },
    #[error("interface name `{iface}` is longer than 15 bytes")]
    NameTooLong { iface: String },
    #[error("ethtool {request} on `{iface}`: {source}")]
    Ethtool {
        iface: String,
        request: &'static str,
        #[source]
        source: io::Error,
    },
}

#[repr(C)]
struct Ifreq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// `struct ethtool_drvinfo`.
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

struct Ethtool {
    fd: std::os::fd::OwnedFd,
    name: [u8; libc::IFNAMSIZ],
    iface: String,
}

impl Ethtool {
    fn new(iface: &str) -> Result<Ethtool, DiscoverError> {
        use std::os::fd::FromRawFd as _;
        if iface.len() >= libc::IFNAMSIZ {
            return Err(DiscoverError::NameTooLong {
                iface: iface.to_owned(),
            });
        }
        let mut name = [0u8; libc::IFNAMSIZ];
        name[..iface.len()].copy_from_slice(iface.as_bytes());
        // SAFETY: socket has no memory preconditions.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(DiscoverError::Ethtool {
                iface: iface.to_owned(),
                request: "socket",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Ethtool {
            // SAFETY: we own the fd the kernel just returned.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            name,
            iface: iface.to_owned(),
        })
    }

    /// SAFETY: `data` must be the ethtool struct for the command in its first u32, with room
    /// for everything that command writes.
    unsafe fn ioctl(
        &self,
        request: &'static str,
        data: *mut libc::c_void,
    ) -> Result<(), DiscoverError> {
        use std::os::fd::AsRawFd as _;
        let mut ifr = Ifreq {
            name: self.name,
            data,
            _pad: [0; 16],
        };
        // SAFETY: ifr is a valid ifreq; the caller vouches for `data`.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCETHTOOL as _, &mut ifr) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::ENODEV) {
                return Err(DiscoverError::NoSuchInterface {
                    iface: self.iface.clone(),
                });
            }
            return Err(DiscoverError::Ethtool {
                iface: self.iface.clone(),
                request,
                source,
            });
        }
        Ok(())
    }

    fn driver(&self) -> Result<String, DiscoverError> {
        // SAFETY: a plain C struct; all-zero is valid.
        let mut info: DrvInfo = unsafe { std::mem::zeroed() };
        info.cmd = ETHTOOL_GDRVINFO;
        // SAFETY: GDRVINFO writes one ethtool_drvinfo.
        unsafe { self.ioctl("GDRVINFO", (&raw mut info).cast()) }?;
        Ok(CStr::from_bytes_until_nul(&info.driver)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default())
    }

    /// The feature named `name`: `Some(active)`, or `None` if the driver does not list it.
    fn feature(&self, name: &str) -> Result<Option<bool>, DiscoverError> {
        // ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per set in the mask.
        let mut sset = [0u32; 5];
        sset[0] = ETHTOOL_GSSET_INFO;
        sset[2] = 1 << ETH_SS_FEATURES;
        // SAFETY: the buffer holds the header and the one u32 the mask asks for.
        unsafe { self.ioctl("GSSET_INFO", sset.as_mut_ptr().cast()) }?;
        let count = sset[4] as usize;
        if count == 0 || count > 4096 {
            return Ok(None);
        }
        // ethtool_gstrings: cmd, string_set, len, then len × 32 bytes.
        let mut strings = vec![0u8; 12 + count * 32];
        strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
        strings[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
        strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
        // SAFETY: the buffer has room for `count` strings of ETH_GSTRING_LEN (32) bytes.
        unsafe { self.ioctl("GSTRINGS", strings.as_mut_ptr().cast()) }?;
        let Some(index) = (0..count).find(|i| {
            let s = &strings[12 + i * 32..12 + (i + 1) * 32];
            CStr::from_bytes_until_nul(s).is_ok_and(|c| c.to_bytes() == name.as_bytes())
        }) else {
            return Ok(None);
        };
        // ethtool_gfeatures: cmd, size, then size × {available, requested, active, never_changed}.
        let blocks = count.div_ceil(32);
        let mut features = vec![0u32; 2 + blocks * 4];
        features[0] = ETHTOOL_GFEATURES;
        features[1] = blocks as u32;
        // SAFETY: the buffer has room for `blocks` feature blocks.
        unsafe { self.ioctl("GFEATURES", features.as_mut_ptr().cast()) }?;
        let active = features[2 + (index / 32) * 4 + 2];
        Ok(Some(active & (1 << (index % 32)) != 0))
    }
}

/// Driver and offload features of `iface` in the current network namespace.
pub fn discover(iface: &str) -> Result<InterfaceInfo, DiscoverError> {
    let ifindex = loader::kernel::ifindex(iface).map_err(|_| DiscoverError::NoSuchInterface {
        iface: iface.to_owned(),
    })?;
    let ethtool = Ethtool::new(iface)?;
    // Virtual devices such as `lo` answer no ethtool driver query: fall back on sysfs, then
    // on a placeholder (the probe still decides).
    let driver = match ethtool.driver() {
        Ok(driver) if !driver.is_empty() => driver,
        Ok(_) | Err(DiscoverError::Ethtool { .. }) => {
            sysfs_driver(iface).unwrap_or_else(|| "unknown".into())
        }
        Err(e) => return Err(e),
    };
    // Features are a hint only: a driver without the feature ioctls still gets probed.
    let tc_offload = ethtool.feature(FEATURE_TC_OFFLOAD).unwrap_or(None);
    Ok(InterfaceInfo {
        iface: iface.to_owned(),
        ifindex,
        driver,
        tc_offload,
    })
}

/// The driver behind `/sys/class/net/IF/device/driver`, for devices with a bus device.
fn sysfs_driver(iface: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/class/net/{iface}/device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_with_its_driver_and_bad_names_are_errors() {
        let info = discover("lo").unwrap();
        assert_eq!(info.ifindex, 1);
        // The loopback device has no driver name through ethtool on some kernels: only check
        // that the call succeeded and the feature (a hint) is not claimed.
        assert_ne!(info.tc_offload, Some(true));
        assert!(matches!(
            discover("no-such-if0"),
            Err(DiscoverError::NoSuchInterface { .. })
        ));
        assert!(matches!(
            discover("x/y"),
            Err(DiscoverError::NoSuchInterface { .. })
        ));
    }
}
