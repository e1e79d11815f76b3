//! Differential test: the userspace maps ([`VmMap`]) against real kernel maps ([`KernelMap`]).
//!
//! For each of the six map types, a few key/value sizes and small `max_entries` (so that full
//! maps, out-of-range indices and LRU eviction happen), the same seeded pseudo-random sequence
//! of operations runs on a kernel map and on a VmMap with the same spec, and every result must
//! be identical: the same values, the same `MapError` variants, and the same contents at the
//! end. Hash iteration order differs between the two, so iteration is compared as sets.
//!
//! Needs root (BPF_MAP_CREATE). Without it the test prints "skipping: …" and passes, except
//! under `CI=true`, where a missing privilege fails it.
//!
//! A failure names the seed and the operation's number; the sequence is a pure function of the
//! seed, so it reproduces.

use std::collections::{BTreeMap, BTreeSet};

use loader::maps::{
    KernelMap, MapAccess, MapError, MapSpec, MapType, UpdateFlags, VmMap, possible_cpus,
};

/// Operations per map in the exact phase.
const OPS: usize = 3_000;
/// Operations per LRU map in the eviction phase (invariants only).
const EVICTION_OPS: usize = 1_500;

/// xorshift64: small, deterministic, good enough to pick operations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Whether to run; panics under `CI=true` without root.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = "not root: creating kernel maps (BPF_MAP_CREATE) needs CAP_BPF";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true and {reason}: this test must run privileged in CI");
    }
    println!("skipping: {reason}");
    false
}

/// Pins the calling thread to one CPU. The kernel's LRU keeps per-CPU free lists: a test that
/// migrates between CPUs can see evictions in a map that is far from full.
fn pin_to_one_cpu() {
    // SAFETY: cpu_set_t is plain data; the calls get valid pointers and sizes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set)) else {
            return;
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
    }
}

