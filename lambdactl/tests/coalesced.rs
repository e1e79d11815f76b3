//! `deploy --mode coalesced` against the tail-call deployment, over real UDP.
//!
//! Two veth pairs, each with its own client namespace and its own memcached there. On the
//! first pair the three sample workloads (static-server, memcached, grayscale), three `whoami`
//! lambdas and 60 generated lambdas are deployed behind the tail-call dispatcher (drv mode).
//! On the second the same 66 lambdas run in ONE coalesced program (drv mode): the kernel's
//! verifier processes at most one million instructions for one program, and this set costs it
//! about a tenth of that (each lambda's own cost: `loader/tests/kernel_verify_cost.rs`).
//! Every lambda gets the same seeded requests on both pairs, interleaved, and every answer must
//! be byte for byte the same.
//!
//! Then, on the coalesced pair: a lambda replaced and another undeployed while a client keeps
//! calling the static-server (no request unanswered), with `whoami`'s call count and the
//! static-server's objects kept across each re-coalescing; conflicting rules, mixed modes and
//! the kernel's limits refused by name; and nothing left behind by `undeploy --all`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::client::Client;
use common::*;
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

const SEED: u64 = 0xc0a1_e5ce_d000_0009;
const STATIC_PORT: u16 = 9000;
const MEMCACHED_LAMBDA_PORT: u16 = 9001;
const GRAYSCALE_PORT: u16 = 9002;
const WHOAMI_PORT: u16 = 9100;
const GENERATED_PORT: u16 = 9200;
/// Generated lambdas.
const GENERATED: u32 = 60;

