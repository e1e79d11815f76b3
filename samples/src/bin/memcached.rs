//! `memcached`: the paper's memcached client lambda.
//!
//! A λ request body is memcached text, `get <key>` or `set <key> <value>`. The lambda rewrites
//! the packet in place into a memcached UDP request (8-byte frame header, then the text
//! protocol) to the server in the `CONFIG` map, remembers who asked in the LRU map `PENDING`
//! (memcached request id → client MAC, address, port, λ lambda and request id) and sends it
//! back out (`XDP_TX`: the server must sit behind the interface the request came in on). The
//! server's reply comes back as a packet this same program matches (source = the configured
//! server) and turns into the λ response for the original client: OK with the value, NOT_FOUND
//! on a miss, OK with an empty body on STORED, an error status otherwise. A reply that matches
//! no pending request is dropped and counted in `MC_COUNTS`; a request whose reply never
//! comes is evicted from the LRU map by newer ones.
//!
//! IPv4 only towards the server, and for clients (their address is kept in `PENDING`); a λ
//! request over IPv6 or with IPv4 options is answered UNAVAILABLE. The protocol code (parsing,
//! the size rule, classifying replies) is `workloads::memcached`, shared with the native
//! baseline (`lambdactl baseline memcached`).
//!
//! Optional (bit 0 of `CONFIG.flags`): a hot-key cache in the `CACHE` map answers GET hits in
//! the lambda at once, as BMC does; GET replies fill it, SETs invalidate their key before they
//! are forwarded. Hits and misses are counted in `MC_COUNTS`.
//!
//! With the feature `nic` this file builds `memcached-nic.o` instead
//! (`../shared/memcached_nic.rs`): the same answers in the shape the NFP offload takes; the
//! normal build's code and data do not change with it (`common` holds what both use).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// The NIC build's request ids come from an atomic add (see `memcached_nic.rs`).
#![cfg_attr(
    all(target_arch = "bpf", feature = "nic"),
    feature(core_intrinsics),
    allow(internal_features)
)]

/// The NIC build (`memcached-nic.o`): no cache, no scratch map, the packet rebuilt in place.
#[cfg(all(target_arch = "bpf", feature = "nic"))]
#[path = "../shared/memcached_nic.rs"]
mod nic;

/// The NIC build's decimal digits (without the multiply the NFP lacks).
#[cfg(all(target_arch = "bpf", feature = "nic"))]
#[path = "../shared/decimal.rs"]
#[allow(dead_code)] // `write_padded`: the digits here are packed into a word instead
mod decimal;

/// What both builds share: where things sit in the packets, the `CONFIG` and `PENDING`
/// layouts (the same in both, so `lambdactl maps set IF/CONFIG` configures either), and the
/// headers of the packets the lambda builds.
#[cfg(target_arch = "bpf")]
mod common {
    use lambda_ebpf::frame::Frame as _;
    #[cfg(not(feature = "nic"))]
    use lambda_ebpf::frame::write_at;
    use lambda_ebpf::wire::HEADER_LEN;
    use lambda_ebpf::xdp::XdpFrame;
    #[cfg(not(feature = "nic"))]
    use lambda_ebpf::{IpVersion, udp_checksum};
    use workloads::memcached::FRAME_HEADER_LEN;

