//! [`KernelMap`]: [`MapAccess`] over a kernel map's file descriptor, through the raw map
//! commands in `crate::kernel::sys` (aya's typed maps want `Pod` keys and values; here
//! everything is bytes).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use super::{MapAccess, MapError, MapSpec, MapType, UpdateFlags, possible_cpus};
use crate::kernel::sys;

/// A kernel BPF map, read and written through the `bpf(2)` syscall.
///
/// Works on any map type byte-wise; the size checks and the per-CPU value layout follow
/// [`MapType`], so for types outside the six named ones the kernel decides.
#[derive(Debug)]
pub struct KernelMap {
    fd: OwnedFd,
    spec: MapSpec,
    ncpus: usize,
}

impl KernelMap {
    /// Opens a map pinned at `path` (BPF_OBJ_GET) and reads its definition
    /// (BPF_OBJ_GET_INFO_BY_FD); the spec's name is the kernel's (at most 15 bytes).
    pub fn from_pin(path: impl AsRef<Path>) -> Result<KernelMap, MapError> {
        let path = path.as_ref();
        let fd = sys::open_pinned(path).map_err(|e| kernel_err("BPF_OBJ_GET", &e))?;
        KernelMap::from_fd_at(fd, path.to_owned())
    }

    /// Wraps a map file descriptor (e.g. one aya created), reading its definition.
    pub fn from_fd(fd: OwnedFd) -> Result<KernelMap, MapError> {
        let label = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        KernelMap::from_fd_at(fd, label)
    }

    fn from_fd_at(fd: OwnedFd, label: PathBuf) -> Result<KernelMap, MapError> {
        // BPF_OBJ_GET_INFO_BY_FD answers for any object type, so check first that this is a
        // map: its anonymous inode says so.
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| kernel_err("reading /proc/self/fd", &e))?;
        if link.as_os_str() != "anon_inode:bpf-map" {
            return Err(MapError::NotAMap { path: label });
        }
        let info =
            sys::map_info(fd.as_fd()).map_err(|e| kernel_err("BPF_OBJ_GET_INFO_BY_FD", &e))?;
        let name_bytes: Vec<u8> = info
            .name
            .iter()
            .map(|&c| c as u8)
            .take_while(|&b| b != 0)
            .collect();
        let spec = MapSpec {
            name: String::from_utf8_lossy(&name_bytes).into_owned(),
            map_type: MapType::from_raw(info.type_),
            key_size: info.key_size,
            value_size: info.value_size,
            max_entries: info.max_entries,
            flags: info.map_flags,
        };
        KernelMap::with_spec(fd, spec)
    }

    /// Creates a new kernel map (BPF_MAP_CREATE, no BTF, not pinned) with `spec`. The
    /// kernel's name is `spec.name` cut to 15 bytes with characters it refuses replaced by
    /// `_`; [`MapAccess::spec`] keeps `spec` as given. Needs CAP_BPF (or root).
    pub fn create(spec: &MapSpec) -> Result<KernelMap, MapError> {
        KernelMap::create_bound(spec, 0)
    }

    /// Like [`KernelMap::create`], but on the device `map_ifindex` for hardware offload
    /// (`bpf_attr.map_ifindex`; 0 is an ordinary host map). The map then lives in the NIC's
    /// memory and only programs offloaded to that device can use it.
    pub fn create_bound(spec: &MapSpec, map_ifindex: u32) -> Result<KernelMap, MapError> {
        let params = sys::MapCreateParams {
            map_ifindex,
            map_type: spec.map_type.raw(),
            key_size: spec.key_size,
            value_size: spec.value_size,
            max_entries: spec.max_entries,
            map_flags: spec.flags,
            name: kernel_name(&spec.name),
        };
        let fd = sys::map_create(&params).map_err(|e| kernel_err("BPF_MAP_CREATE", &e))?;
        KernelMap::with_spec(fd, spec.clone())
    }

    fn with_spec(fd: OwnedFd, spec: MapSpec) -> Result<KernelMap, MapError> {
        // Only per-CPU maps need the CPU count; other maps work without sysfs.
        let ncpus = if spec.map_type.is_per_cpu() {
            possible_cpus()?
        } else {
            1
        };
        Ok(KernelMap { fd, spec, ncpus })
    }

    /// Pins the map at `path` on a bpffs (BPF_OBJ_PIN), where [`KernelMap::from_pin`] and
    /// other processes find it.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<(), MapError> {
        sys::obj_pin(self.fd(), path.as_ref()).map_err(|e| kernel_err("BPF_OBJ_PIN", &e))
    }

    /// The map's file descriptor, owned (to keep the map alive beyond this value).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The map's file descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The number of copies of a value in the userspace view: the possible CPUs for per-CPU
    /// maps, 1 otherwise.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// [`MapAccess::update`] with raw flags passed to the kernel unchecked, to see what the
    /// kernel itself says about flags other than 0, 1 and 2 ([`MapError::InvalidFlags`]
    /// for its EINVAL).
    pub fn update_raw(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.check_key(key)?;
        self.check_value(value)?;
        // SAFETY: key and value have the map's key and userspace value sizes (checked above).
        let rc = unsafe { sys::map_update_elem(self.fd(), key, value, flags) };
        rc.map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => MapError::Exists,
            Some(libc::ENOENT) => MapError::NotFound,
            Some(libc::E2BIG) => MapError::Full,
            Some(libc::EINVAL) if UpdateFlags::from_raw(flags).is_err() => {
                MapError::InvalidFlags { flags }
            }
            _ => kernel_err("BPF_MAP_UPDATE_ELEM", &e),
        })
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        let expected = self.spec.key_size as usize;
        if key.len() != expected {
            return Err(MapError::KeySize {
                map: self.spec.name.clone(),
                expected,
                actual: key.len(),
            });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), MapError> {
        let expected = self.userspace_value_size();
        if value.len() != expected {
            return Err(MapError::ValueSize {
                map: self.spec.name.clone(),
                expected,
                actual: value.len(),
            });
        }
        Ok(())
    }
}

