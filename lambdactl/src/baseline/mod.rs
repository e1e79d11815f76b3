//! `lambdactl baseline`: each workload as a plain Rust UDP server process, the paper's
//! "bare-metal" column. Same wire format (`lambda_ebpf::wire`), same protocol code
//! (`workloads`), same answers as the lambda; ordinary sockets instead of XDP.
//!
//! A workload is one module with a [`Handler`] and one [`Workload`] variant.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, ValueEnum};
use lambda_ebpf::wire::{HEADER_LEN, LambdaHeader, Status};

mod grayscale;
mod memcached;
mod static_server;

#[derive(Args)]
pub(crate) struct BaselineArgs {
    /// The workload to serve.
    #[arg(value_enum)]
    workload: Workload,
    /// UDP address to serve λ requests on.
    #[arg(long, default_value = "127.0.0.1:9000", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// memcached workload: the memcached server's UDP address (started with `-U PORT`).
    #[arg(long, default_value = "127.0.0.1:11211", value_name = "ADDR:PORT")]
    memcached: SocketAddr,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Workload {
    /// Answers `index.html` with the static-server lambda's default page, NOT_FOUND otherwise.
    StaticServer,
    /// GET/SET against a memcached server over UDP, like the memcached lambda.
    Memcached,
    /// The image grayscaler: each fragment converted on its own, like the grayscale lambda.
    Grayscale,
}

/// One workload's request handling: the λ request in, the response status and body out.
pub(crate) trait Handler {
    /// Answers one request (or one fragment of it: `header` has the fragment fields); the
    /// response body goes into `out` (empty on entry).
    fn handle(&mut self, header: &LambdaHeader, body: &[u8], out: &mut Vec<u8>) -> Status;
}

/// The single-datagram workloads' rule: a request in several fragments is a BAD_REQUEST.
fn single_fragment(header: &LambdaHeader) -> Result<(), Status> {
    if header.frag_count() == 1 {
        Ok(())
    } else {
        Err(Status::BadRequest)
    }
}

impl Workload {
    /// The name on the command line (`static-server`, …).
    pub(crate) fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// The workload's request handling; `memcached` is the server the memcached workload talks to.
/// Shared by the UDP baseline and the fork-per-request handler (`lambdactl handle`).
pub(crate) fn handler(workload: Workload, memcached: SocketAddr) -> Result<Box<dyn Handler>> {
    Ok(match workload {
        Workload::StaticServer => Box::new(static_server::StaticServer),
        Workload::Memcached => Box::new(memcached::Memcached::connect(memcached)?),
        Workload::Grayscale => Box::new(grayscale::Grayscale),
    })
}

pub(crate) fn run(args: BaselineArgs) -> Result<ExitCode> {
    let mut handler = handler(args.workload, args.memcached)?;
    let socket = UdpSocket::bind(args.listen)
        .with_context(|| format!("cannot listen on UDP {}", args.listen))?;
    println!(
        "serving baseline {} on udp {}",
        args.workload.name(),
        socket.local_addr()?
    );
    use std::io::Write as _;
    io::stdout().flush()?;
    serve(&socket, handler.as_mut())
}

/// Receives, answers, repeats; until the process is killed.
fn serve(socket: &UdpSocket, handler: &mut dyn Handler) -> Result<ExitCode> {
    let mut buf = vec![0u8; 65_536];
    let mut body = Vec::with_capacity(lambda_ebpf::MAX_BODY);
    let mut response = Vec::with_capacity(HEADER_LEN + lambda_ebpf::MAX_BODY);
    loop {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error from an earlier send (the client went away): not ours to stop for.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e).context("receiving"),
        };
        // Not a λ request (or a response): ignored, as the lambda passes it.
        let Ok(header) = LambdaHeader::decode(&buf[..len]) else {
            continue;
        };
        if header.is_response() {
            continue;
        }
        body.clear();
        let status = handler.handle(&header, &buf[HEADER_LEN..len], &mut body);
        // The lambda's rule: a body that does not fit one datagram becomes an empty TOO_LARGE.
        let (status, body) = if body.len() > lambda_ebpf::MAX_BODY {
            (Status::TooLarge, &[][..])
        } else {
            (status, &body[..])
        };
        let mut reply = header;
        reply.make_response(status);
        response.clear();
        response.extend_from_slice(reply.as_bytes());
        response.extend_from_slice(body);
        // A failed send loses one answer, as a dropped packet would; the server goes on.
        let _ = socket.send_to(&response, peer);
    }
}