/// Generated lambda `i`, hand-written eBPF: answers a λ request to [`GENERATED_PORT`] with
/// lambda id `i` in place (addresses and ports swapped, RESPONSE set, UDP checksum 0, the
/// first 8 body bytes XORed with a key of its own); passes everything else. IPv4 without
/// options only.
fn generated_program(i: u32) -> Vec<ebpf_isa::Insn> {
    let key = (i * 37 + 11) & 0xff;
    // Offsets: Ethernet 0, IPv4 14, UDP 34, λ header 42, body 66.
    let mut text = format!(
        "ldxw %r6, [%r1+0]
ldxw %r7, [%r1+4]
mov %r2, %r6
add %r2, 66
jgt %r2, %r7, pass
ldxh %r3, [%r6+12]
jne %r3, 0x0008, pass
ldxb %r3, [%r6+14]
jne %r3, 0x45, pass
ldxb %r3, [%r6+23]
jne %r3, 17, pass
ldxh %r3, [%r6+36]
jne %r3, {port:#x}, pass
ldxh %r3, [%r6+42]
jne %r3, 0x4e4c, pass
ldxb %r3, [%r6+44]
jne %r3, 1, pass
ldxb %r3, [%r6+45]
and %r3, 1
jne %r3, 0, pass
ldxw %r3, [%r6+46]
jne32 %r3, {id:#x}, pass
ldxw %r3, [%r6+0]
ldxh %r4, [%r6+4]
ldxw %r5, [%r6+6]
ldxh %r8, [%r6+10]
stxw [%r6+0], %r5
stxh [%r6+4], %r8
stxw [%r6+6], %r3
stxh [%r6+10], %r4
ldxw %r3, [%r6+26]
ldxw %r4, [%r6+30]
stxw [%r6+26], %r4
stxw [%r6+30], %r3
ldxh %r3, [%r6+34]
ldxh %r4, [%r6+36]
stxh [%r6+34], %r4
stxh [%r6+36], %r3
sth [%r6+40], 0
ldxb %r3, [%r6+45]
or %r3, 1
stxb [%r6+45], %r3
sth [%r6+62], 0
",
        port = u32::from(GENERATED_PORT.swap_bytes()),
        id = i.swap_bytes(),
    );
    for k in 0..8 {
        text.push_str(&format!(
            "mov %r2, %r6
add %r2, {end}
jgt %r2, %r7, done
ldxb %r3, [%r6+{at}]
xor %r3, {key}
stxb [%r6+{at}], %r3
",
            end = 67 + k,
            at = 66 + k,
        ));
    }
    text.push_str("done:\nmov %r0, 3\nexit\npass:\nmov %r0, 2\nexit\n");
    ebpf_isa::asm::assemble(&text).expect("the generated lambda assembles")
}

/// [`generated_program`] as a BPF ELF object, as `deploy` takes it.
fn generated_object(i: u32) -> Vec<u8> {
    elf_object(&format!("gen{i}"), &generated_program(i))
}

/// Independent two-way branches in [`costly_object`].
const COSTLY_BRANCHES: u32 = 17;

/// A lambda the kernel's verifier walks path by path: [`COSTLY_BRANCHES`] branches on packet
/// bytes, each adding its own power of two to a sum that a final comparison makes precise, so
/// no two of the 2^17 paths are the same state to the kernel and it walks them all (≈ 650,000
/// processed instructions, of the one million a program may take: two never fit one
/// program). Our verifier joins the paths, so it stays cheap there. It passes every packet.
/// Variants differ in one constant, so the coalescer does not merge them into one function.
fn costly_object(variant: i32) -> Vec<u8> {
    let mut text = format!(
        "ldxw %r6, [%r1+0]
ldxw %r7, [%r1+4]
mov %r0, 2
mov %r2, %r6
add %r2, {COSTLY_BRANCHES}
jgt %r2, %r7, out
mov %r8, 0
"
    );
    for j in 0..COSTLY_BRANCHES {
        text.push_str(&format!(
            "ldxb %r3, [%r6+{j}]\njeq %r3, 0, +1\nadd %r8, {}\n",
            1u32 << j
        ));
    }
    // Never equal (the sum is below 2^17), but decided on every path: the kernel then marks
    // the sum precise back through every branch.
    text.push_str(&format!("jeq %r8, {}, out\nout:\nexit\n", -1 - variant));
    elf_object(
        "costly",
        &ebpf_isa::asm::assemble(&text).expect("the costly lambda assembles"),
    )
}

/// `code` as a BPF ELF object with one XDP program `symbol`, as `deploy` takes it.
fn elf_object(symbol: &str, code: &[ebpf_isa::Insn]) -> Vec<u8> {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{
        Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let code = ebpf_isa::encode(code);
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Bpf, Endianness::Little);
    let text = obj.add_section(Vec::new(), b"xdp".to_vec(), SectionKind::Text);
    obj.append_section_data(text, &code, 8);
    obj.add_symbol(Symbol {
        name: symbol.as_bytes().to_vec(),
        value: 0,
        size: code.len() as u64,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(text),
        flags: SymbolFlags::None,
    });
    let license = obj.add_section(Vec::new(), b"license".to_vec(), SectionKind::Data);
    obj.append_section_data(license, b"GPL\0", 1);
    obj.write().expect("an ELF object")
}

/// A lambda of the set: its name, object, rule, and how to make its requests.
#[derive(Clone)]
struct Lambda {
    name: String,
    object: PathBuf,
    /// The object the NIC-shaped deployment runs (the same one where there is no NIC build).
    nic_object: PathBuf,
    port: u16,
    id: Option<u32>,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Static,
    Memcached,
    Grayscale,
    Whoami,
    Generated,
}

impl Lambda {
    fn rule(&self) -> String {
        match self.id {
            Some(id) => format!("port={},id={id}", self.port),
            None => format!("port={}", self.port),
        }
    }
}

/// The seeded requests for `lambda`: λ header and body.
fn requests(lambda: &Lambda, rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|n| {
            let id = lambda.id.unwrap_or(1 + rng.below(1000) as u32);
            let mut header = LambdaHeader::request(id, rng.next());
            let body: Vec<u8> = match lambda.kind {
                Kind::Static => match rng.below(4) {
                    0 | 1 => b"index.html".to_vec(),
                    2 => b"nosuch.html".to_vec(),
                    _ => {
                        let len = rng.below(80);
                        rng.printable(len)
                    }
                },
                Kind::Memcached => {
                    // Keys from a small pool so gets hit what earlier sets stored.
                    let key = format!("k{}", rng.below(6));
                    if n % 2 == 0 {
                        let len = rng.below(200);
                        [format!("set {key} ").as_bytes(), &rng.printable(len)].concat()
                    } else {
                        format!("get {key}").into_bytes()
                    }
                }
                Kind::Grayscale => {
                    let width = 1 + rng.below(40) as u32;
                    let height = 1 + rng.below(12) as u32;
                    let dims = workloads::grayscale::Dimensions::new(width, height).unwrap();
                    let rgb: Vec<u8> = (0..dims.pixels() * 3).map(|_| rng.next() as u8).collect();
                    let mut out = vec![0u8; lambda_ebpf::MAX_BODY];
                    let len = workloads::grayscale::request_body(dims, &rgb, 0, &mut out).unwrap();
                    header.set_fragment(0, dims.fragment_count());
                    out.truncate(len);
                    out
                }
                Kind::Whoami | Kind::Generated => {
                    let len = rng.below(64);
                    rng.printable(len)
                }
            };
            [&header.as_bytes()[..], &body].concat()
        })
        .collect()
}

/// How a lambda is deployed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Behind the tail-call dispatcher (drv).
    TailCall,
    /// Into the interface's one coalesced program (drv).
    Coalesced,
    /// Its NIC build, lowered for the NFP-4000, into the coalesced program (drv): the code a
    /// NIC core would run.
    CoalescedForNic,
}