    pub const ETH_LEN: usize = 14;
    pub const IP_LEN: usize = 20;
    pub const UDP_LEN: usize = 8;
    /// Where the UDP header starts: only IPv4 without options is handled.
    pub const UDP_AT: usize = ETH_LEN + IP_LEN;
    /// Where the memcached frame header starts in a packet to or from the server.
    pub const MC_AT: usize = UDP_AT + UDP_LEN;
    /// Where the memcached text starts.
    pub const TEXT_AT: usize = MC_AT + FRAME_HEADER_LEN;
    /// Where a λ body starts.
    pub const BODY_AT: usize = UDP_AT + UDP_LEN + HEADER_LEN;
    /// The scratch buffer: a λ body or a memcached reply text is copied here whole before the
    /// packet is rebuilt. Room for the longest value behind the longest `VALUE` line.
    pub const TEXT_MAX: usize = 2048;
    /// The furthest into the scratch buffer a copy to the packet starts: past a `VALUE` line or
    /// a `set <key> `.
    pub const FROM_MAX: usize = 512;
    /// The longest UDP datagram built: one 1500-byte MTU frame.
    pub const MAX_UDP: usize = 1500 - IP_LEN;
    /// Slots of `MC_COUNTS`.
    pub const COUNT_FORWARDED: u32 = 0;
    pub const COUNT_ANSWERED: u32 = 1;
    pub const COUNT_UNMATCHED: u32 = 2;
    pub const COUNT_MALFORMED: u32 = 3;
    #[cfg(not(feature = "nic"))]
    pub const COUNT_CACHE_HITS: u32 = 4;
    #[cfg(not(feature = "nic"))]
    pub const COUNT_CACHE_MISSES: u32 = 5;
    pub const COUNT_SLOTS: u32 = 6;
    /// Where the memcached server is (index 0). All zero until configured: requests are then
    /// answered UNAVAILABLE.
    #[repr(C)]
    pub struct Config {
        /// IPv4 address, network order.
        pub server_ip: [u8; 4],
        pub server_mac: [u8; 6],
        /// UDP port, network order.
        pub server_port: [u8; 2],
        /// Bit 0: the hot-key cache is on (the NIC build has none and ignores it).
        pub flags: u8,
        pub _reserved: [u8; 3],
    }

    /// Who asked: enough to address the λ response.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct Pending {
        pub client_mac: [u8; 6],
        /// Network order.
        pub client_port: [u8; 2],
        /// Network order.
        pub client_ip: [u8; 4],
        pub lambda_id: u32,
        pub request_id: u64,
        /// A GET with the cache on: the value in the reply goes into the cache.
        pub fill_cache: u32,
        pub _reserved: u32,
    }

    /// Ethernet, IPv4 and UDP headers for a packet this lambda builds.
    #[repr(C)]
    pub struct Headers {
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        ethertype: [u8; 2],
        ip: [u8; IP_LEN],
        src_port: [u8; 2],
        dst_port: [u8; 2],
        udp_len: [u8; 2],
        udp_check: [u8; 2],
    }

    impl Headers {
        /// All zero, to be [`fill`](Headers::fill)ed (on the NIC build's stack), written where
        /// it lies.
        #[cfg(feature = "nic")]
        #[inline(always)]
        pub fn zeroed() -> Headers {
            // SAFETY: plain bytes: all zero is valid.
            unsafe { core::mem::zeroed() }
        }

        /// The headers as bytes, to load a packet's into.
        #[cfg(feature = "nic")]
        #[inline(always)]
        pub fn as_bytes_mut(&mut self) -> &mut [u8; MC_AT] {
            // SAFETY: `Headers` is plain bytes, exactly MC_AT of them (see `as_bytes`).
            unsafe { &mut *(self as *mut Headers).cast() }
        }

        /// Where a packet with these headers went: destination MAC, IPv4 address, UDP port.
        #[cfg(feature = "nic")]
        #[inline(always)]
        pub fn destination(&self) -> ([u8; 6], [u8; 4], [u8; 2]) {
            let ip = [self.ip[16], self.ip[17], self.ip[18], self.ip[19]];
            (self.dst_mac, ip, self.dst_port)
        }

        /// Where a packet with these headers came from: source MAC, IPv4 address, UDP port.
        #[cfg(feature = "nic")]
        #[inline(always)]
        pub fn source(&self) -> ([u8; 6], [u8; 4], [u8; 2]) {
            let ip = [self.ip[12], self.ip[13], self.ip[14], self.ip[15]];
            (self.src_mac, ip, self.src_port)
        }

        /// Fills in the headers of a packet whose UDP datagram is `udp_len` bytes, in place
        /// (they live in the scratch map: the stack is full with the SDK's reply code).
        #[inline(always)]
        pub fn fill(
            &mut self,
            macs: ([u8; 6], [u8; 6]),
            addrs: ([u8; 4], [u8; 4]),
            ports: ([u8; 2], [u8; 2]),
            udp_len: usize,
        ) {
            self.dst_mac = macs.0;
            self.src_mac = macs.1;
            self.ethertype = 0x0800u16.to_be_bytes();
            self.ip = ipv4_header((IP_LEN + udp_len) as u16, addrs.0, addrs.1);
            self.src_port = ports.0;
            self.dst_port = ports.1;
            self.udp_len = (udp_len as u16).to_be_bytes();
            self.udp_check = [0; 2];
        }

        #[cfg(not(feature = "nic"))]
        #[inline(always)]
        pub fn as_bytes(&self) -> &[u8; MC_AT] {
            const { assert!(core::mem::size_of::<Headers>() == MC_AT) };
            // SAFETY: `Headers` is plain bytes, exactly MC_AT of them.
            unsafe { &*(self as *const Headers).cast() }
        }
    }

    /// An IPv4 header without options (TTL 64, DF, UDP) with its checksum.
    #[inline(always)]
    pub fn ipv4_header(total_len: u16, src: [u8; 4], dst: [u8; 4]) -> [u8; IP_LEN] {
        let [l0, l1] = total_len.to_be_bytes();
        let mut h = [
            0x45, 0, l0, l1, 0, 0, 0x40, 0, 64, 17, 0, 0, src[0], src[1], src[2], src[3], dst[0],
            dst[1], dst[2], dst[3],
        ];
        let mut sum = 0u32;
        for i in 0..IP_LEN / 2 {
            sum += u32::from(u16::from_be_bytes([h[2 * i], h[2 * i + 1]]));
        }
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let [c0, c1] = (!(sum as u16)).to_be_bytes();
        h[10] = c0;
        h[11] = c1;
        h
    }

    /// Makes the packet exactly `len` bytes long: at the tail when the driver has room there,
    /// else at the head (veth in native mode has no tailroom). The caller rewrites it whole.
    #[inline(always)]
    pub fn resize_to(frame: &mut XdpFrame<'_>, len: usize) -> Option<()> {
        let delta = len as i64 - (frame.data_end() - frame.data()) as i64;
        if delta == 0 {
            return Some(());
        }
        if frame.adjust_tail(delta as i32).is_ok() {
            return Some(());
        }
        if delta < 0 {
            return None;
        }
        frame.adjust_head(-(delta as i32)).ok()
    }

    /// Fills in the UDP checksum of the packet just built.
    #[cfg(not(feature = "nic"))]
    #[inline(always)]
    pub fn finish_udp(frame: &mut XdpFrame<'_>, udp_len: usize) -> Option<()> {
        let check = udp_checksum(frame, IpVersion::V4, UDP_AT, udp_len as u16)?;
        // SAFETY: checked against `data_end` by `write_at`.
        unsafe { write_at(frame.data() + UDP_AT + 6, frame.data_end(), check) }
    }
}