impl MapAccess for KernelMap {
    fn spec(&self) -> &MapSpec {
        &self.spec
    }

    fn userspace_value_size(&self) -> usize {
        self.spec.userspace_value_size(self.ncpus)
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        self.check_key(key)?;
        let mut value = vec![0u8; self.userspace_value_size()];
        // SAFETY: key has the key size (checked) and value the userspace value size.
        match unsafe { sys::map_lookup_elem(self.fd(), key, &mut value) } {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(kernel_err("BPF_MAP_LOOKUP_ELEM", &e)),
        }
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), MapError> {
        self.update_raw(key, value, flags.raw())
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        // SAFETY: key has the map's key size (checked above).
        let rc = unsafe { sys::map_delete_elem(self.fd(), key) };
        rc.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => MapError::NotFound,
            Some(libc::EINVAL) if self.spec.map_type.is_array() => MapError::DeleteFromArray,
            _ => kernel_err("BPF_MAP_DELETE_ELEM", &e),
        })
    }

    fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError> {
        if let Some(k) = key {
            self.check_key(k)?;
        }
        let mut next = vec![0u8; self.spec.key_size as usize];
        // SAFETY: key (if any) and next have the map's key size.
        match unsafe { sys::map_get_next_key(self.fd(), key, &mut next) } {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(kernel_err("BPF_MAP_GET_NEXT_KEY", &e)),
        }
    }
}

fn kernel_err(op: &'static str, e: &io::Error) -> MapError {
    MapError::Kernel {
        op,
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
    }
}

/// The name the kernel accepts for `name`: at most 15 bytes of `[A-Za-z0-9_.]`, NUL-padded.
fn kernel_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (dst, b) in out.iter_mut().take(15).zip(name.bytes()) {
        *dst = if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            b
        } else {
            b'_'
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_cut_and_sanitised() {
        assert_eq!(&kernel_name("COUNTERS"), b"COUNTERS\0\0\0\0\0\0\0\0");
        assert_eq!(&kernel_name("a-b c.d"), b"a_b_c.d\0\0\0\0\0\0\0\0\0");
        let long = kernel_name("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(&long[..15], b"abcdefghijklmno");
        assert_eq!(long[15], 0);
        // A multi-byte character becomes one `_` per byte, never a split UTF-8 sequence.
        assert_eq!(&kernel_name("λ")[..3], b"__\0");
    }

    #[test]
    fn a_file_is_not_a_map() {
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let err = KernelMap::from_fd(OwnedFd::from(file)).unwrap_err();
        assert!(matches!(err, MapError::NotAMap { .. }), "{err:?}");
    }
}
