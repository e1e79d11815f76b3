//! `lambdactl baseline <workload> --listen ADDR:PORT`: each workload as a plain native UDP
//! server, speaking the same λ wire format and running the same protocol code
//! (`workloads`) as the lambda, with ordinary sockets — the benchmarks' "bare-metal" column.

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Args, ValueEnum};

mod grayscale;

/// The workloads that have a native baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// The image grayscaler (`samples/src/bin/grayscale.rs`).
    Grayscale,
}

#[derive(Args)]
pub struct BaselineArgs {
    /// Which workload to serve.
    #[arg(value_enum)]
    workload: Workload,
    /// UDP address to serve on, e.g. 127.0.0.1:9000 or [::]:9000 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
}

pub fn run(args: BaselineArgs) -> Result<std::process::ExitCode> {
    match args.workload {
        Workload::Grayscale => grayscale::serve(args.listen),
    }
}
