//! BPF maps with one API over two implementations: [`KernelMap`] (a real kernel map, through
//! the `bpf(2)` syscall) and [`VmMap`] (a userspace map with the kernel's semantics, for the VM
//! backend). Both implement [`MapAccess`], the kernel's userspace (syscall) view of a map, so
//! tests can run the same operations on both and compare.
//!
//! Supported types: array, hash, per-CPU array, per-CPU hash, LRU hash and LRU per-CPU hash.
//!
//! Userspace view, as the kernel's syscalls define it:
//! - keys are `key_size` bytes; array keys are a native-endian `u32` index;
//! - a value is `value_size` bytes, except for per-CPU maps where it is
//!   `round_up(value_size, 8) × ncpus` bytes, CPU 0's copy first, each copy padded to 8 bytes
//!   (the padding is stored and read back too, as the kernel does); an update from userspace
//!   sets every CPU's copy;
//! - `lookup` of a missing key is `Ok(None)`; `next_key(None)` is the first key;
//!   `next_key(Some(k))` for a hash map is the key after `k`, or the first key if `k` is
//!   missing; arrays iterate `0..max_entries`.

mod kernel;
mod vm;

use std::{collections::HashSet, fmt, io, path::PathBuf};

use crate::image::{MapDef, map_type_name};

pub use kernel::KernelMap;
pub use vm::VmMap;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;

/// The kernel's limit on hash map keys (`MAX_BPF_STACK`): larger keys are refused (E2BIG).
pub const MAX_HASH_KEY_SIZE: u32 = 512;
/// The kernel's limit on per-CPU values (`PCPU_MIN_UNIT_SIZE`): larger values are refused.
pub const MAX_PER_CPU_VALUE_SIZE: u32 = 32 * 1024;

/// A `bpf_map_type`, with names for the types this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH` (1).
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (2).
    Array,
    /// `BPF_MAP_TYPE_PERCPU_HASH` (5).
    PerCpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (6).
    PerCpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH` (9).
    LruHash,
    /// `BPF_MAP_TYPE_LRU_PERCPU_HASH` (10).
    LruPerCpuHash,
    /// `BPF_MAP_TYPE_RINGBUF` (27). The VM keeps its records in a bounded byte ring (see
    /// [`VmMap`]): programs append with `bpf_ringbuf_output`, userspace
    /// drains with [`VmMap::ringbuf_drain`](crate::maps::VmMap::ringbuf_drain).
    RingBuf,
    /// Any other type, by its kernel id (never one of the ids named above).
    Other(u32),
}

impl MapType {
    /// The type with kernel id `raw`.
    pub const fn from_raw(raw: u32) -> MapType {
        match raw {
            1 => MapType::Hash,
            2 => MapType::Array,
            5 => MapType::PerCpuHash,
            6 => MapType::PerCpuArray,
            9 => MapType::LruHash,
            10 => MapType::LruPerCpuHash,
            27 => MapType::RingBuf,
            other => MapType::Other(other),
        }
    }

    /// The kernel's id for this type.
    pub const fn raw(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::PerCpuHash => 5,
            MapType::PerCpuArray => 6,
            MapType::LruHash => 9,
            MapType::LruPerCpuHash => 10,
            MapType::RingBuf => 27,
            MapType::Other(raw) => raw,
        }
    }

    /// Whether a value has one copy per CPU.
    pub const fn is_per_cpu(self) -> bool {
        matches!(
            self,
            MapType::PerCpuArray | MapType::PerCpuHash | MapType::LruPerCpuHash
        )
    }

    /// Whether this is an array (every index in `0..max_entries` always exists).
    pub const fn is_array(self) -> bool {
        matches!(self, MapType::Array | MapType::PerCpuArray)
    }

    /// Whether this is one of the hash types (keys come and go).
    pub const fn is_hash(self) -> bool {
        matches!(
            self,
            MapType::Hash | MapType::PerCpuHash | MapType::LruHash | MapType::LruPerCpuHash
        )
    }

    /// Whether a full map evicts its least recently used entry instead of refusing inserts.
    pub const fn is_lru(self) -> bool {
        matches!(self, MapType::LruHash | MapType::LruPerCpuHash)
    }

    /// Whether this is a ring buffer (no keys or values; `max_entries` is its size in bytes).
    pub const fn is_ring_buffer(self) -> bool {
        matches!(self, MapType::RingBuf)
    }
}

impl From<u32> for MapType {
    fn from(raw: u32) -> MapType {
        MapType::from_raw(raw)
    }
}

impl From<MapType> for u32 {
    fn from(t: MapType) -> u32 {
        t.raw()
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&map_type_name(self.raw()))
    }
}

/// What a map is: the fields of `BPF_MAP_CREATE` that matter for its semantics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The map's name (the kernel keeps at most 15 bytes of it).
    pub name: String,
    pub map_type: MapType,
    pub key_size: u32,
    /// Size of one value; for per-CPU maps, of one CPU's copy.
    pub value_size: u32,
    pub max_entries: u32,
    /// `map_flags` as given to the kernel. [`VmMap`] keeps them but does not act on them.
    pub flags: u32,
}

impl MapSpec {
    /// Bytes between two CPUs' copies of a per-CPU value (and the slot alignment of every
    /// value): `value_size` rounded up to 8.
    pub fn value_stride(&self) -> usize {
        round_up8(self.value_size as usize)
    }

    /// Size of a value in the userspace view: `value_size`, or
    /// `round_up(value_size, 8) × ncpus` for per-CPU maps.
    pub fn userspace_value_size(&self, ncpus: usize) -> usize {
        if self.map_type.is_per_cpu() {
            self.value_stride().saturating_mul(ncpus)
        } else {
            self.value_size as usize
        }
    }
}

impl From<&MapDef> for MapSpec {
    fn from(def: &MapDef) -> MapSpec {
        MapSpec {
            name: def.name.clone(),
            map_type: MapType::from_raw(def.map_type),
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            flags: def.flags,
        }
    }
}

/// The flags of a map update: `BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpdateFlags {
    /// Create or update (`BPF_ANY`, 0).
    #[default]
    Any,
    /// Create only: [`MapError::Exists`] if the key is there (`BPF_NOEXIST`, 1). Array
    /// elements always exist, so on an array this always fails.
    NoExist,
    /// Update only: [`MapError::NotFound`] if the key is missing (`BPF_EXIST`, 2).
    Exist,
}

