//! [`VmMap`]: a userspace BPF map with the kernel's semantics, for the VM backend.
//!
//! # Memory layout
//!
//! All values live in one slab allocated when the map is made, `max_entries` slots of
//! `round_up(value_size, 8)` bytes (× `ncpus` for per-CPU maps, CPU 0's copy first), every slot
//! 8-byte aligned. Kernel hash maps preallocate their elements too; here it also gives the
//! interpreter one address range to check program accesses against
//! ([`VmMap::value_memory`]), and makes a value's address stable until its entry is deleted.
//! Array slot `i` is index `i`; hash slots are handed out from a free list.
//!
//! # What is synchronised
//!
//! - The index (hash table, slot keys, free list, LRU list) sits behind one mutex.
//! - Every value byte that a safe method of `VmMap` reads or writes is copied while holding that
//!   same mutex (arrays included), so safe callers never race each other.
//! - Pointers from [`VmMap::program_lookup`] are not synchronised. Programs on different VM
//!   workers read and write through them concurrently, with each other and with the copies
//!   above, exactly as eBPF programs on different CPUs do with kernel map values (the kernel
//!   only serialises values that hold a `bpf_spin_lock`, which these maps never have).
//!   Dereferencing such a pointer is the VM's `unsafe` responsibility; torn values are
//!   possible, as in the kernel.
//! - Deleted slots are not freed memory: the slab lives as long as the map. The kernel keeps a
//!   deleted element alive for readers with RCU, but a preallocated element goes straight back
//!   to its free list and may be reused at once. We have no RCU either: a program that holds a
//!   pointer to a value that another thread deletes and reuses for a new key sees the new key's
//!   value. To make that window as long as we can, the free list is FIFO: a deleted slot is
//!   reused only after every other free slot.
//!
//! # Differences from the kernel
//!
//! - An update of an existing key writes the value in place. The kernel's (preallocated,
//!   non-per-CPU) hash map instead links a fresh element and retires the old one, so a reader
//!   holding the old pointer keeps seeing the old value; here it sees the new bytes.
//! - LRU: ours is an exact LRU list. Use means a program-side lookup or update, or a userspace
//!   update; a userspace lookup is not use (the kernel's syscall lookup does not set the
//!   reference bit either). A new key in a full map evicts the least recently used entry; an
//!   update of an existing key, or one that fails its flags check, evicts nothing. The kernel's
//!   LRU is approximate: it keeps per-CPU local free lists refilled in batches, evicts in
//!   batches when the global free list runs low (so it can evict before the map is full), uses
//!   a reference bit plus active/inactive lists instead of exact recency, and takes a free
//!   element before it looks the key up (so even an update of an existing key, or one that
//!   then fails with EEXIST, may evict another entry). Which entry goes therefore differs.
//! - `map_flags` are recorded but not acted on (no `BPF_F_NO_PREALLOC`: we always
//!   preallocate; no `BPF_F_NO_COMMON_LRU`: one LRU list for all workers).
//! - Hash iteration order is slot order (the kernel's is bucket order).
//! - A ring buffer (`BPF_MAP_TYPE_RINGBUF`) keeps its records in a bounded byte ring of
//!   `max_entries` bytes, each record taking the kernel's 8-byte header plus its length rounded
//!   up to 8, so the same records fit as in the kernel: [`VmMap::ringbuf_output`] (the VM's
//!   `bpf_ringbuf_output`) refuses a record that does not fit ([`MapError::Full`], `-EAGAIN`
//!   to the program) and [`VmMap::ringbuf_drain`] consumes them in order, as the single
//!   consumer position of the kernel's ring does. It has no elements (every keyed operation is
//!   [`MapError::NoElements`]). Reserve/submit, query, wakeups and memory-mapped access are not
//!   implemented; the bytes are not at a stable address a program could point into.

use std::{
    cell::UnsafeCell,
    collections::{HashMap, VecDeque},
    fmt,
    ops::Range,
    ptr::NonNull,
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::{
    Entries, MAX_HASH_KEY_SIZE, MAX_PER_CPU_VALUE_SIZE, MapAccess, MapError, MapSpec, MapType,
    UpdateFlags, round_up8,
};

/// "No slot" in the LRU links.
const NIL: u32 = u32::MAX;

/// A userspace BPF map: array, hash, per-CPU array, per-CPU hash, LRU hash or LRU per-CPU hash.
///
/// Two APIs: [`MapAccess`] is the userspace (syscall) view, identical to [`super::KernelMap`];
/// the `program_*` methods are what the VM's helpers call on behalf of a running program
/// (`bpf_map_lookup_elem` returns a pointer into the map, per-CPU maps act on one worker's
/// copy). See the module docs for what is synchronised and how it differs from the kernel.
pub struct VmMap {
    spec: MapSpec,
    ncpus: usize,
    /// `round_up(value_size, 8)`: distance between per-CPU copies.
    stride: usize,
    /// Bytes per slot: `stride × ncpus` for per-CPU maps, `stride` otherwise.
    slot_size: usize,
    /// The values; `u64` cells keep every slot 8-byte aligned.
    slab: Box<[UnsafeCell<u64>]>,
    store: Store,
}

// SAFETY: the slab is only written through raw pointers. VmMap's own reads and writes of it
// happen with the mutex of `store` held (see the module docs), so they never race; writes by
// programs through pointers from `program_lookup` are made in `unsafe` code by the VM, which
// takes on that contract, as kernel eBPF programs share values across CPUs. Everything else in
// VmMap is immutable after construction or behind the mutex.
unsafe impl Sync for VmMap {}

enum Store {
    /// Arrays need no index; the mutex serialises value copies.
    Array(Mutex<()>),
    Hash(Mutex<HashIndex>),
    /// A ring buffer: records, no elements (see the module docs).
    RingBuf(Mutex<Ring>),
}

/// The size of the header the kernel puts before every ring buffer record (`BPF_RINGBUF_HDR_SZ`:
/// a 4-byte length with busy/discard bits and a 4-byte page offset).
pub const RINGBUF_HEADER: usize = 8;

/// The records of a ring buffer map, laid out as in the kernel's data area: for each, an
/// 8-byte header (the length as a native `u32`, then 4 zero bytes) and the record, padded to
/// 8 bytes. A `VecDeque` is the ring: the producer appends at the back, the consumer takes
/// from the front, and `bytes.len()` is the producer position minus the consumer position.
struct Ring {
    /// At most `capacity` bytes; grown on demand so an unused 64 KiB ring costs nothing.
    bytes: VecDeque<u8>,
    /// `max_entries`: the size of the kernel's data area.
    capacity: usize,
}

impl Ring {
    /// Appends one record, or `Full` when it does not fit in what is left (the kernel's
    /// reserve fails the same way: `-EAGAIN` from `bpf_ringbuf_output`).
    fn push(&mut self, record: &[u8]) -> Result<(), MapError> {
        let len = u32::try_from(record.len()).map_err(|_| MapError::Full)?;
        let total = round_up8(record.len() + RINGBUF_HEADER);
        if total > self.capacity - self.bytes.len() {
            return Err(MapError::Full);
        }
        // Grown fallibly: a failed allocation drops the record like a full ring, never aborts.
        self.bytes.try_reserve(total).map_err(|_| MapError::Full)?;
        self.bytes.extend(len.to_ne_bytes());
        self.bytes.extend([0u8; 4]);
        self.bytes.extend(record);
        self.bytes.extend(std::iter::repeat_n(
            0u8,
            total - RINGBUF_HEADER - record.len(),
        ));
        Ok(())
    }

    /// Takes every record, oldest first.
    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        while self.bytes.len() >= RINGBUF_HEADER {
            let mut header = [0u8; 4];
            for (dst, src) in header.iter_mut().zip(self.bytes.iter()) {
                *dst = *src;
            }
            let len = u32::from_ne_bytes(header) as usize;
            // Only `push` writes here, so the record is whole; `min` keeps a bug from reading
            // past the end.
            let total = round_up8(len + RINGBUF_HEADER).min(self.bytes.len());
            let end = (RINGBUF_HEADER + len).min(total);
            let whole: Vec<u8> = self.bytes.drain(..total).collect();
            records.push(whole.get(RINGBUF_HEADER..end).unwrap_or_default().to_vec());
        }
        records
    }
}