fn spec(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapSpec {
    MapSpec {
        name: format!("t_{}_{key_size}_{value_size}_{max_entries}", map_type.raw()),
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
    }
}

/// A kernel map and a VmMap made from the same spec.
struct Pair {
    spec: MapSpec,
    kernel: KernelMap,
    vm: VmMap,
    seed: u64,
}

impl Pair {
    fn new(spec: MapSpec, seed: u64) -> Pair {
        let ncpus = possible_cpus().expect("possible CPUs");
        let kernel = KernelMap::create(&spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        let vm = VmMap::new(spec.clone(), ncpus).unwrap_or_else(|e| panic!("{spec:?}: {e}"));
        assert_eq!(kernel.userspace_value_size(), vm.userspace_value_size());
        Pair {
            spec,
            kernel,
            vm,
            seed,
        }
    }

    fn ctx(&self, i: usize, op: &Op) -> String {
        format!(
            "{:?} k{} v{} max{} seed {:#x} op #{i} {op:?}",
            self.spec.map_type,
            self.spec.key_size,
            self.spec.value_size,
            self.spec.max_entries,
            self.seed
        )
    }
}

#[derive(Clone, Debug)]
enum Op {
    Lookup(Vec<u8>),
    Update(Vec<u8>, Vec<u8>, UpdateFlags),
    /// Flags the kernel must refuse: only the kernel takes raw flags from userspace.
    UpdateRawFlags(Vec<u8>, Vec<u8>, u64),
    Delete(Vec<u8>),
    NextKey(Option<Vec<u8>>),
}

/// What an operation returned, comparable across backends.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Value(Option<Vec<u8>>),
    Done,
    Next(Option<Vec<u8>>),
    Err(MapError),
}

fn run(map: &dyn MapAccess, kernel: Option<&KernelMap>, op: &Op) -> Outcome {
    let done = |r: Result<(), MapError>| r.map_or_else(Outcome::Err, |()| Outcome::Done);
    match op {
        Op::Lookup(k) => map.lookup(k).map_or_else(Outcome::Err, Outcome::Value),
        Op::Update(k, v, f) => done(map.update(k, v, *f)),
        Op::UpdateRawFlags(k, v, f) => match kernel {
            Some(km) => done(km.update_raw(k, v, *f)),
            // The userspace API cannot even express these flags; parsing refuses them.
            None => done(UpdateFlags::from_raw(*f).map(drop)),
        },
        Op::Delete(k) => done(map.delete(k)),
        Op::NextKey(k) => map
            .next_key(k.as_deref())
            .map_or_else(Outcome::Err, Outcome::Next),
    }
}

/// Random operations over a pool of keys: hits, misses, wrong sizes and bad flags.
struct Gen {
    rng: XorShift,
    key_size: usize,
    value_len: usize,
    pool: Vec<Vec<u8>>,
}

impl Gen {
    fn new(seed: u64, spec: &MapSpec, value_len: usize, pool_size: usize) -> Gen {
        let mut rng = XorShift(seed);
        let pool = if spec.map_type.is_array() {
            // Indices just past the end too: out-of-range lookups and updates.
            (0..pool_size as u32)
                .map(|i| i.to_ne_bytes().to_vec())
                .collect()
        } else {
            let mut keys = BTreeSet::new();
            while keys.len() < pool_size {
                keys.insert(rng.bytes(spec.key_size as usize));
            }
            let mut keys: Vec<_> = keys.into_iter().collect();
            // Shuffle so that pool order is not byte order.
            for i in (1..keys.len()).rev() {
                keys.swap(i, rng.below(i + 1));
            }
            keys
        };
        Gen {
            rng,
            key_size: spec.key_size as usize,
            value_len,
            pool,
        }
    }

    fn key(&mut self) -> Vec<u8> {
        self.pool[self.rng.below(self.pool.len())].clone()
    }

    fn op(&mut self) -> Op {
        let roll = self.rng.below(100);
        let flags = [UpdateFlags::Any, UpdateFlags::NoExist, UpdateFlags::Exist];
        match roll {
            0..25 => Op::Lookup(self.key()),
            25..60 => {
                let f = flags[self.rng.below(3)];
                Op::Update(self.key(), self.rng.bytes(self.value_len), f)
            }
            60..80 => Op::Delete(self.key()),
            80..84 => Op::NextKey(None),
            84..95 => Op::NextKey(Some(self.key())),
            95..97 => {
                let bad = [3, 4, 8, 1 << 40][self.rng.below(4)];
                Op::UpdateRawFlags(self.key(), self.rng.bytes(self.value_len), bad)
            }
            // Wrong sizes: the same KeySize/ValueSize errors from both, nothing reaches the
            // kernel.
            97 => Op::Lookup(self.rng.bytes(self.key_size + 1)),
            98 => Op::Delete(self.rng.bytes(self.key_size - 1)),
            _ => {
                let len = if self.rng.below(2) == 0 {
                    self.value_len + 1
                } else {
                    self.value_len - 1
                };
                Op::Update(self.key(), self.rng.bytes(len), UpdateFlags::Any)
            }
        }
    }
}

fn sorted_entries(map: &dyn MapAccess, what: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut e = map
        .entries()
        .unwrap_or_else(|err| panic!("{what}: entries: {err}"));
    e.sort();
    e
}

/// Walks `map` with next_key from the start: every key once, and exactly the keys of
/// `entries`.
fn check_walk(map: &dyn MapAccess, entries: &[(Vec<u8>, Vec<u8>)], what: &str) {
    let mut seen = BTreeSet::new();
    let mut key = map.next_key(None).unwrap();
    while let Some(k) = key {
        assert!(
            seen.insert(k.clone()),
            "{what}: next_key visited {k:x?} twice"
        );
        key = map.next_key(Some(&k)).unwrap();
    }
    let expected: BTreeSet<_> = entries.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(seen, expected, "{what}: next_key walk");
}

/// Checks a hash map's `next_key` answer against the map's keys: order is backend-specific,
/// but `None` only at the end (never for a missing key while the map has entries), and a
/// returned key must exist and differ from the one asked about.
fn check_hash_next(out: &Outcome, asked: Option<&[u8]>, keys: &BTreeSet<Vec<u8>>, what: &str) {
    let present = asked.is_some_and(|k| keys.contains(k));
    match out {
        Outcome::Next(Some(k)) => {
            assert!(
                keys.contains(k),
                "{what}: next_key gave a missing key {k:x?}"
            );
            assert_ne!(
                Some(k.as_slice()),
                asked,
                "{what}: next_key gave the same key"
            );
        }
        Outcome::Next(None) => assert!(
            keys.is_empty() || present,
            "{what}: next_key ended although the map has keys and the key asked about is missing"
        ),
        other => panic!("{what}: next_key: {other:?}"),
    }
}

fn keys_of(map: &dyn MapAccess) -> BTreeSet<Vec<u8>> {
    map.entries().unwrap().into_iter().map(|(k, _)| k).collect()
}

/// The exact phase: every result identical (hash `next_key` by the rules above). Returns how
/// often each kind of outcome happened, to show what was covered.
fn exact_phase(pair: &Pair, generator: &mut Gen, ops: usize) -> BTreeMap<String, usize> {
    let hash = pair.spec.map_type.is_hash();
    let mut tally = BTreeMap::new();
    for i in 0..ops {
        let op = generator.op();
        let what = pair.ctx(i, &op);
        let k_out = run(&pair.kernel, Some(&pair.kernel), &op);
        let v_out = run(&pair.vm, None, &op);
        *tally.entry(outcome_kind(&k_out)).or_insert(0) += 1;
        match (&op, hash) {
            (Op::NextKey(asked), true) => {
                let keys = keys_of(&pair.vm);
                assert_eq!(keys, keys_of(&pair.kernel), "{what}: keys differ");
                check_hash_next(&k_out, asked.as_deref(), &keys, &format!("{what} (kernel)"));
                check_hash_next(&v_out, asked.as_deref(), &keys, &format!("{what} (vm)"));
            }
            _ => assert_eq!(v_out, k_out, "{what}: vm (left) and kernel (right) differ"),
        }
        if i % 100 == 99 {
            compare_contents(pair, &what);
        }
    }
    compare_contents(pair, &format!("{:#x} end of exact phase", pair.seed));
    tally
}

fn outcome_kind(out: &Outcome) -> String {
    match out {
        Outcome::Value(Some(_)) => "hit".into(),
        Outcome::Value(None) => "miss".into(),
        Outcome::Done => "ok".into(),
        Outcome::Next(Some(_)) => "next".into(),
        Outcome::Next(None) => "next:end".into(),
        Outcome::Err(e) => format!("{e:?}")
            .split([' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

fn compare_contents(pair: &Pair, what: &str) {
    let k = sorted_entries(&pair.kernel, what);
    let v = sorted_entries(&pair.vm, what);
    assert_eq!(v, k, "{what}: contents differ, vm (left) vs kernel (right)");
    check_walk(&pair.kernel, &k, &format!("{what} (kernel)"));
    check_walk(&pair.vm, &v, &format!("{what} (vm)"));
}

/// The LRU eviction phase. Which entry the kernel evicts depends on its per-CPU free lists and
/// reference bits (see `loader::maps::VmMap`'s docs), so results are not compared between
/// backends; each backend must instead obey the invariants on its own: flags checked against
/// the key's presence just before, an updated key present afterwards with its new value, a
/// delete succeeding iff the key was there, and never more than `max_entries` entries.
fn eviction_phase(pair: &Pair, generator: &mut Gen, ops: usize) {
    let mut evicted_somewhere = false;
    for i in 0..ops {
        let op = generator.op();
        let what = pair.ctx(i, &op);
        for (name, map, kernel) in [
            ("kernel", &pair.kernel as &dyn MapAccess, Some(&pair.kernel)),
            ("vm", &pair.vm as &dyn MapAccess, None),
        ] {
            let what = format!("{what} ({name}, eviction phase)");
            let before = keys_of(map);
            let present = |k: &[u8]| before.contains(k);
            let out = run(map, kernel, &op);
            match &op {
                Op::Update(k, v, f) if v.len() == map.userspace_value_size() => {
                    let expected = match (f, present(k)) {
                        (UpdateFlags::NoExist, true) => Outcome::Err(MapError::Exists),
                        (UpdateFlags::Exist, false) => Outcome::Err(MapError::NotFound),
                        _ => Outcome::Done,
                    };
                    // The kernel's LRU takes a free element (evicting if it must) before it
                    // looks the key up, so the key being updated can be the one evicted: then
                    // BPF_NOEXIST succeeds and BPF_EXIST finds nothing. Ours never does that.
                    let self_evicted = kernel.is_some()
                        && present(k)
                        && matches!(
                            (f, &out),
                            (UpdateFlags::NoExist, Outcome::Done)
                                | (UpdateFlags::Exist, Outcome::Err(MapError::NotFound))
                        );
                    if !self_evicted {
                        assert_eq!(out, expected, "{what}");
                    }
                    match out {
                        Outcome::Done => {
                            assert_eq!(map.lookup(k), Ok(Some(v.clone())), "{what}: just updated")
                        }
                        _ if self_evicted => {
                            assert_eq!(map.lookup(k), Ok(None), "{what}: evicted itself")
                        }
                        _ => {}
                    }
                }
                Op::Delete(k) if k.len() == pair.spec.key_size as usize => {
                    let expected = if present(k) {
                        Outcome::Done
                    } else {
                        Outcome::Err(MapError::NotFound)
                    };
                    assert_eq!(out, expected, "{what}");
                }
                Op::Lookup(k) if k.len() == pair.spec.key_size as usize => {
                    assert_eq!(matches!(out, Outcome::Value(Some(_))), present(k), "{what}");
                }
                Op::NextKey(asked) => check_hash_next(&out, asked.as_deref(), &before, &what),
                // Wrong sizes and bad flags: the same errors as in the exact phase.
                _ => assert_eq!(out, run(&pair.vm, None, &op), "{what}"),
            }
            let after = keys_of(map);
            assert!(
                after.len() <= pair.spec.max_entries as usize,
                "{what}: {} entries",
                after.len()
            );
            let inserted = after.difference(&before).count();
            let removed = before.difference(&after).count();
            if let Op::Update(..) = op {
                evicted_somewhere |= inserted == 1 && removed >= 1;
            }
            if name == "vm" && inserted == 1 && before.len() == pair.spec.max_entries as usize {
                // Our LRU is exact: one insert into a full map evicts exactly one entry.
                assert_eq!(removed, 1, "{what}: vm eviction");
            }
        }
    }
    assert!(
        evicted_somewhere,
        "{:#x}: the eviction phase never evicted: the test does not test eviction",
        pair.seed
    );
    for map in [&pair.kernel as &dyn MapAccess, &pair.vm] {
        let e = sorted_entries(map, "end of eviction phase");
        check_walk(map, &e, &format!("{:#x} end of eviction phase", pair.seed));
    }
}

/// The exact phase over `spec` with a key pool of `pool` keys (or indices).
fn differential(spec: MapSpec, seed: u64, pool: usize) {
    let pair = Pair::new(spec, seed);
    let mut generator = Gen::new(seed, &pair.spec, pair.vm.userspace_value_size(), pool);
    let tally = exact_phase(&pair, &mut generator, OPS);
    println!(
        "{:?} k{} v{} max{} seed {seed:#x}: {OPS} operations identical, {} entries at the end; {tally:?}",
        pair.spec.map_type,
        pair.spec.key_size,
        pair.spec.value_size,
        pair.spec.max_entries,
        pair.vm.entries().unwrap().len()
    );
}

#[test]
fn array_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    for (value_size, max, seed) in [(4, 8, 0xa11a_0001u64), (13, 32, 0xa11a_0002)] {
        // Indices 0..max+3: the last three are out of range.
        differential(
            spec(MapType::Array, 4, value_size, max),
            seed,
            max as usize + 3,
        );
    }
}

#[test]
fn per_cpu_array_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    // value_size 12 pads each CPU's copy to 16: the padding must round-trip as in the kernel.
    for (value_size, max, seed) in [(8, 8, 0xa11a_0101u64), (12, 24, 0xa11a_0102)] {
        differential(
            spec(MapType::PerCpuArray, 4, value_size, max),
            seed,
            max as usize + 3,
        );
    }
}

#[test]
fn hash_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    // Pools bigger than max_entries: the maps fill up and Full happens.
    for (key_size, value_size, max, seed) in [(4, 8, 8, 0x4a54_0001u64), (13, 5, 32, 0x4a54_0002)] {
        differential(
            spec(MapType::Hash, key_size, value_size, max),
            seed,
            max as usize * 3 / 2,
        );
    }
}

#[test]
fn per_cpu_hash_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    for (key_size, value_size, max, seed) in [(4, 4, 8, 0x4a54_0101u64), (7, 20, 32, 0x4a54_0102)] {
        differential(
            spec(MapType::PerCpuHash, key_size, value_size, max),
            seed,
            max as usize * 3 / 2,
        );
    }
}

/// LRU maps: first an exact phase whose key pool (half of `max_entries`) is small enough that
/// the kernel never evicts (its batch refill of per-CPU free lists can evict before the map is
/// full; on this 6.18 kernel pools up to 3/4 of `max_entries` were seen not to), compared
/// result for result; then an eviction phase with a pool three times `max_entries`, where
/// only invariants are checked (see [`eviction_phase`]).
fn lru_differential(spec: MapSpec, seed: u64) {
    pin_to_one_cpu();
    let max = spec.max_entries as usize;
    let pair = Pair::new(spec, seed);
    let value_len = pair.vm.userspace_value_size();
    let mut exact = Gen::new(seed, &pair.spec, value_len, (max / 2).max(1));
    let tally = exact_phase(&pair, &mut exact, OPS);
    let mut evicting = Gen::new(seed ^ 0xe71c, &pair.spec, value_len, max * 3);
    eviction_phase(&pair, &mut evicting, EVICTION_OPS);
    println!(
        "{:?} k{} v{} max{max} seed {seed:#x}: {OPS} operations identical {tally:?}, then {EVICTION_OPS} evicting operations within the invariants",
        pair.spec.map_type, pair.spec.key_size, pair.spec.value_size
    );
}

#[test]
fn lru_hash_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    for (key_size, value_size, max, seed) in [(4, 8, 16, 0x1e0_0001u64), (11, 6, 64, 0x1e0_0002)] {
        lru_differential(spec(MapType::LruHash, key_size, value_size, max), seed);
    }
}