impl UpdateFlags {
    /// Parses the raw flags of `bpf_map_update_elem`. Anything but 0, 1 or 2 is
    /// [`MapError::InvalidFlags`], as the kernel answers EINVAL (this includes `BPF_F_LOCK`,
    /// which needs a spin lock in the value, which these maps never have).
    pub fn from_raw(flags: u64) -> Result<UpdateFlags, MapError> {
        match flags {
            BPF_ANY => Ok(UpdateFlags::Any),
            BPF_NOEXIST => Ok(UpdateFlags::NoExist),
            BPF_EXIST => Ok(UpdateFlags::Exist),
            _ => Err(MapError::InvalidFlags { flags }),
        }
    }

    /// The raw kernel value.
    pub fn raw(self) -> u64 {
        match self {
            UpdateFlags::Any => BPF_ANY,
            UpdateFlags::NoExist => BPF_NOEXIST,
            UpdateFlags::Exist => BPF_EXIST,
        }
    }
}

impl TryFrom<u64> for UpdateFlags {
    type Error = MapError;

    fn try_from(flags: u64) -> Result<UpdateFlags, MapError> {
        UpdateFlags::from_raw(flags)
    }
}

/// Errors of map operations. The kernel's errno values are mapped to the same variants as the
/// userspace implementation returns, so results of both backends compare equal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A key of the wrong length (checked before any syscall: the kernel would read
    /// `key_size` bytes whatever the buffer's length).
    #[error("map `{map}`: key is {actual} bytes, the map's keys are {expected} bytes")]
    KeySize {
        map: String,
        expected: usize,
        actual: usize,
    },
    /// A value of the wrong length (for per-CPU maps from userspace,
    /// `round_up(value_size, 8) × ncpus`).
    #[error("map `{map}`: value is {actual} bytes, expected {expected} bytes")]
    ValueSize {
        map: String,
        expected: usize,
        actual: usize,
    },
    /// No such key (ENOENT): delete of a missing key, or update with `BPF_EXIST`.
    #[error("no such key (ENOENT)")]
    NotFound,
    /// Update with `BPF_NOEXIST` of a key that exists (EEXIST); always for arrays.
    #[error("key exists and the update said BPF_NOEXIST (EEXIST)")]
    Exists,
    /// A hash map already holds `max_entries` keys, or an array index is `>= max_entries`
    /// (E2BIG).
    #[error("map full, or array index out of range (E2BIG)")]
    Full,
    /// Update flags other than `BPF_ANY`, `BPF_NOEXIST` and `BPF_EXIST` (EINVAL).
    #[error(
        "invalid update flags {flags:#x}: expected 0 (BPF_ANY), 1 (BPF_NOEXIST) or 2 (BPF_EXIST)"
    )]
    InvalidFlags { flags: u64 },
    /// Array elements cannot be deleted (EINVAL).
    #[error("cannot delete from an array map: every element always exists (EINVAL)")]
    DeleteFromArray,
    /// [`VmMap`] implements only array, hash, their per-CPU and LRU variants.
    #[error("map `{map}`: map type {map_type} is not supported by the userspace maps")]
    UnsupportedType { map: String, map_type: MapType },
    /// A map the kernel would refuse to create (zero sizes, array key not 4 bytes, …) or that
    /// cannot be allocated.
    #[error("map `{map}`: {reason}")]
    InvalidSpec { map: String, reason: String },
    /// A program-side call named a CPU (VM worker) the per-CPU map has no copy for.
    #[error("map `{map}`: cpu {cpu} out of range, the map has {ncpus} per-CPU copies")]
    InvalidCpu {
        map: String,
        cpu: usize,
        ncpus: usize,
    },
    /// A keyed operation (lookup, update, delete, iteration) on a map that has no elements:
    /// a ring buffer (EINVAL, as the kernel's syscalls answer).
    #[error("map `{map}` is a ring buffer: it has no keys or values to read or write")]
    NoElements { map: String },
    /// The file descriptor or pinned object is not a BPF map.
    #[error("{path}: not a BPF map", path = .path.display())]
    NotAMap { path: PathBuf },
    /// Any other failure reported by the kernel: the command and its errno.
    #[error("{op}: {}", io::Error::from_raw_os_error(*.errno))]
    Kernel { op: &'static str, errno: i32 },
}

