//! `lambdactl test-run`: one packet through BPF_PROG_TEST_RUN, the VM backend, or both, the
//! output decoded and, with both, compared.

use std::{fs, process::ExitCode};

use anyhow::{Context as _, Result};
use std::net::SocketAddr;

use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader};
use loader::frames::{FrameError, UdpFrame};

use std::sync::Arc;
use std::time::Instant;

use loader::XdpAction;
use loader::maps::MapAccess as _;
use loader::vm::{Engine, VmError, VmOptions, VmProgram, Worker};

use crate::{BackendArg, TestRunArgs, hexdump, plural, print_body, status_text};

pub(crate) fn test_run(args: TestRunArgs) -> Result<ExitCode> {
    let bytes =
        fs::read(&args.object).with_context(|| format!("cannot read {}", args.object.display()))?;
    let name = args.object.display().to_string();
    let params = args.lambda.params();
    let packet = match (&args.packet_file, &args.request_body) {
        (Some(path), _) => {
            fs::read(path).with_context(|| format!("cannot read packet file {}", path.display()))?
        }
        (None, Some(body)) => {
            build_request_frame(params.port, params.lambda_id.unwrap_or(1), body.as_bytes())?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let kernel = if args.backend != BackendArg::Vm {
        if !args.skip_verify {
            let contract = crate::verify::check_before_load(
                &args.object,
                &params,
                verifier::Backend::Kernel,
                &args.limits,
            )?;
            println!("[kernel] {}", crate::verify::summary(&contract));
        }
        let outcome = loader::test_run(&bytes, &name, &packet, args.repeat, &params)?;
        for note in &outcome.notes {
            println!("note: {note}");
        }
        println!("[kernel] program: {}", outcome.program);
        for (map, n) in &outcome.seeded {
            println!("[kernel] seeded:  {map} ({n} record{})", plural(*n));
        }
        let time = if outcome.repeat > 1 {
            format!(
                "{} ns/run mean, {} ns min (kernel-measured, {} runs on the original packet)",
                outcome.ns_per_run, outcome.ns_min, outcome.repeat
            )
        } else {
            format!(
                "{} ns (kernel-measured, one cold run; --repeat N averages)",
                outcome.ns_per_run
            )
        };
        report(
            "kernel",
            outcome.action,
            &outcome.packet_out,
            &packet,
            &time,
        );
        Some((outcome.action, outcome.packet_out))
    } else {
        None
    };
    let vm = if args.backend != BackendArg::Kernel {
        let engine = if args.jit {
            Engine::Jit
        } else {
            Engine::Interpreter
        };
        let options = VmOptions {
            engine,
            verify: !args.skip_verify,
            limits: args.limits.limits(),
            budget: args.budget,
            params,
            ..VmOptions::default()
        };
        let program = Arc::new(VmProgram::load(&bytes, &name, &options).map_err(vm_error)?);
        if let Some(contract) = &program.contract {
            println!("[vm] {}", crate::verify::summary(contract));
        }
        for (map, n) in &program.seeded {
            println!("[vm] seeded:  {map} ({n} record{})", plural(*n));
        }
        let mut worker = Worker::new(Arc::clone(&program), 0).map_err(vm_error)?;
        let outcome = worker.run(&packet).map_err(|e| run_error(&program, e))?;
        // What the shown run wrote to its ring buffers (the SDK log), taken before the timed
        // repetitions add their copies.
        let logged: Vec<String> = program
            .maps
            .iter()
            .filter(|e| e.map.spec().map_type.is_ring_buffer())
            .flat_map(|e| {
                let records = e.map.ringbuf_drain().unwrap_or_default();
                records
                    .into_iter()
                    .map(|r| loader::vm::helpers::ringbuf_line(&e.name, &r))
                    .collect::<Vec<_>>()
            })
            .collect();
        // Timed repetitions leave their output in the frame (no copy), each on the original
        // packet; the first run, untimed, is the one shown.
        let started = Instant::now();
        for _ in 0..args.repeat.max(1) {
            worker
                .run_in_place(&packet)
                .map_err(|e| run_error(&program, e))?;
        }
        let elapsed = started.elapsed();
        for line in &outcome.log {
            println!("[vm] trace: {line}");
        }
        for line in &logged {
            println!("[vm] {line}");
        }
        let per_run = elapsed.as_nanos() / u128::from(args.repeat.max(1));
        let executed = if engine == Engine::Interpreter {
            format!(", {} instructions executed", outcome.executed)
        } else {
            String::new()
        };
        let time = format!(
            "{per_run} ns/run ({engine}, wall clock over {} run{}{executed})",
            args.repeat.max(1),
            plural(args.repeat.max(1) as usize)
        );
        report("vm", outcome.action, &outcome.packet_out, &packet, &time);
        Some((outcome.action, outcome.packet_out))
    } else {
        None
    };
    if let (Some(kernel), Some(vm)) = (kernel, vm) {
        if kernel == vm {
            println!(
                "kernel and vm agree: same action, same {} output bytes",
                kernel.1.len()
            );
        } else {
            println!("DIFFERENCE between kernel and vm:");
            if kernel.0 != vm.0 {
                println!("  action: kernel {}, vm {}", kernel.0, vm.0);
            }
            if kernel.1 != vm.1 {
                let at = kernel
                    .1
                    .iter()
                    .zip(&vm.1)
                    .position(|(a, b)| a != b)
                    .unwrap_or(kernel.1.len().min(vm.1.len()));
                println!(
                    "  output: kernel {} bytes, vm {} bytes, first difference at byte {at}",
                    kernel.1.len(),
                    vm.1.len()
                );
            }
            return Ok(ExitCode::from(5));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A VM load error, with the source line of the instruction it names.
fn vm_error(error: VmError) -> anyhow::Error {
    anyhow::anyhow!("VM backend: {error}")
}

fn run_error(program: &VmProgram, error: VmError) -> anyhow::Error {
    match error.insn().and_then(|insn| program.line(insn)) {
        Some(line) => anyhow::anyhow!("VM backend: {error} (at {line})"),
        None => vm_error(error),
    }
}

/// Prints one backend's result: action, time, output packet, decoded λ response.
fn report(backend: &str, action: XdpAction, out: &[u8], input: &[u8], time: &str) {
    println!("[{backend}] action:  {action}");
    println!("[{backend}] time:    {time}");
    println!(
        "[{backend}] output packet ({} bytes{}):",
        out.len(),
        if out == input { ", unchanged" } else { "" }
    );
    print!("{}", hexdump(out));
    match UdpFrame::decode(out) {
        Ok(udp) => match LambdaHeader::decode(&udp.payload) {
            Ok(h) => {
                println!(
                    "[{backend}] λ {}: UDP {} → {} (checksums OK), lambda {}, request {:#018x}, fragment {}/{}, status {}",
                    if h.is_response() {
                        "response"
                    } else {
                        "request"
                    },
                    udp.src,
                    udp.dst,
                    h.lambda_id(),
                    h.request_id(),
                    h.frag_index(),
                    h.frag_count(),
                    status_text(&h)
                );
                let body = &udp.payload[HEADER_LEN..];
                println!("[{backend}] body ({} bytes):", body.len());
                print_body(body);
            }
            Err(e) => println!(
                "[{backend}] UDP {} → {}: not a λ datagram ({e})",
                udp.src, udp.dst
            ),
        },
        Err(FrameError::NotUdp { .. }) => {}
        Err(e) => println!("[{backend}] output is not a valid UDP frame: {e}"),
    }
}

/// An Ethernet/IPv4/UDP frame carrying a λ request: 10.0.0.2:40000 → 10.0.0.1:`port`, with
/// correct IPv4 and UDP checksums.
fn build_request_frame(port: u16, lambda_id: u32, body: &[u8]) -> Result<Vec<u8>> {
    let mut payload = LambdaHeader::request(lambda_id, 0x0102_0304_0506_0708)
        .as_bytes()
        .to_vec();
    payload.extend_from_slice(body);
    let frame = UdpFrame {
        src_mac: [0x02, 0, 0, 0, 0, 0x02],
        dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        src: SocketAddr::from(([10, 0, 0, 2], 40000)),
        dst: SocketAddr::from(([10, 0, 0, 1], port)),
        payload,
    };
    Ok(frame.encode()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_request_frame_parses_back() {
        let frame = build_request_frame(9000, 7, b"index.html").unwrap();
        let udp = UdpFrame::decode(&frame).unwrap();
        assert_eq!(udp.dst, "10.0.0.1:9000".parse().unwrap());
        assert_eq!(udp.src, "10.0.0.2:40000".parse().unwrap());
        let h = LambdaHeader::decode(&udp.payload).unwrap();
        assert_eq!(h.lambda_id(), 7);
        assert_eq!(&udp.payload[HEADER_LEN..], b"index.html");
    }
}
