//! `lambdactl handle`: one request of a workload as a short-lived process, the handler an
//! OpenFaaS-classic watchdog (`lambdactl watchdog`) forks for every HTTP request.
//!
//! The request body comes on stdin, the response body goes to stdout. The work is exactly the
//! native baseline's (`baseline::handler`, the shared `workloads` code): the λ header the
//! baseline would have read from the datagram is made up here (one fragment, or the one given
//! with `--fragment`). Any answer but OK is an error: a line on stderr naming the status, and
//! exit status 1.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use lambda_ebpf::wire::{LambdaHeader, Status};

use crate::baseline::{self, Workload};

/// The most request bytes read from stdin: far above any workload's largest body (one
/// datagram's), so a larger input is a mistake, refused before any work.
const MAX_INPUT: u64 = 1 << 20;

#[derive(Args)]
pub(crate) struct HandleArgs {
    /// The workload whose request is on stdin.
    #[arg(value_enum)]
    workload: Workload,
    /// memcached workload: the memcached server's UDP address (started with `-U PORT`).
    #[arg(long, default_value = "127.0.0.1:11211", value_name = "ADDR:PORT")]
    memcached: SocketAddr,
    /// grayscale workload: which fragment of the image the body is, as INDEX/COUNT (the first
    /// carries the image's width and height).
    #[arg(long, default_value = "0/1", value_name = "INDEX/COUNT", value_parser = parse_fragment)]
    fragment: Fragment,
}

#[derive(Clone, Copy)]
struct Fragment {
    index: u16,
    count: u16,
}

fn parse_fragment(text: &str) -> Result<Fragment, String> {
    let (index, count) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not INDEX/COUNT (e.g. 0/1)"))?;
    let index: u16 = index
        .parse()
        .map_err(|e| format!("bad fragment index `{index}`: {e}"))?;
    let count: u16 = count
        .parse()
        .map_err(|e| format!("bad fragment count `{count}`: {e}"))?;
    if count == 0 || index >= count {
        return Err(format!(
            "fragment {index} of {count}: the index must be below a non-zero count"
        ));
    }
    Ok(Fragment { index, count })
}

pub(crate) fn run(args: HandleArgs) -> Result<ExitCode> {
    let mut body = Vec::new();
    io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut body)
        .context("reading the request body from stdin")?;
    if body.len() as u64 > MAX_INPUT {
        bail!("request body too large: more than {MAX_INPUT} bytes on stdin");
    }
    let out = respond(&args, &body)?;
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out).context("writing the response")?;
    stdout.flush().context("writing the response")?;
    Ok(ExitCode::SUCCESS)
}

/// The response body for `body`, or why there is none.
fn respond(args: &HandleArgs, body: &[u8]) -> Result<Vec<u8>> {
    let workload = args.workload.name();
    let mut handler = baseline::handler(args.workload, args.memcached)?;
    let mut header = LambdaHeader::request(1, 1);
    header.set_fragment(args.fragment.index, args.fragment.count);
    let mut out = Vec::with_capacity(lambda_ebpf::MAX_BODY);
    let status = handler.handle(&header, body, &mut out);
    if status == Status::Ok {
        return Ok(out);
    }
    let why = match (args.workload, status) {
        (Workload::StaticServer, Status::NotFound) => format!(
            "no object named {:?}",
            String::from_utf8_lossy(body).trim_end()
        ),
        (Workload::StaticServer, Status::BadRequest) => format!(
            "an object name has 1 to {} bytes, this one {}",
            workloads::static_content::NAME_MAX,
            body.len()
        ),
        (Workload::Memcached, Status::NotFound) => "no such key".to_owned(),
        (Workload::Memcached, Status::BadRequest) => {
            "expected `get KEY` or `set KEY VALUE`".to_owned()
        }
        (Workload::Memcached, Status::Unavailable) => {
            format!("memcached at {} did not answer", args.memcached)
        }
        (Workload::Grayscale, Status::BadRequest) => format!(
            "not fragment {} of {} of an image (a 4-byte width/height header on fragment 0, \
             then whole RGB pixels)",
            args.fragment.index, args.fragment.count
        ),
        (_, Status::TooLarge) => "the request or its answer exceeds one datagram".to_owned(),
        _ => "the workload refused the request".to_owned(),
    };
    bail!("{workload}: {} ({why})", status.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(workload: Workload) -> HandleArgs {
        HandleArgs {
            workload,
            memcached: "127.0.0.1:9".parse().unwrap(),
            fragment: Fragment { index: 0, count: 1 },
        }
    }

    #[test]
    fn static_server_answers_the_index_and_refuses_the_rest() {
        let a = args(Workload::StaticServer);
        assert_eq!(
            respond(&a, b"index.html").unwrap(),
            workloads::static_content::INDEX_HTML
        );
        let err = respond(&a, b"nope.html").unwrap_err().to_string();
        assert!(
            err.contains("NOT_FOUND") && err.contains("nope.html"),
            "{err}"
        );
        let err = respond(&a, b"").unwrap_err().to_string();
        assert!(err.contains("BAD_REQUEST"), "{err}");
    }

    #[test]
    fn grayscale_converts_one_fragment() {
        let dims = workloads::grayscale::Dimensions::new(2, 1).unwrap();
        let rgb = [200, 100, 50, 1, 2, 3];
        let mut body = [0u8; lambda_ebpf::MAX_BODY];
        let len = workloads::grayscale::request_body(dims, &rgb, 0, &mut body).unwrap();
        let out = respond(&args(Workload::Grayscale), &body[..len]).unwrap();
        use workloads::grayscale::gray;
        assert_eq!(out, [0, 2, 0, 1, gray(200, 100, 50), gray(1, 2, 3)]);
        let err = respond(&args(Workload::Grayscale), &[1, 2, 3])
            .unwrap_err()
            .to_string();
        assert!(err.contains("BAD_REQUEST"), "{err}");
    }

    #[test]
    fn fragment_argument_is_checked() {
        let f = parse_fragment("2/5").unwrap();
        assert_eq!((f.index, f.count), (2, 5));
        for bad in ["", "1", "5/5", "0/0", "a/2", "1/-3", "1/70000"] {
            assert!(parse_fragment(bad).is_err(), "{bad} accepted");
        }
    }
}