fn deploy(pair: &NetnsPair, lambda: &Lambda, mode: Mode) -> String {
    let object = if mode == Mode::CoalescedForNic {
        &lambda.nic_object
    } else {
        &lambda.object
    };
    let mut args = vec![
        "-n",
        &pair.server_ns,
        "deploy",
        object.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--name",
        &lambda.name,
    ];
    let rule = lambda.rule();
    args.extend(["--match", &rule]);
    match mode {
        Mode::TailCall => args.extend(["--mode", "drv"]),
        Mode::Coalesced => args.extend(["--mode", "coalesced", "--xdp", "drv"]),
        Mode::CoalescedForNic => args.extend([
            "--mode",
            "coalesced",
            "--xdp",
            "drv",
            "--lower",
            "--nic",
            "nfp-4000",
        ]),
    }
    let out = lambdactl_ok(&args);
    if lambda.kind == Kind::Memcached {
        memcached::configure(pair, &lambda.name, false);
    }
    out
}

fn lambdactl_err(args: &[&str]) -> String {
    let out = lambdactl(args);
    assert!(!out.status.success(), "lambdactl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Generated lambda `i`, its object written into `dir`.
fn generated_lambda(dir: &Path, i: u32) -> Lambda {
    let object = dir.join(format!("gen{i}.o"));
    std::fs::write(&object, generated_object(i)).unwrap();
    Lambda {
        name: format!("gen-{i}"),
        nic_object: object.clone(),
        object,
        port: GENERATED_PORT,
        id: Some(i),
        kind: Kind::Generated,
    }
}

/// Generated lambdas in the NIC set.
const NIC_GENERATED: u32 = 50;

/// The NIC set: the three sample workloads, each with its NIC build (`<name>-nic.o`),
/// and [`NIC_GENERATED`] generated lambdas.
fn nic_set(dir: &Path) -> Vec<Lambda> {
    let sample = |name: &str, port: u16, kind: Kind| Lambda {
        name: name.into(),
        object: lambda_object(name),
        nic_object: lambda_object(&format!("{name}-nic")),
        port,
        id: None,
        kind,
    };
    let mut all: Vec<Lambda> = (1..=NIC_GENERATED)
        .map(|i| generated_lambda(dir, i))
        .collect();
    all.extend([
        sample("memcached", MEMCACHED_LAMBDA_PORT, Kind::Memcached),
        sample("grayscale", GRAYSCALE_PORT, Kind::Grayscale),
        sample("static-server", STATIC_PORT, Kind::Static),
    ]);
    all
}

/// The whole set, grouped as the coalesced side runs it: one group, one program.
fn lambda_groups(dir: &Path) -> Vec<Vec<Lambda>> {
    let sample = |name: &str, port: u16, kind: Kind| Lambda {
        name: name.into(),
        object: lambda_object(name),
        nic_object: lambda_object(name),
        port,
        id: None,
        kind,
    };
    let whoami = |k: u32| Lambda {
        name: format!("whoami-{k}"),
        object: lambda_object("whoami"),
        nic_object: lambda_object("whoami"),
        port: WHOAMI_PORT,
        id: Some(k),
        kind: Kind::Whoami,
    };
    let generated = |i: u32| generated_lambda(dir, i);
    // Generated lambdas first: each deploy re-coalesces the group, cheapest while it is small.
    // The static-server last: the state checks below replace and undeploy lambdas around it.
    let mut all: Vec<Lambda> = (1..=GENERATED).map(generated).collect();
    all.extend([
        whoami(1),
        whoami(2),
        whoami(3),
        sample("memcached", MEMCACHED_LAMBDA_PORT, Kind::Memcached),
        sample("grayscale", GRAYSCALE_PORT, Kind::Grayscale),
        sample("static-server", STATIC_PORT, Kind::Static),
    ]);
    vec![all]
}

/// Sends each lambda's requests to both pairs, interleaved, and asserts identical answers.
/// Returns how many requests were answered.
fn differential(group: &[Lambda], tail: &Client, coalesced: &Client, rng: &mut Rng) -> usize {
    let mut answered = 0;
    for lambda in group {
        let mut ok = 0;
        for (n, request) in requests(lambda, rng, 6).into_iter().enumerate() {
            // The SDK lambdas take IPv6 too (memcached and the generated ones do not).
            let v6 =
                n % 3 == 2 && matches!(lambda.kind, Kind::Static | Kind::Whoami | Kind::Grayscale);
            let a = tail.call_on(v6, lambda.port, &request, 3);
            let b = coalesced.call_on(v6, lambda.port, &request, 3);
            assert_eq!(
                a, b,
                "{} (IPv6 {v6}): the tail-call and the coalesced deployment answer differently",
                lambda.name
            );
            let answer = a.unwrap_or_else(|| panic!("{}: no answer", lambda.name));
            let header = LambdaHeader::decode(&answer).unwrap();
            assert!(header.is_response(), "{}: not a response", lambda.name);
            if header.status() == Some(Status::Ok) {
                ok += 1;
            }
            answered += 1;
        }
        assert!(ok > 0, "{}: no request answered OK", lambda.name);
    }
    answered
}

fn whoami_calls(answer: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(&answer[HEADER_LEN..]).into_owned();
    text.rsplit("calls=")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn coalesced_deployment_answers_as_the_tail_call_one_and_keeps_state_across_changes() {
    let test = "coalesced_deployment_answers_as_the_tail_call_one_and_keeps_state_across_changes";
    if !memcached::available(test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lnic-coalesced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let groups = lambda_groups(&dir);
    let tail_pair = prepared_pair();
    let coal_pair = prepared_pair();
    let _memcached_t = memcached::start(&tail_pair);
    let _memcached_c = memcached::start(&coal_pair);
    let started = Instant::now();
    for lambda in groups.iter().flatten() {
        deploy(&tail_pair, lambda, Mode::TailCall);
    }
    eprintln!(
        "tail-call: {} lambdas deployed in {:.1?}",
        groups.iter().map(Vec::len).sum::<usize>(),
        started.elapsed()
    );
    let tail = Client::new(&tail_pair);
    let coal = Client::new(&coal_pair);
    let mut rng = Rng(SEED);
    let mut answered = 0;
    for (g, group) in groups.iter().enumerate() {
        let started = Instant::now();
        let mut last = String::new();
        for lambda in group {
            last = deploy(&coal_pair, lambda, Mode::Coalesced);
        }
        eprintln!(
            "coalesced group {g} ({} lambdas) deployed in {:.1?}: {}",
            group.len(),
            started.elapsed(),
            last.lines()
                .find(|l| l.contains("runs one coalesced program"))
                .unwrap_or("")
        );
        answered += differential(group, &tail, &coal, &mut rng);
        // Requests no rule matches pass to the host stack on both: no λ answer.
        let stray = LambdaHeader::request(999, rng.next()).as_bytes().to_vec();
        assert_eq!(tail.call(9003, &stray, 1), None);
        assert_eq!(coal.call(9003, &stray, 1), None);
        assert_eq!(coal.call(GENERATED_PORT, &stray, 1), None);
        if g + 1 < groups.len() {
            lambdactl_ok(&["-n", &coal_pair.server_ns, "undeploy", "--all"]);
        }
    }
    eprintln!("{answered} requests answered identically by both deployments");

    // State across re-coalescing, with a client calling the static-server all along.
    let ls = lambdactl_ok(&["-n", &coal_pair.server_ns, "ls"]);
    assert!(ls.contains("coalesced/drv"), "{ls}");
    let whoami = |k: u32, client: &Client| {
        let request = LambdaHeader::request(k, rng_id(k)).as_bytes().to_vec();
        client
            .call(WHOAMI_PORT, &request, 3)
            .expect("whoami answers")
    };
    let before = whoami_calls(&whoami(1, &coal));
    let stop = AtomicBool::new(false);
    let (sent, unanswered) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let client = Client::new(&coal_pair);
            let mut sent = 0u64;
            let mut unanswered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let request = [
                    &LambdaHeader::request(1, 0x10ad_0000 + sent).as_bytes()[..],
                    b"index.html",
                ]
                .concat();
                match client.call(STATIC_PORT, &request, 1) {
                    Some(answer) => assert_eq!(
                        LambdaHeader::decode(&answer).unwrap().status(),
                        Some(Status::Ok)
                    ),
                    None => unanswered += 1,
                }
            }
            (sent, unanswered)
        });
        let whoami_object = lambda_object("whoami");
        let out = lambdactl_ok(&[
            "-n",
            &coal_pair.server_ns,
            "deploy",
            whoami_object.to_str().unwrap(),
            "--name",
            "whoami-1",
            "--replace",
        ]);
        assert!(
            out.contains("map CALLS (array)") && out.contains("reused, contents kept"),
            "{out}"
        );
        lambdactl_ok(&["-n", &coal_pair.server_ns, "undeploy", "gen-7"]);
        lambdactl_ok(&["-n", &coal_pair.server_ns, "undeploy", "whoami-2"]);
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!(
        "static-server under load during 3 re-coalescings: {sent} requests, {unanswered} unanswered"
    );
    assert!(sent > 10, "the load ran: {sent}");
    assert_eq!(
        unanswered, 0,
        "requests went unanswered while re-coalescing"
    );
    let after = whoami_calls(&whoami(1, &coal));
    assert_eq!(
        after,
        before + 1,
        "whoami-1's CALLS survived its replacement"
    );
    let calls = lambdactl_ok(&[
        "-n",
        &coal_pair.server_ns,
        "maps",
        "get",
        "whoami-1/CALLS",
        "0",
    ]);
    assert!(calls.contains(&after.to_string()), "{calls}");
    // The undeployed ones are gone, their neighbours answer.
    let gen7 = LambdaHeader::request(7, 77).as_bytes().to_vec();
    assert_eq!(
        coal.call(GENERATED_PORT, &gen7, 1),
        None,
        "gen-7 was undeployed"
    );
    let gen8 = LambdaHeader::request(8, 88).as_bytes().to_vec();
    assert!(
        coal.call(GENERATED_PORT, &gen8, 3).is_some(),
        "gen-8 answers"
    );
    let request = LambdaHeader::request(2, 22).as_bytes().to_vec();
    assert_eq!(
        coal.call(WHOAMI_PORT, &request, 1),
        None,
        "whoami-2 was undeployed"
    );

    // Refusals, each naming what is in the way; the running program stays.
    let gen8_object = dir.join("gen8.o");
    let err = lambdactl_err(&[
        "-n",
        &coal_pair.server_ns,
        "deploy",
        gen8_object.to_str().unwrap(),
        "--iface",
        &coal_pair.server_if,
        "--name",
        "gen-8-again",
        "--match",
        &format!("port={GENERATED_PORT},id=8"),
        "--mode",
        "coalesced",
    ]);
    assert!(err.contains("already held by lambda `gen-8`"), "{err}");
    let err = lambdactl_err(&[
        "-n",
        &coal_pair.server_ns,
        "deploy",
        gen8_object.to_str().unwrap(),
        "--iface",
        &coal_pair.server_if,
        "--name",
        "tail",
        "--match",
        "port=9999",
    ]);
    assert!(
        err.contains("runs lambdas deployed in coalesced mode"),
        "{err}"
    );
    let err = lambdactl_err(&[
        "-n",
        &tail_pair.server_ns,
        "deploy",
        gen8_object.to_str().unwrap(),
        "--iface",
        &tail_pair.server_if,
        "--name",
        "coal",
        "--match",
        "port=9999",
        "--mode",
        "coalesced",
    ]);
    assert!(
        err.contains("runs lambdas deployed in tail-call mode"),
        "{err}"
    );
    let err = lambdactl_err(&[
        "-n",
        &coal_pair.server_ns,
        "attach",
        gen8_object.to_str().unwrap(),
        "--iface",
        &coal_pair.server_if,
    ]);
    assert!(err.contains("runs a coalesced program"), "{err}");
    assert!(
        coal.call(GENERATED_PORT, &gen8, 3).is_some(),
        "gen-8 still answers"
    );

    // Undeploying everything leaves nothing: no program on the interface, no pins.
    lambdactl_ok(&["-n", &coal_pair.server_ns, "undeploy", "--all"]);
    assert!(
        !coal_pair.server_xdp_attached(),
        "a program is left on the interface"
    );
    let ls = lambdactl_ok(&["-n", &coal_pair.server_ns, "ls", "--json"]);
    assert_eq!(ls.trim(), "[]", "{ls}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn rng_id(k: u32) -> u64 {
    0x7768_6f00_0000_0000 + u64::from(k)
}

/// The kernel's one-million-instruction verification budget, measured: a lambda the kernel's
/// verifier walks ≈ 650,000 instructions for fits beside the static-server, a second does not,
/// and the deploy that would cross the limit is refused with the limit named while the running
/// program keeps answering.
#[test]
fn limits_are_refused_by_name() {
    if !kernel_tests_enabled("limits_are_refused_by_name") {
        return;
    }
    let pair = prepared_pair();
    let dir = std::env::temp_dir().join(format!("lnic-coalesced-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let costly_path = |variant: i32| {
        let path = dir.join(format!("costly-{variant}.o"));
        std::fs::write(&path, costly_object(variant)).unwrap();
        path
    };
    let lambda = |name: &str, port: u16| Lambda {
        name: name.into(),
        object: lambda_object(name),
        nic_object: lambda_object(name),
        port,
        id: None,
        kind: Kind::Static,
    };
    let costly = |name: &str, port: u16| Lambda {
        name: name.into(),
        object: costly_path(1),
        nic_object: costly_path(1),
        port,
        id: None,
        kind: Kind::Generated,
    };
    let used = |out: &str| -> u64 {
        out.split("verifier processed ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no processed count in {out}"))
    };
    let alone = used(&deploy(
        &pair,
        &lambda("static-server", STATIC_PORT),
        Mode::Coalesced,
    ));
    let with_costly = used(&deploy(&pair, &costly("costly-1", 9300), Mode::Coalesced));
    assert!(
        with_costly > alone + (1 << COSTLY_BRANCHES),
        "the costly lambda costs the kernel's verifier at least one instruction per path: \
         {alone} alone, {with_costly} with it"
    );
    let mut args = vec![
        "-n".to_string(),
        pair.server_ns.clone(),
        "deploy".into(),
        costly_path(2).to_str().unwrap().into(),
        "--iface".into(),
        pair.server_if.clone(),
        "--name".into(),
        "costly-2".into(),
        "--match".into(),
        "port=9301".into(),
        "--mode".into(),
        "coalesced".into(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = lambdactl_err(&refs);
    eprintln!(
        "static-server alone: {alone} instructions processed; with one costly lambda: \
         {with_costly}; adding a second: {err}"
    );
    assert!(
        err.contains("BPF_COMPLEXITY_LIMIT_INSNS") && err.contains("1000000"),
        "{err}"
    );
    // Nothing of the refused lambda stays; the others still run.
    let ls = lambdactl_ok(&["-n", &pair.server_ns, "ls"]);
    assert!(
        ls.contains("static-server") && ls.contains("costly-1") && !ls.contains("costly-2"),
        "{ls}"
    );
    args[3] = costly_path(3).to_str().unwrap().into();
    args[7] = "costly-3".into();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert!(lambdactl_err(&refs).contains("BPF_COMPLEXITY_LIMIT_INSNS"));
    let client = Client::new(&pair);
    let request = [&LambdaHeader::request(1, 5).as_bytes()[..], b"index.html"].concat();
    let answer = client
        .call(STATIC_PORT, &request, 3)
        .expect("static-server answers");
    assert_eq!(
        LambdaHeader::decode(&answer).unwrap().status(),
        Some(Status::Ok)
    );
    lambdactl_ok(&["-n", &pair.server_ns, "undeploy", "costly-1"]);
    lambdactl_ok(&["-n", &pair.server_ns, "undeploy", "static-server"]);
    assert!(!pair.server_xdp_attached());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The must-show for the NIC: the three sample workloads in their NIC builds and 50
/// generated lambdas, coalesced and lowered for the NFP-4000.
///
/// - `lambdactl coalesce --lower --nic nfp-4000 --kernel`: every lambda lowered, the set split
///   over cores by coalesced size, and every core's program passes our verifier's `nfp`
///   profile (instruction budget included) and loads in the kernel.
/// - Over real UDP: each core's share deployed with `--mode coalesced --lower` on a drv-mode
///   veth (the lowered NIC builds coalesced into the program that core would run), in turn,
///   answers every lambda's seeded requests byte for byte as the normal builds behind the
///   tail-call dispatcher do, against a real memcached on each side.
#[test]
fn nic_builds_lowered_and_coalesced_fit_nfp_cores_and_answer_as_the_tail_call_deployment() {
    let test =
        "nic_builds_lowered_and_coalesced_fit_nfp_cores_and_answer_as_the_tail_call_deployment";
    if !memcached::available(test) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lnic-coalesced-nic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let set = nic_set(&dir);

    let specs: Vec<String> = set
        .iter()
        .map(|l| {
            let id = l.id.map(|id| format!("/{id}")).unwrap_or_default();
            format!("{}@{}{id}", l.nic_object.display(), l.port)
        })
        .collect();
    let mut args = vec![
        "coalesce", "--lower", "--nic", "nfp-4000", "--kernel", "--json",
    ];
    args.extend(specs.iter().map(String::as_str));
    let out = lambdactl(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "coalesce --lower failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let lowering = report["lowering"].as_array().unwrap();
    assert_eq!(lowering.len(), set.len());
    assert!(
        lowering.iter().all(|l| l["lowered"] == true),
        "{lowering:?}"
    );
    let cores = report["cores"].as_array().unwrap();
    assert!(
        cores.iter().all(|c| c.is_u64()),
        "a lambda fits no core: {cores:?}"
    );
    let programs = report["core_programs"].as_array().unwrap();
    assert_eq!(
        programs.len() as u64,
        report["cores_needed"].as_u64().unwrap()
    );
    let mut placed = 0;
    for program in programs {
        assert_eq!(program["nfp_passes"], true, "{program}");
        assert!(program["insns"].as_u64().unwrap() <= 2800, "{program}");
        assert!(
            program["kernel_verified_insns"].as_u64().unwrap() > 0,
            "{program}"
        );
        placed += program["lambdas"].as_array().unwrap().len();
        eprintln!(
            "core {}: {} lambdas, {} slots, at most {} instructions per run, kernel processed {}",
            program["core"],
            program["lambdas"].as_array().unwrap().len(),
            program["insns"],
            program["max_insns_executed"],
            program["kernel_verified_insns"]
        );
    }
    assert_eq!(placed, set.len(), "every lambda is on exactly one core");
    eprintln!(
        "{} lambdas: {} slots as separate programs, {} coalesced as one; {} NFP-4000 cores",
        set.len(),
        report["report"]["insns_before"],
        report["report"]["insns_after"],
        programs.len()
    );

    let tail_pair = prepared_pair();
    let nic_pair = prepared_pair();
    let _memcached_t = memcached::start(&tail_pair);
    let _memcached_n = memcached::start(&nic_pair);
    for lambda in &set {
        deploy(&tail_pair, lambda, Mode::TailCall);
    }
    // The host runs one program per interface, and the kernel verifies at most a million
    // instructions of it: the three workloads' NIC builds cost it about 1.3 million together.
    // So each core's share is deployed on its own, in turn: the program that core would run.
    let groups: Vec<Vec<&Lambda>> = (0..programs.len())
        .map(|core| {
            set.iter()
                .zip(cores)
                .filter(|(_, c)| c.as_u64() == Some(core as u64))
                .map(|(l, _)| l)
                .collect()
        })
        .collect();
    let tail = Client::new(&tail_pair);
    let nic = Client::new(&nic_pair);
    let mut rng = Rng(SEED ^ 0x4e1c);
    let mut answered = 0;
    for (core, group) in groups.iter().enumerate() {
        let started = Instant::now();
        let mut last = String::new();
        for lambda in group {
            last = deploy(&nic_pair, lambda, Mode::CoalescedForNic);
        }
        eprintln!(
            "core {core}'s {} lambdas deployed lowered and coalesced in {:.1?}: {}",
            group.len(),
            started.elapsed(),
            last.lines()
                .find(|l| l.contains("runs one coalesced program"))
                .unwrap_or("")
        );
        let group: Vec<Lambda> = group.iter().map(|&l| l.clone()).collect();
        answered += differential(&group, &tail, &nic, &mut rng);
        let stray = LambdaHeader::request(999, rng.next()).as_bytes().to_vec();
        assert_eq!(nic.call(GENERATED_PORT, &stray, 1), None);
        lambdactl_ok(&["-n", &nic_pair.server_ns, "undeploy", "--all"]);
    }
    eprintln!(
        "{answered} requests answered identically by the tail-call deployment and the NIC \
         cores' programs run on the host"
    );

    for pair in [&tail_pair, &nic_pair] {
        lambdactl_ok(&["-n", &pair.server_ns, "undeploy", "--all"]);
        assert!(
            !pair.server_xdp_attached(),
            "a program is left on the interface"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