/// The index of a hash map: which slot holds which key, which slots are free, and (LRU maps)
/// the order of use.
struct HashIndex {
    key_size: usize,
    slots: HashMap<Box<[u8]>, u32, KeyHasherBuilder>,
    /// The key of every slot in use (`key_size` bytes per slot), for iteration and eviction.
    keys: Vec<u8>,
    used: Vec<bool>,
    /// FIFO so that a deleted slot is reused as late as possible (see the module docs).
    free: VecDeque<u32>,
    lru: Option<LruList>,
}

/// Hashes map keys: a seeded multiply-rotate mix over 8-byte words. std's SipHash cost a
/// tenth of a JIT-compiled lambda's run time on a 64-byte key; keys come from packets, so the
/// seed is random per map (as the kernel seeds jhash), which keeps collisions unpredictable.
#[derive(Clone)]
struct KeyHasherBuilder {
    seed: u64,
}

impl KeyHasherBuilder {
    fn new() -> KeyHasherBuilder {
        use std::hash::{BuildHasher as _, Hasher as _};
        // std's RandomState is seeded from the OS; borrow its randomness for our seed.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x6c6e_6963);
        KeyHasherBuilder { seed: h.finish() }
    }
}

impl std::hash::BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { state: self.seed }
    }
}

struct KeyHasher {
    state: u64,
}

impl KeyHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(31);
    }
}

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's finaliser: spreads every input bit over the whole hash.
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A doubly linked list over slot numbers: `head` is the most recently used, `tail` the least.
struct LruList {
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
}

impl LruList {
    fn new(n: usize) -> Result<LruList, String> {
        Ok(LruList {
            prev: try_filled(n, NIL)?,
            next: try_filled(n, NIL)?,
            head: NIL,
            tail: NIL,
        })
    }

    fn unlink(&mut self, s: u32) {
        let (p, n) = (self.prev[s as usize], self.next[s as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[s as usize] = NIL;
        self.next[s as usize] = NIL;
    }

    fn push_front(&mut self, s: u32) {
        self.prev[s as usize] = NIL;
        self.next[s as usize] = self.head;
        if self.head == NIL {
            self.tail = s;
        } else {
            self.prev[self.head as usize] = s;
        }
        self.head = s;
    }

    /// Marks `s` (linked) as the most recently used.
    fn touch(&mut self, s: u32) {
        if self.head != s {
            self.unlink(s);
            self.push_front(s);
        }
    }

    /// The least recently used slot, unlinked.
    fn pop_back(&mut self) -> Option<u32> {
        let s = self.tail;
        if s == NIL {
            return None;
        }
        self.unlink(s);
        Some(s)
    }
}

impl HashIndex {
    fn new(spec: &MapSpec) -> Result<HashIndex, String> {
        let n = spec.max_entries as usize;
        let key_size = spec.key_size as usize;
        let key_bytes = n
            .checked_mul(key_size)
            .ok_or_else(|| format!("{n} keys of {key_size} bytes overflow the address space"))?;
        let mut free = VecDeque::new();
        free.try_reserve_exact(n)
            .map_err(|e| format!("cannot allocate the free list: {e}"))?;
        free.extend(0..spec.max_entries);
        let mut slots = HashMap::with_hasher(KeyHasherBuilder::new());
        slots
            .try_reserve(n)
            .map_err(|e| format!("cannot allocate the hash table: {e}"))?;
        Ok(HashIndex {
            key_size,
            slots,
            keys: try_filled(key_bytes, 0u8)?,
            used: try_filled(n, false)?,
            free,
            lru: if spec.map_type.is_lru() {
                Some(LruList::new(n)?)
            } else {
                None
            },
        })
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        self.slots.get(key).copied()
    }

    fn key_of(&self, slot: u32) -> &[u8] {
        let start = slot as usize * self.key_size;
        &self.keys[start..start + self.key_size]
    }

    fn touch(&mut self, slot: u32) {
        if let Some(lru) = &mut self.lru {
            lru.touch(slot);
        }
    }

    /// Takes a slot for a new key: a free one, or for LRU maps the least recently used entry's
    /// (which is removed); [`MapError::Full`] otherwise.
    fn alloc(&mut self) -> Result<u32, MapError> {
        if let Some(slot) = self.free.pop_front() {
            return Ok(slot);
        }
        let victim = self.lru.as_mut().and_then(LruList::pop_back);
        let Some(slot) = victim else {
            return Err(MapError::Full);
        };
        let key: Box<[u8]> = self.key_of(slot).into();
        self.slots.remove(&key);
        self.used[slot as usize] = false;
        Ok(slot)
    }

    /// Records `key` in `slot` (from [`HashIndex::alloc`]) as the most recently used entry.
    fn insert(&mut self, key: &[u8], slot: u32) {
        let start = slot as usize * self.key_size;
        self.keys[start..start + self.key_size].copy_from_slice(key);
        self.used[slot as usize] = true;
        self.slots.insert(key.into(), slot);
        if let Some(lru) = &mut self.lru {
            lru.push_front(slot);
        }
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), MapError> {
        let slot = self.slots.remove(key).ok_or(MapError::NotFound)?;
        self.used[slot as usize] = false;
        if let Some(lru) = &mut self.lru {
            lru.unlink(slot);
        }
        self.free.push_back(slot);
        Ok(())
    }

    /// The first slot in use at or after `from`.
    fn first_used_from(&self, from: usize) -> Option<u32> {
        (from..self.used.len())
            .find(|&s| self.used[s])
            .map(|s| s as u32)
    }

    /// Iteration in slot order; a missing `key` restarts from the first, as the kernel does.
    fn next_key(&self, key: Option<&[u8]>) -> Option<Vec<u8>> {
        let from = key
            .and_then(|k| self.find(k))
            .map_or(0, |slot| slot as usize + 1);
        self.first_used_from(from)
            .map(|slot| self.key_of(slot).to_vec())
    }
}

/// A vector of `n` copies of `fill`, or a message if it cannot be allocated (a map's size comes
/// from its ELF object: a huge one must be an error, not an abort).
fn try_filled<T: Clone>(n: usize, fill: T) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|e| format!("cannot allocate {n} elements: {e}"))?;
    v.resize(n, fill);
    Ok(v)
}

