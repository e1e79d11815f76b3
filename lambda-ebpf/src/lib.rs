//! The λ-NIC lambda SDK.
//!
//! - [`wire`]: the λ header, the one definition shared by lambdas and userspace.
//! - [`request`]: parse a λ request out of a frame and reply to it in place, with the bounds
//!   checks the kernel verifier wants and correct IP/UDP lengths and checksums.
//! - [`frame`]: the small trait the request code runs over (the XDP context in a lambda, a byte
//!   buffer in host tests).
//! - [`stats`]: the counters `serve` keeps per XDP action and λ status, and their layout.
//! - `xdp` (only when built for BPF): the XDP glue and [`serve`](xdp::serve), a lambda's entry.
//! - [`nic`]: the copies and checksums the NIC flavour (feature `nic`) does in code instead of
//!   the helpers the NFP lacks.
//! - [`inplace`]: byte reads, moves and a UDP checksum in the packet itself, for a lambda that
//!   rebuilds a packet without a scratch map (the memcached client's NIC build).
//! - [`seed!`]: default map contents shipped inside the object and loaded at attach time.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod frame;
pub mod inplace;
pub mod log;
pub mod nic;
pub mod request;
pub mod stats;
pub mod wire;
#[cfg(target_arch = "bpf")]
pub mod xdp;

pub use request::{IpVersion, LambdaMatch, MAX_BODY, Request, Verdict, udp_checksum};
pub use wire::{LambdaHeader, Status};

#[cfg(target_arch = "bpf")]
pub use aya_ebpf;

/// The prefix of the ELF sections that carry seed records; the rest of the name is the map's.
pub const SEED_SECTION_PREFIX: &str = ".lnic.seed.";

/// One default map entry, as laid out in a seed section: the key bytes, then the value bytes.
#[repr(C)]
pub struct SeedRecord<K, V> {
    pub key: K,
    pub value: V,
}

impl<K, V> SeedRecord<K, V> {
    /// Builds a record, refusing at compile time a key/value pair that would need padding
    /// (the loader splits the section into records of exactly key size + value size bytes).
    pub const fn new(key: K, value: V) -> Self {
        assert!(
            core::mem::size_of::<SeedRecord<K, V>>()
                == core::mem::size_of::<K>() + core::mem::size_of::<V>(),
            "seed record needs padding: make the value's alignment divide the key size"
        );
        SeedRecord { key, value }
    }
}

/// Ships a default entry for `map` inside the lambda object: the loader inserts it when it
/// creates the map (not when it reuses a pinned one, so runtime changes survive reattaching).
///
/// ```
/// use lambda_ebpf::{padded, seed};
///
/// #[repr(C)]
/// pub struct ObjectName([u8; 64]);
/// #[repr(C)]
/// pub struct Object {
///     len: u32,
///     data: [u8; 16],
/// }
///
/// // The record lands in the ELF section `.lnic.seed.OBJECTS`, for the map named OBJECTS.
/// seed!(OBJECTS, INDEX_SEED: ObjectName => Object = (
///     ObjectName(padded(b"index.html")),
///     Object { len: 5, data: padded(b"hello") }
/// ));
/// assert_eq!(INDEX_SEED.value.len, 5);
/// assert_eq!(&INDEX_SEED.key.0[..10], b"index.html");
/// ```
#[macro_export]
macro_rules! seed {
    ($map:ident, $name:ident : $key_ty:ty => $value_ty:ty = ($key:expr, $value:expr)) => {
        #[unsafe(link_section = concat!(".lnic.seed.", stringify!($map)))]
        #[used]
        static $name: $crate::SeedRecord<$key_ty, $value_ty> =
            $crate::SeedRecord::new($key, $value);
    };
}

/// Copies `text` into a zero-padded array at compile time (for map keys and seed values).
/// Fails to compile when `text` does not fit.
pub const fn padded<const N: usize>(text: &[u8]) -> [u8; N] {
    assert!(text.len() <= N, "text does not fit the array");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < text.len() {
        out[i] = text[i];
        i += 1;
    }
    out
}
