//! BPF_PROG_TEST_RUN: run a lambda on a packet without attaching it.

use std::os::fd::AsFd as _;

use aya::{Ebpf, EbpfLoader, TestRun as _, TestRunOptions, programs::Xdp};

use super::error::{KernelError, aya_err};
use super::sys::check_privileges;
use super::{Globals, LambdaParams, load_maps, load_xdp, map_data, seed_map};
use crate::image::LambdaImage;
use crate::lambda::XdpAction;
use crate::maps::{Entries, KernelMap, MapAccess as _};

/// The result of [`test_run`].
#[derive(Clone, Debug)]
pub struct TestRunOutcome {
    pub program: String,
    pub action: XdpAction,
    /// The packet as the program left it.
    pub packet_out: Vec<u8>,
    /// Mean run time over the repetitions, as measured by the kernel (each repetition runs on
    /// the original packet).
    pub ns_per_run: u64,
    /// Fastest repetition.
    pub ns_min: u64,
    pub repeat: u32,
    /// `(map, records)` seeded before the run.
    pub seeded: Vec<(String, usize)>,
    pub notes: Vec<String>,
}

/// Room for the program to grow the packet (`bpf_xdp_adjust_tail`).
const TEST_RUN_HEADROOM: usize = 4096;

/// A lambda's XDP program loaded (not attached, maps not pinned, maps seeded) for
/// BPF_PROG_TEST_RUN: load once, run many packets.
pub struct TestRunner {
    ebpf: Ebpf,
    program: String,
    /// `(map, records)` seeded at load.
    pub seeded: Vec<(String, usize)>,
    pub notes: Vec<String>,
}

impl TestRunner {
    /// Parses, verifies (in the kernel) and loads the object's XDP program, and seeds its maps.
    pub fn load(
        bytes: &[u8],
        name: &str,
        params: &LambdaParams,
    ) -> Result<TestRunner, KernelError> {
        let image = LambdaImage::parse(bytes, name)?;
        check_privileges("test-running a program")?;
        let mut notes = Vec::new();
        let globals = Globals::new(params);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader, &image, &mut notes);
        let mut ebpf = load_maps(&mut loader, bytes)?;
        let mut seeded = Vec::new();
        for map in &image.maps {
            let n = seed_map(&ebpf, &image, &map.name)?;
            if n > 0 {
                seeded.push((map.name.clone(), n));
            }
        }
        let program = image.xdp_program().name.clone();
        load_xdp(&mut ebpf, &program)?;
        Ok(TestRunner {
            ebpf,
            program,
            seeded,
            notes,
        })
    }

    /// Every entry of the loaded object's map `name`, in the userspace view (see
    /// [`MapAccess::entries`](crate::maps::MapAccess::entries)): what the tests compare with
    /// another backend's maps.
    pub fn map_entries(&self, name: &str) -> Result<Entries, KernelError> {
        let map = self.ebpf.map(name).ok_or_else(|| {
            aya_err(
                format!("map `{name}`"),
                std::io::Error::new(std::io::ErrorKind::NotFound, "the object has no such map"),
            )
        })?;
        let fd = map_data(map)
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| aya_err(format!("duplicating the fd of map `{name}`"), e))?;
        let map = KernelMap::from_fd(fd).map_err(|e| aya_err(format!("map `{name}`"), e))?;
        map.entries()
            .map_err(|e| aya_err(format!("reading map `{name}`"), e))
    }

    /// Runs the program on `packet` `repeat` times. Action and output packet are the first
    /// run's; every run starts from `packet` (maps keep whatever earlier runs wrote).
    pub fn run(&self, packet: &[u8], repeat: u32) -> Result<TestRunOutcome, KernelError> {
        if packet.len() < 14 {
            return Err(KernelError::PacketTooShort { len: packet.len() });
        }
        let program: &Xdp = self
            .ebpf
            .program(&self.program)
            .ok_or_else(|| KernelError::MissingProgram {
                program: self.program.clone(),
            })?
            .try_into()
            .map_err(|e| aya_err(format!("program `{}`", self.program), e))?;
        // The kernel's own `repeat` runs the program again and again on the *same* buffer, so
        // every run after the first would see the previous run's output (a response, not a
        // request). Run once per repetition instead, each on the original packet, and average
        // the kernel's per-run times.
        let repeat = repeat.max(1);
        let mut first: Option<(u32, Vec<u8>)> = None;
        let mut total_ns: u128 = 0;
        let mut min_ns = u64::MAX;
        let mut out = vec![0u8; packet.len() + TEST_RUN_HEADROOM];
        for _ in 0..repeat {
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(packet),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..TestRunOptions::default()
                })
                .map_err(|e| aya_err("BPF_PROG_TEST_RUN", e))?;
            let ns = result.duration.as_nanos();
            total_ns += ns;
            min_ns = min_ns.min(ns as u64);
            if first.is_none() {
                let len = (result.data_size_out as usize).min(out.len());
                first = Some((result.return_value, out[..len].to_vec()));
            }
        }
        let (code, packet_out) = first.expect("repeat >= 1");
        Ok(TestRunOutcome {
            program: self.program.clone(),
            action: XdpAction::from_code(code),
            packet_out,
            ns_per_run: (total_ns / u128::from(repeat)) as u64,
            ns_min: min_ns,
            repeat,
            seeded: self.seeded.clone(),
            notes: self.notes.clone(),
        })
    }
}

/// Loads the image's XDP program and runs it on `packet` `repeat` times: [`TestRunner::load`]
/// then [`TestRunner::run`].
pub fn test_run(
    bytes: &[u8],
    name: &str,
    packet: &[u8],
    repeat: u32,
    params: &LambdaParams,
) -> Result<TestRunOutcome, KernelError> {
    TestRunner::load(bytes, name, params)?.run(packet, repeat)
}