impl MapError {
    /// The errno the kernel uses for this error, for a VM helper that must return
    /// `-errno` to the program (`bpf_map_update_elem` and `bpf_map_delete_elem` do).
    pub fn errno(&self) -> i32 {
        match self {
            MapError::NotFound => libc::ENOENT,
            MapError::Exists => libc::EEXIST,
            MapError::Full => libc::E2BIG,
            MapError::KeySize { .. }
            | MapError::ValueSize { .. }
            | MapError::InvalidFlags { .. }
            | MapError::DeleteFromArray
            | MapError::InvalidSpec { .. }
            | MapError::InvalidCpu { .. }
            | MapError::NoElements { .. }
            | MapError::NotAMap { .. } => libc::EINVAL,
            MapError::UnsupportedType { .. } => libc::EOPNOTSUPP,
            MapError::Kernel { errno, .. } => *errno,
        }
    }
}

/// Every entry of a map: `(key, value)` pairs in the userspace view.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One API over a map, as userspace sees it through the `bpf(2)` syscall (see the module docs
/// for the value layout of per-CPU maps).
pub trait MapAccess: Send + Sync {
    /// What the map is.
    fn spec(&self) -> &MapSpec;

    /// Length of a value in this API: `value_size`, or `round_up(value_size, 8) × ncpus` for
    /// per-CPU maps.
    fn userspace_value_size(&self) -> usize;

    /// The value of `key`, or `None` if the key is missing (or an array index is out of
    /// range).
    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError>;

    /// Creates or updates `key`; for per-CPU maps sets every CPU's copy.
    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), MapError>;

    /// Deletes `key`: [`MapError::NotFound`] if missing, [`MapError::DeleteFromArray`] for
    /// arrays.
    fn delete(&self, key: &[u8]) -> Result<(), MapError>;

    /// The key after `key` (the first key for `None`, or for a hash map's missing key), or
    /// `None` at the end. Hash map order is unspecified and differs between backends.
    fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError>;

    /// Every entry, in `next_key` order. Consistent only if nobody modifies the map
    /// meanwhile: a key deleted under the walk makes the kernel restart from the first key,
    /// and the walk then stops at the first key it has already seen.
    fn entries(&self) -> Result<Entries, MapError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut key = self.next_key(None)?;
        while let Some(k) = key {
            if !seen.insert(k.clone()) {
                break;
            }
            // A key deleted between next_key and lookup is simply skipped.
            if let Some(v) = self.lookup(&k)? {
                out.push((k.clone(), v));
            }
            key = self.next_key(Some(&k))?;
        }
        Ok(out)
    }
}

/// `n` rounded up to a multiple of 8.
pub(crate) fn round_up8(n: usize) -> usize {
    n.div_ceil(8).saturating_mul(8)
}