impl VmMap {
    /// A new, empty map (arrays: every element zero) whose per-CPU values have `ncpus` copies,
    /// one per VM worker. Refuses types other than the six supported with
    /// [`MapError::UnsupportedType`], and what the kernel would refuse to create
    /// (zero sizes or `max_entries`, array keys other than 4 bytes, hash keys over 512 bytes,
    /// per-CPU values over 32 KiB) with [`MapError::InvalidSpec`].
    pub fn new(spec: MapSpec, ncpus: usize) -> Result<VmMap, MapError> {
        let invalid = |reason: String| MapError::InvalidSpec {
            map: spec.name.clone(),
            reason,
        };
        if let MapType::Other(_) = spec.map_type {
            return Err(MapError::UnsupportedType {
                map: spec.name.clone(),
                map_type: spec.map_type,
            });
        }
        let ring = spec.map_type.is_ring_buffer();
        if !ring && (spec.key_size == 0 || spec.value_size == 0 || spec.max_entries == 0) {
            return Err(invalid(format!(
                "key_size {}, value_size {} and max_entries {} must all be non-zero",
                spec.key_size, spec.value_size, spec.max_entries
            )));
        }
        if spec.map_type.is_array() && spec.key_size != 4 {
            return Err(invalid(format!(
                "array keys are 4-byte indices, not {} bytes",
                spec.key_size
            )));
        }
        if spec.map_type.is_hash() && spec.key_size > MAX_HASH_KEY_SIZE {
            return Err(invalid(format!(
                "hash keys are at most {MAX_HASH_KEY_SIZE} bytes, not {}",
                spec.key_size
            )));
        }
        if spec.map_type.is_per_cpu() && spec.value_size > MAX_PER_CPU_VALUE_SIZE {
            return Err(invalid(format!(
                "per-CPU values are at most {MAX_PER_CPU_VALUE_SIZE} bytes, not {}",
                spec.value_size
            )));
        }
        if ncpus == 0 {
            return Err(invalid("a map needs at least one CPU (VM worker)".into()));
        }
        if spec.map_type.is_ring_buffer() {
            let map = spec.name.clone();
            return VmMap::ring_buffer(spec, ncpus)
                .map_err(|reason| MapError::InvalidSpec { map, reason });
        }
        let stride = round_up8(spec.value_size as usize);
        let copies = if spec.map_type.is_per_cpu() { ncpus } else { 1 };
        let slot_size = stride.checked_mul(copies);
        let total = slot_size.and_then(|s| s.checked_mul(spec.max_entries as usize));
        let (Some(slot_size), Some(total)) = (slot_size, total) else {
            return Err(invalid("the values overflow the address space".into()));
        };
        let slab: Vec<UnsafeCell<u64>> = {
            let mut v = Vec::new();
            v.try_reserve_exact(total / 8)
                .map_err(|e| invalid(format!("cannot allocate {total} bytes of values: {e}")))?;
            v.resize_with(total / 8, || UnsafeCell::new(0));
            v
        };
        let store = if spec.map_type.is_array() {
            Store::Array(Mutex::new(()))
        } else {
            Store::Hash(Mutex::new(HashIndex::new(&spec).map_err(invalid)?))
        };
        Ok(VmMap {
            spec,
            ncpus,
            stride,
            slot_size,
            slab: slab.into_boxed_slice(),
            store,
        })
    }

    /// An empty ring buffer, after the kernel's checks: no key or value, and a
    /// size (`max_entries`) that is a power of two and a whole number of pages.
    fn ring_buffer(spec: MapSpec, ncpus: usize) -> Result<VmMap, String> {
        // The kernel's page size; 4 KiB on every target the VM runs lambdas for.
        const PAGE: u32 = 4096;
        if spec.key_size != 0 || spec.value_size != 0 {
            return Err(format!(
                "a ring buffer has no keys or values, not {}-byte keys and {}-byte values",
                spec.key_size, spec.value_size
            ));
        }
        if !spec.max_entries.is_power_of_two() || !spec.max_entries.is_multiple_of(PAGE) {
            return Err(format!(
                "a ring buffer's size must be a power of two multiple of {PAGE} bytes, not {}",
                spec.max_entries
            ));
        }
        let spec_capacity = spec.max_entries as usize;
        Ok(VmMap {
            spec,
            ncpus,
            stride: 0,
            slot_size: 0,
            slab: Box::new([]),
            store: Store::RingBuf(Mutex::new(Ring {
                bytes: VecDeque::new(),
                capacity: spec_capacity,
            })),
        })
    }