#[test]
fn lru_per_cpu_hash_maps_match_the_kernel() {
    if !privileged() {
        return;
    }
    for (key_size, value_size, max, seed) in [(4, 4, 16, 0x1e0_0101u64), (9, 12, 64, 0x1e0_0102)] {
        lru_differential(
            spec(MapType::LruPerCpuHash, key_size, value_size, max),
            seed,
        );
    }
}

#[test]
fn pinned_maps_reopen_with_their_spec() {
    if !privileged() {
        return;
    }
    let spec = MapSpec {
        name: "lnic_maps_pin_test_long_name".into(),
        ..spec(MapType::PerCpuHash, 6, 10, 5)
    };
    let map = KernelMap::create(&spec).unwrap();
    map.update(
        b"keykey",
        &vec![7; map.userspace_value_size()],
        UpdateFlags::Any,
    )
    .unwrap();
    let path =
        std::path::PathBuf::from(format!("/sys/fs/bpf/lnic_maps_test_{}", std::process::id()));
    map.pin(&path).unwrap();
    let reopened = KernelMap::from_pin(&path);
    std::fs::remove_file(&path).unwrap();
    let reopened = reopened.unwrap();
    assert_eq!(
        reopened.spec(),
        &MapSpec {
            name: "lnic_maps_pin_t".into(),
            ..spec
        },
        "the kernel keeps 15 bytes of the name"
    );
    assert_eq!(reopened.ncpus(), possible_cpus().unwrap());
    assert_eq!(reopened.entries().unwrap(), map.entries().unwrap());
    assert!(matches!(
        KernelMap::from_pin("/sys/fs/bpf/lnic_maps_test_missing"),
        Err(MapError::Kernel {
            errno: libc::ENOENT,
            ..
        })
    ));
}
