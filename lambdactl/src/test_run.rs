//! `lambdactl test-run`: one packet through BPF_PROG_TEST_RUN, the output decoded.

use std::{fs, process::ExitCode};

use anyhow::{Context as _, Result};
use std::net::SocketAddr;

use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader};
use loader::frames::{FrameError, UdpFrame};

use crate::{TestRunArgs, hexdump, plural, print_body, status_text};

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
    let outcome = loader::test_run(&bytes, &name, &packet, args.repeat, &params)?;
    for note in &outcome.notes {
        println!("note: {note}");
    }
    println!("program: {}", outcome.program);
    for (map, n) in &outcome.seeded {
        println!("seeded:  {map} ({n} record{})", plural(*n));
    }
    println!("action:  {}", outcome.action);
    if outcome.repeat > 1 {
        println!(
            "time:    {} ns/run mean, {} ns min (kernel-measured, {} runs on the original packet)",
            outcome.ns_per_run, outcome.ns_min, outcome.repeat
        );
    } else {
        println!(
            "time:    {} ns (kernel-measured, one cold run; --repeat N averages)",
            outcome.ns_per_run
        );
    }
    println!(
        "output packet ({} bytes{}):",
        outcome.packet_out.len(),
        if outcome.packet_out == packet {
            ", unchanged"
        } else {
            ""
        }
    );
    print!("{}", hexdump(&outcome.packet_out));
    match UdpFrame::decode(&outcome.packet_out) {
        Ok(udp) => match LambdaHeader::decode(&udp.payload) {
            Ok(h) => {
                println!(
                    "λ {}: UDP {} → {} (checksums OK), lambda {}, request {:#018x}, fragment {}/{}, status {}",
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
                println!("body ({} bytes):", body.len());
                print_body(body);
            }
            Err(e) => println!("UDP {} → {}: not a λ datagram ({e})", udp.src, udp.dst),
        },
        Err(FrameError::NotUdp { .. }) => {}
        Err(e) => println!("output is not a valid UDP frame: {e}"),
    }
    Ok(ExitCode::SUCCESS)
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