/// Where the kernel lists the possible CPUs.
pub const POSSIBLE_CPUS_PATH: &str = "/sys/devices/system/cpu/possible";

/// The number of possible CPUs: how many copies a per-CPU map's value has in the kernel's
/// userspace view.
pub fn possible_cpus() -> Result<usize, MapError> {
    let text = std::fs::read_to_string(POSSIBLE_CPUS_PATH).map_err(|e| MapError::Kernel {
        op: "reading /sys/devices/system/cpu/possible",
        errno: e.raw_os_error().unwrap_or(libc::EIO),
    })?;
    parse_cpu_list(&text).ok_or(MapError::Kernel {
        op: "parsing /sys/devices/system/cpu/possible",
        errno: libc::EINVAL,
    })
}

/// Counts the CPUs in a kernel CPU list such as `0-3,5,7-8` (`None` if malformed or empty).
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let mut count = 0usize;
    for part in text.trim().split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<usize>().ok()?, hi.trim().parse().ok()?),
            None => {
                let cpu = part.trim().parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        if hi < lo {
            return None;
        }
        count = count.checked_add(hi - lo + 1)?;
    }
    (count > 0).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::MapOrigin;

    #[test]
    fn map_types_round_trip_kernel_ids() {
        for raw in 0..40 {
            let t = MapType::from_raw(raw);
            assert_eq!(t.raw(), raw);
            assert_eq!(u32::from(t), raw);
        }
        assert_eq!(MapType::from(1), MapType::Hash);
        assert_eq!(MapType::from(2), MapType::Array);
        assert_eq!(MapType::from(5), MapType::PerCpuHash);
        assert_eq!(MapType::from(6), MapType::PerCpuArray);
        assert_eq!(MapType::from(9), MapType::LruHash);
        assert_eq!(MapType::from(10), MapType::LruPerCpuHash);
        assert_eq!(MapType::from(27), MapType::RingBuf);
        assert_eq!(MapType::RingBuf.to_string(), "ringbuf");
        assert_eq!(MapType::from(3), MapType::Other(3));
        assert_eq!(MapType::LruPerCpuHash.to_string(), "lru_percpu_hash");
    }

    #[test]
    fn spec_from_map_def() {
        let def = MapDef {
            name: "COUNTERS".into(),
            map_type: 6,
            key_size: 4,
            value_size: 12,
            max_entries: 3,
            flags: 0,
            origin: MapOrigin::Legacy,
        };
        let spec = MapSpec::from(&def);
        assert_eq!(spec.map_type, MapType::PerCpuArray);
        assert_eq!(spec.name, "COUNTERS");
        assert_eq!(
            (spec.key_size, spec.value_size, spec.max_entries),
            (4, 12, 3)
        );
        assert_eq!(spec.value_stride(), 16);
        assert_eq!(spec.userspace_value_size(3), 48);
        let plain = MapSpec {
            map_type: MapType::Hash,
            ..spec
        };
        assert_eq!(plain.userspace_value_size(3), 12);
    }

    #[test]
    fn update_flags_parse_like_the_kernel() {
        assert_eq!(UpdateFlags::from_raw(0), Ok(UpdateFlags::Any));
        assert_eq!(UpdateFlags::from_raw(1), Ok(UpdateFlags::NoExist));
        assert_eq!(UpdateFlags::from_raw(2), Ok(UpdateFlags::Exist));
        for bad in [3, 4, 8, u64::MAX] {
            assert_eq!(
                UpdateFlags::try_from(bad),
                Err(MapError::InvalidFlags { flags: bad })
            );
        }
        for f in [UpdateFlags::Any, UpdateFlags::NoExist, UpdateFlags::Exist] {
            assert_eq!(UpdateFlags::from_raw(f.raw()), Ok(f));
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("a-b"), None);
    }

    #[test]
    fn errnos_match_the_kernel() {
        assert_eq!(MapError::NotFound.errno(), libc::ENOENT);
        assert_eq!(MapError::Exists.errno(), libc::EEXIST);
        assert_eq!(MapError::Full.errno(), libc::E2BIG);
        assert_eq!(MapError::DeleteFromArray.errno(), libc::EINVAL);
        assert_eq!(MapError::InvalidFlags { flags: 3 }.errno(), libc::EINVAL);
        let e = MapError::Kernel {
            op: "BPF_MAP_CREATE",
            errno: libc::EPERM,
        };
        assert_eq!(e.errno(), libc::EPERM);
        assert!(e.to_string().starts_with("BPF_MAP_CREATE: "));
    }
}