    /// Appends `record` to a ring buffer map, as `bpf_ringbuf_output` does:
    /// [`MapError::Full`] (the kernel's `-EAGAIN`) when the ring has no room for it with its
    /// 8-byte header, rounded up to 8 bytes, and the record is dropped.
    /// [`MapError::InvalidSpec`] on a map that is not a ring buffer.
    pub fn ringbuf_output(&self, record: &[u8]) -> Result<(), MapError> {
        match &self.store {
            Store::RingBuf(ring) => lock(ring).push(record),
            Store::Array(_) | Store::Hash(_) => Err(self.not_a_ring()),
        }
    }

    /// Consumes and returns every record of a ring buffer map, oldest first (possibly none).
    pub fn ringbuf_drain(&self) -> Result<Vec<Vec<u8>>, MapError> {
        match &self.store {
            Store::RingBuf(ring) => Ok(lock(ring).drain()),
            Store::Array(_) | Store::Hash(_) => Err(self.not_a_ring()),
        }
    }

    fn not_a_ring(&self) -> MapError {
        MapError::InvalidSpec {
            map: self.spec.name.clone(),
            reason: "not a ring buffer".into(),
        }
    }

    /// Refuses keyed operations on a map without elements.
    fn keyed(&self) -> Result<(), MapError> {
        match self.store {
            Store::RingBuf(_) => Err(MapError::NoElements {
                map: self.spec.name.clone(),
            }),
            Store::Array(_) | Store::Hash(_) => Ok(()),
        }
    }

    /// The number of VM workers (per-CPU copies) the map was made for.
    pub fn ncpus(&self) -> usize {
        self.ncpus
    }

    /// The address range of all value bytes (every slot, padding included): where pointers
    /// from [`VmMap::program_lookup`] point, for the interpreter's bounds checks. Fixed for
    /// the map's life.
    pub fn value_memory(&self) -> Range<usize> {
        let start = self.base() as usize;
        start..start + self.slab.len() * 8
    }

    /// `bpf_map_lookup_elem` from a program running on worker `cpu`: a pointer to
    /// `value_size` bytes (that worker's copy for per-CPU maps), or `None` if the key is
    /// missing, out of range, of the wrong size, or `cpu` has no copy. Marks an LRU entry as
    /// used.
    ///
    /// The pointer stays valid (points into [`VmMap::value_memory`]) as long as the map lives;
    /// it refers to this key's value until the key is deleted or evicted (see the module docs).
    pub fn program_lookup(&self, key: &[u8], cpu: usize) -> Option<NonNull<u8>> {
        if key.len() != self.spec.key_size as usize {
            return None;
        }
        let cpu = if self.spec.map_type.is_per_cpu() {
            (cpu < self.ncpus).then_some(cpu)?
        } else {
            0
        };
        let slot = match &self.store {
            Store::Array(_) => self.array_index(key)?,
            Store::RingBuf(_) => return None,
            Store::Hash(index) => {
                let mut index = lock(index);
                let slot = index.find(key)?;
                index.touch(slot);
                slot
            }
        };
        NonNull::new(self.value_ptr(slot, cpu))
    }