#[cfg(all(target_arch = "bpf", not(feature = "nic")))]
mod lambda {
    use super::common::*;
    use aya_ebpf::helpers::bpf_get_smp_processor_id;
    use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};
    use aya_ebpf::{macros::map, macros::xdp, programs::XdpContext};
    use lambda_ebpf::frame::{Frame, read_at};
    use lambda_ebpf::wire::HEADER_LEN;
    use lambda_ebpf::xdp::{XdpFrame, record, serve};
    use lambda_ebpf::{IpVersion, LambdaHeader, MAX_BODY, Request, Status, Verdict};
    use workloads::memcached::{
        self, Command, FRAME_HEADER_LEN, FrameHeader, KEY_OFFSET, Parsed, Reply, SET_TAIL_MAX,
    };

    /// Outstanding memcached requests remembered; older ones are evicted (a lost reply leaves
    /// nothing behind for long).
    const PENDING_MAX: u32 = 8192;
    /// Request ids per CPU: the CPU number sits in the top 4 bits of the 16-bit id.
    const IDS_PER_CPU: u32 = 1 << 12;

    /// Hot keys the cache holds (hash map: a full cache takes no new keys until one is
    /// invalidated, so the keys that made it in stay).
    const CACHE_ENTRIES: u32 = 1024;
    /// Key bytes in a cache key: memcached's longest key, padded to a word.
    const CACHE_KEY: usize = 256;
    /// Longest cached value: the largest that fits one memcached datagram.
    const CACHE_VALUE: usize = memcached::MAX_DATAGRAM;
    /// How much longer than its request a cache hit's answer may be (see `cached`).
    const CACHE_GROW_MAX: usize = 160;
    /// `Config::flags` bit: answer GET hits from the in-kernel cache.
    const FLAG_CACHE: u8 = 1;

    /// A cache key: the key, zero-padded.
    #[repr(C)]
    pub struct CacheKey([u64; CACHE_KEY / 8]);

    /// A cached value.
    #[repr(C)]
    pub struct CacheValue {
        len: u32,
        data: [u8; CACHE_VALUE],
    }

    #[repr(C)]
    pub struct Scratch {
        text: [u8; TEXT_MAX],
        headers: Headers,
        lambda: LambdaHeader,
        opaque: u64,
        cache_key: CacheKey,
        cache_value: CacheValue,
        // Slack past `SET_TAIL_MAX`: the verifiers bound the digit writes less tightly than the
        // code does.
        tail: [u8; SET_TAIL_MAX + 32],
    }

    #[map]
    static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
    #[map]
    static PENDING: LruHashMap<u32, Pending> = LruHashMap::with_max_entries(PENDING_MAX, 0);
    #[map]
    static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
    /// This CPU's next request id (low 12 bits used).
    #[map]
    static NEXT_ID: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
    /// Per CPU: requests forwarded, replies answered, replies matching no pending request,
    /// malformed replies from the server.
    #[map]
    static MC_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNT_SLOTS, 0);
    /// The hot-key cache (with `FLAG_CACHE`), as BMC does it: filled by the values of GET
    /// replies, invalidated by every SET before it is forwarded.
    #[map]
    static CACHE: HashMap<CacheKey, CacheValue> = HashMap::with_max_entries(CACHE_ENTRIES, 0);

    #[xdp]
    pub fn memcached(ctx: XdpContext) -> u32 {
        let mut frame = XdpFrame::new(&ctx);
        if let Some((verdict, status)) = from_server(&mut frame) {
            // Counted like the SDK counts requests: `lambdactl stats` shows unmatched replies
            // as XDP_DROP and the answers as XDP_TX with their λ status.
            record(verdict, status);
            return verdict.xdp_action();
        }
        serve(&ctx, handle)
    }

    #[inline(never)]
    fn count(slot: u32) {
        if let Some(n) = MC_COUNTS.get_ptr_mut(slot) {
            // SAFETY: this CPU's own copy, alive while the program runs.
            unsafe { *n += 1 };
        }
    }

    /// A fresh memcached request id: this CPU's counter, with the CPU in the top bits so two
    /// CPUs never hand out the same id at once.
    #[inline(always)]
    fn next_id() -> Option<u16> {
        let slot = NEXT_ID.get_ptr_mut(0)?;
        // SAFETY: this CPU's own copy.
        let n = unsafe {
            let n = *slot;
            *slot = n.wrapping_add(1);
            n
        };
        // SAFETY: a helper without arguments.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        Some((((cpu & 0xf) * IDS_PER_CPU) | (n % IDS_PER_CPU)) as u16)
    }

    /// A λ request: answer it at once (a refusal, or a cache hit), or forward it to memcached.
    #[inline(always)]
    fn handle(frame: &mut XdpFrame<'_>, request: &Request) -> Verdict {
        let answer = match check_request(frame, request) {
            Ok((config, parsed)) => match cached(frame, config, parsed) {
                Some(value) => Ok(value),
                None => Err((config, parsed)),
            },
            Err(status) => Ok((status, &[][..])),
        };
        match answer {
            // One reply call site: each is a full inlined copy of the rewrite code.
            Ok((status, body)) => request.reply(frame, status, body),
            Err((config, parsed)) => match forward(frame, request, config, parsed) {
                Some(()) => {
                    count(COUNT_FORWARDED);
                    Verdict::Reply
                }
                // The packet was half rebuilt: it is no request anymore.
                None => Verdict::Aborted,
            },
        }
    }

    /// With the cache on: a GET hit's answer; a SET invalidates its key. `None`: forward.
    #[inline(always)]
    fn cached(
        frame: &XdpFrame<'_>,
        config: &Config,
        parsed: Parsed,
    ) -> Option<(Status, &'static [u8])> {
        if config.flags & FLAG_CACHE == 0 {
            return None;
        }
        let scratch = scratch()?;
        cache_key(frame, scratch, BODY_AT + KEY_OFFSET, parsed.key_len)?;
        match parsed.command {
            Command::Set => {
                let _ = CACHE.remove(&scratch.cache_key);
                None
            }
            Command::Get => {
                // SAFETY: the value is only read during this invocation.
                let Some(value) = (unsafe { CACHE.get(&scratch.cache_key) }) else {
                    count(COUNT_CACHE_MISSES);
                    return None;
                };
                // Volatile, for the same reason as in `load`: the reply code's own bound on
                // the body is then implied by this one, on the very register it uses.
                // SAFETY: a read of the map value.
                let len = unsafe { core::ptr::read_volatile(&value.len) } as usize;
                if len > CACHE_VALUE {
                    return None;
                }
                // The answer must fit where the request was: some drivers (veth in native mode)
                // leave no tailroom, and the headroom XDP guarantees is 256 bytes. A longer
                // value is fetched from memcached, as a miss.
                if len > KEY_OFFSET + parsed.key_len + CACHE_GROW_MAX {
                    count(COUNT_CACHE_MISSES);
                    return None;
                }
                let data = value.data.get(..len)?;
                count(COUNT_CACHE_HITS);
                Some((Status::Ok, data))
            }
        }
    }

    /// Checks the request and copies its body into the scratch buffer.
    #[inline(always)]
    fn check_request(
        frame: &XdpFrame<'_>,
        request: &Request,
    ) -> Result<(&'static Config, Parsed), Status> {
        let config = CONFIG.get(0).ok_or(Status::Internal)?;
        if config.server_port == [0, 0] {
            return Err(Status::Unavailable);
        }
        if request.ip_version() != IpVersion::V4 || request.body_offset() != BODY_AT {
            return Err(Status::Unavailable);
        }
        if request.frag_count() != 1 {
            return Err(Status::BadRequest);
        }
        let body_len = request.body_len();
        if body_len > TEXT_MAX {
            return Err(Status::TooLarge);
        }
        let scratch = scratch().ok_or(Status::Internal)?;
        load(frame, BODY_AT, &mut scratch.text, body_len).ok_or(Status::Internal)?;
        let body = scratch.text.get(..body_len).ok_or(Status::Internal)?;
        let parsed = memcached::parse_request(body).map_err(|e| e.status())?;
        // Each key length the parser can stop at is a different verifier state, and each would
        // walk all the code that follows: forget them (see `opaque`); `forward` checks bounds.
        let parsed = Parsed {
            command: parsed.command,
            key_len: opaque(scratch, parsed.key_len),
            value_len: opaque(scratch, parsed.value_len),
        };
        Ok((config, parsed))
    }

    /// Builds the zero-padded cache key from the `len` key bytes at packet offset `at`.
    #[inline(always)]
    fn cache_key(frame: &XdpFrame<'_>, scratch: &mut Scratch, at: usize, len: usize) -> Option<()> {
        for word in scratch.cache_key.0.iter_mut() {
            *word = 0;
        }
        if len == 0 || len > memcached::MAX_KEY {
            return None;
        }
        // SAFETY: the key array is CACHE_KEY plain bytes.
        let key: &mut [u8; CACHE_KEY] = unsafe { &mut *scratch.cache_key.0.as_mut_ptr().cast() };
        load(frame, at, key, len)
    }

    /// Copies `len` packet bytes at `offset` into the start of `buf` (nothing for 0).
    ///
    /// The length is re-read volatile before it is checked: the compiler otherwise drops the
    /// checks as implied by the callers' and hands the helper a copy of the length taken before
    /// them, whose bounds the verifiers do not know.
    #[inline(always)]
    fn load<const N: usize>(
        frame: &XdpFrame<'_>,
        offset: usize,
        buf: &mut [u8; N],
        len: usize,
    ) -> Option<()> {
        // SAFETY: a read of a local.
        let len = unsafe { core::ptr::read_volatile(&len) };
        if len == 0 {
            return Some(());
        }
        if len > N {
            return None;
        }
        frame.load_bytes(offset as u32, buf.get_mut(..len)?).ok()
    }

    /// Copies `len` bytes of `buf` from `from` into the packet at `at` (nothing for 0). `from`
    /// is at most [`FROM_MAX`] and `len` at most [`MAX_BODY`], which the buffer holds.
    ///
    /// Both are re-read volatile and checked right here, for the same reason as in [`load`].
    #[inline(always)]
    fn store(
        frame: &mut XdpFrame<'_>,
        at: usize,
        buf: &[u8; TEXT_MAX],
        from: usize,
        len: usize,
    ) -> Option<()> {
        const { assert!(FROM_MAX + MAX_BODY <= TEXT_MAX) };
        // SAFETY: reads of locals.
        let (from, len) = unsafe {
            (
                core::ptr::read_volatile(&from),
                core::ptr::read_volatile(&len),
            )
        };
        if len == 0 {
            return Some(());
        }
        if from > FROM_MAX || len > MAX_BODY {
            return None;
        }
        // SAFETY: `from + len <= FROM_MAX + MAX_BODY <= TEXT_MAX` (checked above).
        let src = unsafe { core::slice::from_raw_parts(buf.as_ptr().add(from), len) };
        frame.store_bytes(at as u32, src).ok()
    }

    /// Copies the first `len` bytes of `buf` into the packet at `at` (nothing for 0); checked
    /// after a volatile re-read, for the same reason as in [`load`].
    #[inline(always)]
    fn store_head<const N: usize>(
        frame: &mut XdpFrame<'_>,
        at: usize,
        buf: &[u8; N],
        len: usize,
    ) -> Option<()> {
        // SAFETY: a read of a local.
        let len = unsafe { core::ptr::read_volatile(&len) };
        if len == 0 {
            return Some(());
        }
        if len > N {
            return None;
        }
        // SAFETY: `len <= N` (checked above).
        let src = unsafe { core::slice::from_raw_parts(buf.as_ptr(), len) };
        frame.store_bytes(at as u32, src).ok()
    }

    /// Caches the value of a GET reply still in the packet (`VALUE <key> …`; the data `len`
    /// bytes at `offset` in the text), parsed into the scratch text.
    #[inline(always)]
    fn fill_cache(
        frame: &XdpFrame<'_>,
        scratch: &mut Scratch,
        offset: usize,
        len: usize,
    ) -> Option<()> {
        // The key runs from after `VALUE ` to the next space.
        let mut key_len = 0;
        for i in 0..=memcached::MAX_KEY {
            if *scratch.text.get(6 + i)? == b' ' {
                key_len = i;
                break;
            }
        }
        let key_len = opaque(scratch, key_len);
        let offset = opaque(scratch, offset);
        let len = opaque(scratch, len);
        cache_key(frame, scratch, TEXT_AT + 6, key_len)?;
        if offset > FROM_MAX || len > CACHE_VALUE {
            return None;
        }
        scratch.cache_value.len = len as u32;
        load(frame, TEXT_AT + offset, &mut scratch.cache_value.data, len)?;
        CACHE
            .insert(&scratch.cache_key, &scratch.cache_value, 0)
            .ok()
    }

    /// `x`, passed through the scratch map so that the verifiers no longer know its value:
    /// a value read from a map is just a number, to be bounded by the checks that follow.
    #[inline(always)]
    fn opaque(scratch: &mut Scratch, x: usize) -> usize {
        forget(&mut scratch.opaque, x)
    }

    /// [`opaque`] through the scratch value's `opaque` field alone (for use while other
    /// fields are borrowed).
    #[inline(always)]
    fn forget(slot: &mut u64, x: usize) -> usize {
        // SAFETY: a write and a read of this CPU's own scratch value.
        unsafe {
            core::ptr::write_volatile(slot, x as u64);
            core::ptr::read_volatile(slot) as usize
        }
    }

    #[inline(always)]
    fn scratch() -> Option<&'static mut Scratch> {
        // SAFETY: this CPU's own copy, used by one invocation at a time.
        SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
    }

    /// Rebuilds the packet into the memcached request and remembers who asked.
    #[inline(always)]
    fn forward(
        frame: &mut XdpFrame<'_>,
        request: &Request,
        config: &Config,
        parsed: Parsed,
    ) -> Option<()> {
        let data = frame.data();
        let end = frame.data_end();
        // SAFETY (reads): `read_at` checks against `end`.
        let macs: [[u8; 6]; 2] = unsafe { read_at(data, end)? };
        let addrs: [[u8; 4]; 2] = unsafe { read_at(data + ETH_LEN + 12, end)? };
        let ports: [[u8; 2]; 2] = unsafe { read_at(data + UDP_AT, end)? };
        let id = next_id()?;
        let pending = Pending {
            client_mac: macs[1],
            client_port: ports[0],
            client_ip: addrs[0],
            lambda_id: request.lambda_id(),
            request_id: request.request_id(),
            fill_cache: u32::from(config.flags & FLAG_CACHE != 0 && parsed.command == Command::Get),
            _reserved: 0,
        };
        PENDING.insert(&u32::from(id), &pending, 0).ok()?;

        let scratch = scratch()?;
        let tail_len = match parsed.command {
            Command::Set => memcached::set_tail(parsed.value_len, &mut scratch.tail)?,
            Command::Get => 0,
        };
        let udp_len = UDP_LEN + FRAME_HEADER_LEN + parsed.text_len();
        // Likewise the digit counts of the value length.
        let key_len = opaque(scratch, parsed.key_len);
        let value_len = opaque(scratch, parsed.value_len);
        let tail_len = opaque(scratch, tail_len);
        let udp_len = opaque(scratch, udp_len);
        if key_len > memcached::MAX_KEY
            || value_len > MAX_BODY
            || tail_len > SET_TAIL_MAX
            || udp_len > MAX_UDP
        {
            return None;
        }
        scratch.headers.fill(
            (config.server_mac, macs[0]),
            (addrs[1], config.server_ip),
            (ports[1], config.server_port),
            udp_len,
        );
        resize_to(frame, UDP_AT + udp_len)?;
        frame.store_bytes(0, scratch.headers.as_bytes()).ok()?;
        frame
            .store_bytes(MC_AT as u32, &FrameHeader::request(id).to_bytes())
            .ok()?;
        // `get <key>` / `set <key>` as the client wrote it.
        store(frame, TEXT_AT, &scratch.text, 0, KEY_OFFSET + key_len)?;
        let mut at = TEXT_AT + KEY_OFFSET + key_len;
        if tail_len > 0 {
            store_head(frame, at, &scratch.tail, tail_len)?;
            at += tail_len;
            store(
                frame,
                at,
                &scratch.text,
                KEY_OFFSET + key_len + 1,
                value_len,
            )?;
            at += value_len;
        }
        frame.store_bytes(at as u32, b"\r\n").ok()?;
        finish_udp(frame, udp_len)
    }

    /// A packet from the configured server is memcached's reply: `Some(verdict, status of
    /// the λ response sent)`. Anything else (`None`) goes on to the λ request path.
    #[inline(always)]
    fn from_server(frame: &mut XdpFrame<'_>) -> Option<(Verdict, Option<Status>)> {
        let config = CONFIG.get(0)?;
        let data = frame.data();
        let end = frame.data_end();
        // SAFETY (reads): `read_at` checks against `end`.
        let ethertype: [u8; 2] = unsafe { read_at(data + 12, end)? };
        let ip_head: [u8; 2] = unsafe { read_at(data + ETH_LEN, end)? };
        let frag: [u8; 2] = unsafe { read_at(data + ETH_LEN + 6, end)? };
        let proto: u8 = unsafe { read_at(data + ETH_LEN + 9, end)? };
        let src: [u8; 4] = unsafe { read_at(data + ETH_LEN + 12, end)? };
        let src_port: [u8; 2] = unsafe { read_at(data + UDP_AT, end)? };
        if ethertype != [0x08, 0x00]
            || ip_head[0] != 0x45
            || u16::from_be_bytes(frag) & 0x3fff != 0
            || proto != 17
            || src != config.server_ip
            || src_port != config.server_port
        {
            return None;
        }
        Some(match answer(frame) {
            Ok(answered) => answered,
            Err(()) => (Verdict::Aborted, None),
        })
    }

    /// Turns memcached's reply into the λ response for whoever asked.
    ///
    /// Not inlined: its stack frame is then not part of the entry function's, which the λ
    /// request path's call chain (with the SDK's reply code) also carries; together they
    /// exceeded the kernel's 512 bytes.
    #[inline(never)]
    fn answer(frame: &mut XdpFrame<'_>) -> Result<(Verdict, Option<Status>), ()> {
        let data = frame.data();
        let end = frame.data_end();
        // SAFETY (reads): `read_at` checks against `end`.
        let udp_len: [u8; 2] = unsafe { read_at(data + UDP_AT + 4, end) }.ok_or(())?;
        let udp_len = usize::from(u16::from_be_bytes(udp_len));
        let mc: [u8; FRAME_HEADER_LEN] = unsafe { read_at(data + MC_AT, end) }.ok_or(())?;
        if udp_len < UDP_LEN + FRAME_HEADER_LEN || data + UDP_AT + udp_len > end {
            count(COUNT_MALFORMED);
            return Ok((Verdict::Drop, None));
        }
        let mc = FrameHeader::from_bytes(mc);
        let key = u32::from(mc.request_id);
        // SAFETY: the value is copied out before the entry is removed.
        let Some(pending) = (unsafe { PENDING.get(&key) }).copied() else {
            count(COUNT_UNMATCHED);
            return Ok((Verdict::Drop, None));
        };
        let _ = PENDING.remove(&key);
        let macs: [[u8; 6]; 2] = unsafe { read_at(data, end) }.ok_or(())?;
        let dst: [u8; 4] = unsafe { read_at(data + ETH_LEN + 16, end) }.ok_or(())?;
        let dst_port: [u8; 2] = unsafe { read_at(data + UDP_AT + 2, end) }.ok_or(())?;

        let text_len = udp_len - UDP_LEN - FRAME_HEADER_LEN;
        let scratch = scratch().ok_or(())?;
        let (status, value_at, value_len) = if mc.sequence != 0 || mc.count != 1 {
            // Split over several datagrams: the size rule keeps our own items out of this.
            count(COUNT_MALFORMED);
            (Status::TooLarge, 0, 0)
        } else if text_len > TEXT_MAX {
            (Status::TooLarge, 0, 0)
        } else {
            load(frame, TEXT_AT, &mut scratch.text, text_len).ok_or(())?;
            let text = scratch.text.get(..text_len).ok_or(())?;
            // The line's end is forgotten as the stopping places of `forward`'s parser are.
            match memcached::classify_reply_via(text, |x| forget(&mut scratch.opaque, x)) {
                Reply::Value { offset, len } if offset <= FROM_MAX => {
                    if len > MAX_BODY {
                        (Status::TooLarge, 0, 0)
                    } else {
                        if pending.fill_cache != 0 {
                            // Best effort: a full cache or an odd reply leaves it as it is.
                            let _ = fill_cache(frame, scratch, offset, len);
                        }
                        (Status::Ok, offset, len)
                    }
                }
                Reply::Value { .. } => (Status::Internal, 0, 0),
                reply => (reply.status(), 0, 0),
            }
        };

        // As in `forward`: one verifier state per place the reply parser can stop is too many.
        let value_at = opaque(scratch, value_at);
        let value_len = opaque(scratch, value_len);
        if value_len > MAX_BODY {
            return Err(());
        }
        let udp_len = UDP_LEN + HEADER_LEN + value_len;
        scratch.headers.fill(
            (pending.client_mac, macs[0]),
            (dst, pending.client_ip),
            (dst_port, pending.client_port),
            udp_len,
        );
        scratch.lambda = LambdaHeader::request(pending.lambda_id, pending.request_id);
        scratch.lambda.make_response(status);
        resize_to(frame, UDP_AT + udp_len).ok_or(())?;
        frame
            .store_bytes(0, scratch.headers.as_bytes())
            .map_err(|_| ())?;
        frame
            .store_bytes(MC_AT as u32, scratch.lambda.as_bytes())
            .map_err(|_| ())?;
        store(frame, BODY_AT, &scratch.text, value_at, value_len).ok_or(())?;
        finish_udp(frame, udp_len).ok_or(())?;
        count(COUNT_ANSWERED);
        Ok((Verdict::Reply, Some(status)))
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("memcached is a lambda: build it with `cargo xtask build-ebpf`");
}
