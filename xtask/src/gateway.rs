//! A `lambdactl gateway` child for the demo and the gateway bench: started, asked where it
//! listens, and stopped (SIGTERM, so it removes its functions and namespaces) on drop.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub struct GatewayChild {
    child: Child,
    pub addr: SocketAddr,
    /// What the gateway printed after its first line (default backend, functions).
    pub banner: Vec<String>,
}

impl GatewayChild {
    /// Runs `lambdactl gateway --listen 127.0.0.1:0 <args>` and waits until it serves.
    pub fn start(lambdactl: &Path, args: &[&str]) -> Result<GatewayChild> {
        let mut child = Command::new(lambdactl)
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting lambdactl gateway")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let mut banner = Vec::new();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("gateway listening on http://") {
                addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
            let done = line.starts_with("Ctrl-C stops");
            banner.push(line);
            if done {
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("lambdactl gateway did not start: {banner:?}");
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Ok(GatewayChild {
            child,
            addr,
            banner,
        })
    }
}

impl Drop for GatewayChild {
    fn drop(&mut self) {
        // SAFETY: signalling our own, unreaped child by its PID.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request (`Connection: close`); returns the status and body. The demo's
/// fallback when curl is not installed.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).context("connecting to the gateway")?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(auth) = auth {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok((status, body.to_owned()))
}