    /// `bpf_map_update_elem` from a program on worker `cpu`, with the kernel's semantics:
    /// `value` is `value_size` bytes; raw `flags` other than 0, 1, 2 are
    /// [`MapError::InvalidFlags`].
    ///
    /// Per-CPU maps: only `cpu`'s copy is written. A new per-CPU hash entry gets `value` on
    /// `cpu` and zeroes on every other worker (the kernel zero-fills the other CPUs so that a
    /// program can rely on their initial value). An LRU entry becomes the most recently used.
    pub fn program_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: usize,
    ) -> Result<(), MapError> {
        self.check_key(key)?;
        self.check_len(value, self.spec.value_size as usize)?;
        let flags = UpdateFlags::from_raw(flags)?;
        let cpu = if self.spec.map_type.is_per_cpu() {
            if cpu >= self.ncpus {
                return Err(MapError::InvalidCpu {
                    map: self.spec.name.clone(),
                    cpu,
                    ncpus: self.ncpus,
                });
            }
            cpu
        } else {
            0
        };
        self.update_with(key, flags, |slot, is_new| {
            if is_new && self.spec.map_type.is_per_cpu() {
                self.zero_slot(slot);
            }
            self.write(self.value_ptr(slot, cpu), value);
        })
    }

    /// `bpf_map_delete_elem` from a program: as [`MapAccess::delete`].
    pub fn program_delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.delete(key)
    }

    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.slab.as_ptr()).cast::<u8>()
    }

    /// Pointer to `cpu`'s copy of the value in `slot` (`slot < max_entries`,
    /// `cpu < ncpus`, and `cpu == 0` unless per-CPU).
    fn value_ptr(&self, slot: u32, cpu: usize) -> *mut u8 {
        let offset = slot as usize * self.slot_size + cpu * self.stride;
        debug_assert!(offset + self.spec.value_size as usize <= self.slab.len() * 8);
        // SAFETY: in bounds of the slab by the arguments' contract (slot < max_entries and
        // cpu < copies per slot), which every caller derives from checked values.
        unsafe { self.base().add(offset) }
    }

    /// Copies `src` to `dst`, which must point into the slab with `src.len()` bytes to go;
    /// the caller holds the store's mutex.
    fn write(&self, dst: *mut u8, src: &[u8]) {
        // SAFETY: dst is in the slab with room for src (callers pass value_ptr() with at most
        // a slot's worth of bytes); src is a distinct Rust slice, so they do not overlap; the
        // mutex is held, so no other VmMap method touches these bytes meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
    }

    /// `len` bytes starting at `src` (in the slab); the caller holds the store's mutex.
    fn read(&self, src: *const u8, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
        out
    }

    fn zero_slot(&self, slot: u32) {
        // SAFETY: the slot's bytes are in the slab; the caller holds the mutex.
        unsafe { std::ptr::write_bytes(self.value_ptr(slot, 0), 0, self.slot_size) }
    }

    /// The userspace view of the value in `slot`: `value_size` bytes, or every CPU's copy
    /// with its padding for per-CPU maps. The caller holds the mutex.
    fn read_user(&self, slot: u32) -> Vec<u8> {
        let len = if self.spec.map_type.is_per_cpu() {
            self.slot_size
        } else {
            self.spec.value_size as usize
        };
        self.read(self.value_ptr(slot, 0), len)
    }

    /// The array index of a 4-byte key, if in range.
    fn array_index(&self, key: &[u8]) -> Option<u32> {
        let index = u32::from_ne_bytes(key.try_into().ok()?);
        (index < self.spec.max_entries).then_some(index)
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

    fn check_len(&self, value: &[u8], expected: usize) -> Result<(), MapError> {
        if value.len() != expected {
            return Err(MapError::ValueSize {
                map: self.spec.name.clone(),
                expected,
                actual: value.len(),
            });
        }
        Ok(())
    }

    /// The update algorithm shared by userspace and programs: the kernel's order of checks,
    /// then `write(slot, is_new)` with the mutex held.
    fn update_with(
        &self,
        key: &[u8],
        flags: UpdateFlags,
        write: impl FnOnce(u32, bool),
    ) -> Result<(), MapError> {
        match &self.store {
            Store::RingBuf(_) => self.keyed(),
            Store::Array(mutex) => {
                // Kernel order: index range (E2BIG) before BPF_NOEXIST (EEXIST).
                let slot = self.array_index(key).ok_or(MapError::Full)?;
                if flags == UpdateFlags::NoExist {
                    return Err(MapError::Exists);
                }
                let _guard = lock(mutex);
                write(slot, false);
                Ok(())
            }
            Store::Hash(index) => {
                let mut index = lock(index);
                match (index.find(key), flags) {
                    (Some(_), UpdateFlags::NoExist) => Err(MapError::Exists),
                    (None, UpdateFlags::Exist) => Err(MapError::NotFound),
                    (Some(slot), _) => {
                        index.touch(slot);
                        write(slot, false);
                        Ok(())
                    }
                    (None, _) => {
                        let slot = index.alloc()?;
                        index.insert(key, slot);
                        write(slot, true);
                        Ok(())
                    }
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics with the lock held, and the index stays consistent between statements
    // anyway, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MapAccess for VmMap {
    fn spec(&self) -> &MapSpec {
        &self.spec
    }

    fn userspace_value_size(&self) -> usize {
        self.spec.userspace_value_size(self.ncpus)
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        self.keyed()?;
        self.check_key(key)?;
        Ok(match &self.store {
            Store::RingBuf(_) => None,
            Store::Array(mutex) => self.array_index(key).map(|slot| {
                let _guard = lock(mutex);
                self.read_user(slot)
            }),
            // No LRU touch: the kernel's syscall lookup does not count as use.
            Store::Hash(index) => {
                let index = lock(index);
                index.find(key).map(|slot| self.read_user(slot))
            }
        })
    }

    fn update(&self, key: &[u8], value: &[u8], flags: UpdateFlags) -> Result<(), MapError> {
        self.keyed()?;
        self.check_key(key)?;
        self.check_len(value, self.userspace_value_size())?;
        // Userspace sets every CPU's copy, padding included (the kernel copies 8-byte
        // multiples per CPU); a plain value is value_size bytes.
        self.update_with(key, flags, |slot, _| {
            self.write(self.value_ptr(slot, 0), value)
        })
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        match &self.store {
            Store::RingBuf(_) => self.keyed(),
            Store::Array(_) => Err(MapError::DeleteFromArray),
            Store::Hash(index) => lock(index).remove(key),
        }
    }

    fn next_key(&self, key: Option<&[u8]>) -> Result<Option<Vec<u8>>, MapError> {
        self.keyed()?;
        if let Some(k) = key {
            self.check_key(k)?;
        }
        Ok(match &self.store {
            Store::RingBuf(_) => None,
            Store::Array(_) => {
                // Kernel: a missing or out-of-range key starts over at 0; the last has none.
                let next = match key.and_then(|k| self.array_index(k)) {
                    None => 0,
                    Some(i) if i + 1 == self.spec.max_entries => return Ok(None),
                    Some(i) => i + 1,
                };
                Some(next.to_ne_bytes().to_vec())
            }
            Store::Hash(index) => lock(index).next_key(key),
        })
    }

    /// A consistent snapshot: the whole walk holds the lock.
    fn entries(&self) -> Result<Entries, MapError> {
        Ok(match &self.store {
            // Nothing to list: a ring buffer's records are not elements.
            Store::RingBuf(_) => Vec::new(),
            Store::Array(mutex) => {
                let _guard = lock(mutex);
                (0..self.spec.max_entries)
                    .map(|i| (i.to_ne_bytes().to_vec(), self.read_user(i)))
                    .collect()
            }
            Store::Hash(index) => {
                let index = lock(index);
                (0..self.spec.max_entries)
                    .filter(|&s| index.used[s as usize])
                    .map(|s| (index.key_of(s).to_vec(), self.read_user(s)))
                    .collect()
            }
        })
    }
}

impl fmt::Debug for VmMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmMap")
            .field("spec", &self.spec)
            .field("ncpus", &self.ncpus)
            .field("value_memory", &self.value_memory())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapSpec {
        MapSpec {
            name: "M".into(),
            map_type,
            key_size,
            value_size,
            max_entries,
            flags: 0,
        }
    }

    fn idx(i: u32) -> [u8; 4] {
        i.to_ne_bytes()
    }

    /// The `value_size` bytes a program-side pointer points at.
    fn read_ptr(p: NonNull<u8>, len: usize) -> Vec<u8> {
        // SAFETY: tests read program pointers of live maps, single-threaded.
        unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }.to_vec()
    }

    fn sorted_keys(m: &VmMap) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = m.entries().unwrap().into_iter().map(|(k, _)| k).collect();
        keys.sort();
        keys
    }

    #[test]
    fn vm_map_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<VmMap>();
        let m: Box<dyn MapAccess> = Box::new(VmMap::new(spec(MapType::Hash, 1, 1, 1), 1).unwrap());
        assert_eq!(m.spec().max_entries, 1);
    }

    #[test]
    fn refuses_unsupported_types_and_bad_specs() {
        assert_eq!(
            VmMap::new(spec(MapType::Other(3), 4, 4, 4), 1).unwrap_err(),
            MapError::UnsupportedType {
                map: "M".into(),
                map_type: MapType::Other(3)
            }
        );
        for bad in [
            spec(MapType::Hash, 0, 4, 4),
            spec(MapType::Hash, 4, 0, 4),
            spec(MapType::Hash, 4, 4, 0),
            spec(MapType::Array, 8, 4, 4),
            spec(MapType::Hash, 513, 4, 4),
            spec(MapType::PerCpuArray, 4, 32 * 1024 + 1, 4),
            spec(MapType::Array, 4, u32::MAX, u32::MAX),
        ] {
            let err = VmMap::new(bad.clone(), 2).unwrap_err();
            assert!(
                matches!(err, MapError::InvalidSpec { .. }),
                "{bad:?}: {err:?}"
            );
        }
        assert!(matches!(
            VmMap::new(spec(MapType::Hash, 4, 4, 4), 0),
            Err(MapError::InvalidSpec { .. })
        ));
    }

    #[test]
    fn array_semantics() {
        let m = VmMap::new(spec(MapType::Array, 4, 6, 3), 2).unwrap();
        assert_eq!(
            m.lookup(&idx(0)),
            Ok(Some(vec![0; 6])),
            "arrays start zeroed"
        );
        assert_eq!(m.lookup(&idx(3)), Ok(None), "out of range");
        m.update(&idx(1), b"abcdef", UpdateFlags::Any).unwrap();
        m.update(&idx(1), b"ABCDEF", UpdateFlags::Exist).unwrap();
        assert_eq!(m.lookup(&idx(1)), Ok(Some(b"ABCDEF".to_vec())));
        assert_eq!(
            m.update(&idx(1), b"xxxxxx", UpdateFlags::NoExist),
            Err(MapError::Exists),
            "every array element exists"
        );
        assert_eq!(
            m.update(&idx(3), b"xxxxxx", UpdateFlags::Any),
            Err(MapError::Full)
        );
        assert_eq!(
            m.update(&idx(3), b"xxxxxx", UpdateFlags::NoExist),
            Err(MapError::Full),
            "the kernel checks the index before BPF_NOEXIST"
        );
        assert_eq!(m.delete(&idx(1)), Err(MapError::DeleteFromArray));
        assert_eq!(m.delete(&idx(7)), Err(MapError::DeleteFromArray));
        assert_eq!(m.program_delete(&idx(0)), Err(MapError::DeleteFromArray));
        // Iteration: 0, 1, 2, then the end; out-of-range keys start over.
        assert_eq!(m.next_key(None), Ok(Some(idx(0).to_vec())));
        assert_eq!(m.next_key(Some(&idx(0))), Ok(Some(idx(1).to_vec())));
        assert_eq!(m.next_key(Some(&idx(2))), Ok(None));
        assert_eq!(m.next_key(Some(&idx(99))), Ok(Some(idx(0).to_vec())));
        assert_eq!(m.entries().unwrap().len(), 3);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        for t in [MapType::Array, MapType::Hash, MapType::PerCpuHash] {
            let m = VmMap::new(spec(t, 4, 4, 2), 2).unwrap();
            let key_err = MapError::KeySize {
                map: "M".into(),
                expected: 4,
                actual: 3,
            };
            assert_eq!(m.lookup(b"abc"), Err(key_err.clone()));
            assert_eq!(m.delete(b"abc"), Err(key_err.clone()));
            assert_eq!(m.next_key(Some(b"abc")), Err(key_err.clone()));
            assert_eq!(
                m.update(b"abc", &[0; 4], UpdateFlags::Any),
                Err(key_err.clone())
            );
            assert_eq!(m.program_update(b"abc", &[0; 4], 0, 0), Err(key_err));
            assert_eq!(m.program_lookup(b"abc", 0), None);
            let expected = if t.is_per_cpu() { 16 } else { 4 };
            assert_eq!(
                m.update(&idx(0), &[0; 5], UpdateFlags::Any),
                Err(MapError::ValueSize {
                    map: "M".into(),
                    expected,
                    actual: 5
                })
            );
            assert_eq!(
                m.program_update(&idx(0), &[0; 16], 0, 0),
                Err(MapError::ValueSize {
                    map: "M".into(),
                    expected: 4,
                    actual: 16
                }),
                "a program writes one copy of value_size bytes"
            );
        }
    }

    #[test]
    fn invalid_flags_from_programs() {
        let m = VmMap::new(spec(MapType::Hash, 4, 4, 2), 1).unwrap();
        for flags in [3, 4, 8] {
            assert_eq!(
                m.program_update(&idx(0), &[0; 4], flags, 0),
                Err(MapError::InvalidFlags { flags })
            );
        }
        assert_eq!(m.lookup(&idx(0)), Ok(None));
    }

    #[test]
    fn per_cpu_array_layout_and_program_updates() {
        let m = VmMap::new(spec(MapType::PerCpuArray, 4, 4, 2), 3).unwrap();
        assert_eq!(m.userspace_value_size(), 24, "3 copies of round_up(4, 8)");
        let mut all = Vec::new();
        for cpu in 0..3u8 {
            all.extend_from_slice(&[cpu + 1; 4]);
            all.extend_from_slice(&[0xee; 4]); // padding, stored as the kernel stores it
        }
        m.update(&idx(1), &all, UpdateFlags::Any).unwrap();
        assert_eq!(m.lookup(&idx(1)), Ok(Some(all.clone())));
        // A program writes only its own CPU's copy.
        m.program_update(&idx(1), &[9; 4], 0, 2).unwrap();
        let mut expect = all.clone();
        expect[16..20].copy_from_slice(&[9; 4]);
        assert_eq!(m.lookup(&idx(1)), Ok(Some(expect)));
        for cpu in 0..3 {
            let p = m.program_lookup(&idx(1), cpu).unwrap();
            let want = if cpu == 2 { 9 } else { cpu as u8 + 1 };
            assert_eq!(read_ptr(p, 4), vec![want; 4]);
        }
        assert_eq!(m.program_lookup(&idx(1), 3), None, "no fourth copy");
        assert_eq!(
            m.program_update(&idx(1), &[0; 4], 0, 3),
            Err(MapError::InvalidCpu {
                map: "M".into(),
                cpu: 3,
                ncpus: 3
            })
        );
        assert_eq!(
            m.program_update(&idx(2), &[0; 4], 0, 0),
            Err(MapError::Full)
        );
        assert_eq!(
            m.program_update(&idx(0), &[0; 4], 1, 0),
            Err(MapError::Exists)
        );
    }

    #[test]
    fn hash_semantics() {
        let m = VmMap::new(spec(MapType::Hash, 2, 3, 2), 1).unwrap();
        assert_eq!(m.next_key(None), Ok(None), "empty");
        assert_eq!(m.lookup(b"aa"), Ok(None));
        assert_eq!(
            m.update(b"aa", b"111", UpdateFlags::Exist),
            Err(MapError::NotFound)
        );
        m.update(b"aa", b"111", UpdateFlags::NoExist).unwrap();
        assert_eq!(
            m.update(b"aa", b"222", UpdateFlags::NoExist),
            Err(MapError::Exists)
        );
        m.update(b"bb", b"222", UpdateFlags::Any).unwrap();
        assert_eq!(
            m.update(b"cc", b"333", UpdateFlags::Any),
            Err(MapError::Full)
        );
        m.update(b"aa", b"999", UpdateFlags::Any).unwrap();
        m.update(b"aa", b"888", UpdateFlags::Exist).unwrap();
        assert_eq!(
            m.lookup(b"aa"),
            Ok(Some(b"888".to_vec())),
            "update in a full map"
        );
        // Iteration visits every key once; a missing key restarts from the first.
        let first = m.next_key(None).unwrap().unwrap();
        let second = m.next_key(Some(&first)).unwrap().unwrap();
        assert_ne!(first, second);
        assert_eq!(m.next_key(Some(&second)), Ok(None));
        assert_eq!(m.next_key(Some(b"zz")), Ok(Some(first)));
        assert_eq!(sorted_keys(&m), vec![b"aa".to_vec(), b"bb".to_vec()]);
        assert_eq!(m.delete(b"cc"), Err(MapError::NotFound));
        m.delete(b"aa").unwrap();
        assert_eq!(m.delete(b"aa"), Err(MapError::NotFound));
        assert_eq!(m.lookup(b"aa"), Ok(None));
        m.update(b"cc", b"333", UpdateFlags::Any).unwrap();
        assert_eq!(sorted_keys(&m), vec![b"bb".to_vec(), b"cc".to_vec()]);
        assert_eq!(m.program_delete(b"cc"), Ok(()));
        assert_eq!(m.program_delete(b"cc"), Err(MapError::NotFound));
    }

    #[test]
    fn program_pointers_are_aligned_stable_and_inside_value_memory() {
        let m = VmMap::new(spec(MapType::Hash, 4, 5, 4), 1).unwrap();
        let mem = m.value_memory();
        assert_eq!(mem.len(), 4 * 8, "4 slots of round_up(5, 8)");
        m.program_update(&idx(7), b"hello", 0, 0).unwrap();
        let p = m.program_lookup(&idx(7), 0).unwrap();
        assert!(mem.contains(&(p.as_ptr() as usize)));
        assert!(mem.contains(&(p.as_ptr() as usize + 4)));
        assert!((p.as_ptr() as usize).is_multiple_of(8));
        assert_eq!(read_ptr(p, 5), b"hello");
        // Updates write in place: the pointer keeps seeing the key's value.
        m.update(&idx(7), b"world", UpdateFlags::Exist).unwrap();
        assert_eq!(m.program_lookup(&idx(7), 0), Some(p));
        assert_eq!(read_ptr(p, 5), b"world");
        // A program writes through the pointer; userspace sees it.
        // SAFETY: p points at 5 bytes of this live map; single-threaded.
        unsafe { p.as_ptr().write(b'W') };
        assert_eq!(m.lookup(&idx(7)), Ok(Some(b"World".to_vec())));
        // A deleted slot is reused only after every other free slot (FIFO).
        m.delete(&idx(7)).unwrap();
        let mut others = Vec::new();
        for k in 0..3 {
            m.update(&idx(k), b"other", UpdateFlags::Any).unwrap();
            others.push(m.program_lookup(&idx(k), 0).unwrap());
        }
        assert!(!others.contains(&p));
        m.update(&idx(3), b"reuse", UpdateFlags::Any).unwrap();
        assert_eq!(m.program_lookup(&idx(3), 0), Some(p));
        assert_eq!(
            read_ptr(p, 5),
            b"reuse",
            "a stale pointer sees the new key's value"
        );
    }

    #[test]
    fn per_cpu_hash_program_update_zeroes_other_cpus_of_new_entries() {
        let m = VmMap::new(spec(MapType::PerCpuHash, 4, 4, 2), 2).unwrap();
        m.update(
            &idx(1),
            &[1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0],
            UpdateFlags::Any,
        )
        .unwrap();
        m.delete(&idx(1)).unwrap();
        // FIFO free list: key 2 takes the never-used slot, key 1 then gets the deleted
        // entry's slot back, which still holds its bytes: worker 0's copy must read zero.
        m.program_update(&idx(2), &[5; 4], 0, 1).unwrap();
        m.program_update(&idx(1), &[7; 4], 0, 1).unwrap();
        let v = m.lookup(&idx(1)).unwrap().unwrap();
        assert_eq!(&v[0..4], &[0; 4]);
        assert_eq!(&v[8..12], &[7; 4]);
        // Existing entry: only the program's CPU is written.
        m.program_update(&idx(1), &[8; 4], 2, 0).unwrap();
        let v = m.lookup(&idx(1)).unwrap().unwrap();
        assert_eq!((&v[0..4], &v[8..12]), (&[8u8; 4][..], &[7u8; 4][..]));
        assert_eq!(
            read_ptr(m.program_lookup(&idx(1), 1).unwrap(), 4),
            vec![7; 4]
        );
        assert_eq!(
            m.program_update(&idx(3), &[0; 4], 0, 0),
            Err(MapError::Full)
        );
        assert_eq!(
            m.program_update(&idx(3), &[0; 4], 2, 0),
            Err(MapError::NotFound)
        );
        assert_eq!(
            m.program_update(&idx(2), &[0; 4], 1, 0),
            Err(MapError::Exists)
        );
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let m = VmMap::new(spec(MapType::LruHash, 4, 4, 3), 1).unwrap();
        for k in 0..3 {
            m.update(&idx(k), &[k as u8; 4], UpdateFlags::Any).unwrap();
        }
        // Use 0 (program lookup) and 1 (update); 2 is now the least recently used.
        assert!(m.program_lookup(&idx(0), 0).is_some());
        m.update(&idx(1), &[11; 4], UpdateFlags::Exist).unwrap();
        // A userspace lookup is not use.
        assert!(m.lookup(&idx(2)).unwrap().is_some());
        m.update(&idx(3), &[3; 4], UpdateFlags::Any).unwrap();
        assert_eq!(
            sorted_keys(&m),
            vec![idx(0).to_vec(), idx(1).to_vec(), idx(3).to_vec()]
        );
        // LRU order now (oldest first): 0, 1, 3. Program updates count as use too.
        m.program_update(&idx(0), &[10; 4], 2, 0).unwrap();
        m.update(&idx(4), &[4; 4], UpdateFlags::NoExist).unwrap();
        assert_eq!(
            sorted_keys(&m),
            vec![idx(0).to_vec(), idx(3).to_vec(), idx(4).to_vec()]
        );
        // Failed flag checks and updates of existing keys evict nothing.
        assert_eq!(
            m.update(&idx(4), &[0; 4], UpdateFlags::NoExist),
            Err(MapError::Exists)
        );
        assert_eq!(
            m.update(&idx(9), &[0; 4], UpdateFlags::Exist),
            Err(MapError::NotFound)
        );
        m.update(&idx(3), &[33; 4], UpdateFlags::Any).unwrap();
        assert_eq!(
            sorted_keys(&m),
            vec![idx(0).to_vec(), idx(3).to_vec(), idx(4).to_vec()]
        );
        // Deleting frees a slot: the next insert evicts nothing.
        m.delete(&idx(0)).unwrap();
        m.update(&idx(5), &[5; 4], UpdateFlags::Any).unwrap();
        assert_eq!(
            sorted_keys(&m),
            vec![idx(3).to_vec(), idx(4).to_vec(), idx(5).to_vec()]
        );
        assert_eq!(m.lookup(&idx(3)), Ok(Some(vec![33; 4])));
    }

    #[test]
    fn lru_per_cpu_eviction_zeroes_the_reused_slot() {
        let m = VmMap::new(spec(MapType::LruPerCpuHash, 4, 8, 1), 2).unwrap();
        m.update(&idx(0), &[0xaa; 16], UpdateFlags::Any).unwrap();
        m.program_update(&idx(1), &[1; 8], 0, 1).unwrap();
        let mut want = vec![0u8; 8];
        want.extend_from_slice(&[1; 8]);
        assert_eq!(m.entries().unwrap(), vec![(idx(1).to_vec(), want)]);
    }

    #[test]
    fn concurrent_workers_keep_the_index_consistent() {
        let m = std::sync::Arc::new(VmMap::new(spec(MapType::LruPerCpuHash, 4, 8, 16), 4).unwrap());
        let workers: Vec<_> = (0..4usize)
            .map(|cpu| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut x = 0x9e37_79b9_u32.wrapping_mul(cpu as u32 + 1);
                    for _ in 0..5_000 {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        let key = idx(x % 40);
                        match x % 4 {
                            0 => {
                                let _ = m.program_delete(&key);
                            }
                            1 => {
                                if let Some(p) = m.program_lookup(&key, cpu) {
                                    assert!(m.value_memory().contains(&(p.as_ptr() as usize)));
                                }
                            }
                            _ => m.program_update(&key, &[cpu as u8; 8], 0, cpu).unwrap(),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let entries = m.entries().unwrap();
        assert!(entries.len() <= 16);
        let mut walked = Vec::new();
        let mut k = m.next_key(None).unwrap();
        while let Some(key) = k {
            k = m.next_key(Some(&key)).unwrap();
            walked.push(key);
        }
        assert_eq!(walked.len(), entries.len());
    }

    #[test]
    fn ring_buffer_holds_max_entries_bytes_and_drains_in_order() {
        let ring = VmMap::new(spec(MapType::RingBuf, 0, 0, 4096), 2).unwrap();
        // 144-byte SDK records take 152 bytes each with the header: 26 fit in 4096 bytes
        // (3952), and the 27th (4104) does not.
        let record = |i: u8| vec![i; 144];
        for i in 0..26 {
            ring.ringbuf_output(&record(i)).unwrap();
        }
        assert!(matches!(
            ring.ringbuf_output(&record(26)),
            Err(MapError::Full)
        ));
        // 144 bytes are left: a record of up to 136 bytes still fits, exactly filling the ring
        // (the kernel lets the producer reach the consumer's position plus the size).
        assert!(matches!(
            ring.ringbuf_output(&[0xee; 137]),
            Err(MapError::Full)
        ));
        ring.ringbuf_output(&[0xee; 136]).unwrap();
        assert!(matches!(ring.ringbuf_output(&[1]), Err(MapError::Full)));
        let drained = ring.ringbuf_drain().unwrap();
        assert_eq!(drained.len(), 27);
        for (i, r) in drained.iter().take(26).enumerate() {
            assert_eq!(r, &record(i as u8));
        }
        assert_eq!(drained[26], vec![0xee; 136]);
        // Draining consumed everything: empty now, and the whole size is free again.
        assert!(ring.ringbuf_drain().unwrap().is_empty());
        // Odd sizes are padded to 8 bytes in the ring but come back at their length.
        ring.ringbuf_output(&[1, 2, 3]).unwrap();
        ring.ringbuf_output(&[]).unwrap();
        ring.ringbuf_output(&[9; 4088]).unwrap_err();
        assert_eq!(
            ring.ringbuf_drain().unwrap(),
            vec![vec![1, 2, 3], Vec::new()]
        );
        // A record as large as the ring can never fit (the kernel's reserve fails too).
        assert!(matches!(
            ring.ringbuf_output(&[0; 4096]),
            Err(MapError::Full)
        ));
        ring.ringbuf_output(&[0; 4088]).unwrap();
        // Still no elements for the keyed API.
        assert!(matches!(ring.lookup(&[]), Err(MapError::NoElements { .. })));
        assert!(ring.entries().unwrap().is_empty());
    }

    #[test]
    fn ring_buffer_operations_refuse_other_maps() {
        let array = VmMap::new(spec(MapType::Array, 4, 8, 1), 1).unwrap();
        assert!(matches!(
            array.ringbuf_output(&[1]),
            Err(MapError::InvalidSpec { .. })
        ));
        assert!(matches!(
            array.ringbuf_drain(),
            Err(MapError::InvalidSpec { .. })
        ));
    }
}
