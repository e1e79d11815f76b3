//! Real containers for the benchmarks' container columns: Debian's `podman` with `runc`, no
//! image registry.
//!
//! [`Podman::prepare`] makes a directory of its own holding everything podman touches, so
//! nothing global is configured and dropping it leaves nothing behind:
//!
//! - `containers.conf` (passed through `CONTAINERS_CONF`): `runtime = "runc"` (crun fails on
//!   this host's hybrid cgroups), `cgroup_manager = "cgroupfs"` (no systemd), file event
//!   log, k8s-file container logs, and `default_ulimits` nofile/nproc 1024 (root here may not
//!   raise rlimits, and runc refuses to start a container whose limits it cannot set);
//! - `storage.conf` (through `CONTAINERS_STORAGE_CONF`): the `vfs` driver with graphroot,
//!   runroot and podman's tmp dir inside the directory;
//! - `rootfs/`: the `lambdactl` binary at [`LAMBDACTL`] plus the shared libraries `ldd` lists,
//!   at their own paths. Containers run it with `--rootfs`.
//!
//! Every container joins a network namespace the caller made (`--network ns:/run/netns/NS`),
//! gets a tmpfs on /sys/fs/cgroup (the host's hybrid hierarchy cannot be mounted inside), and
//! its cgroups go under a parent named after this process (`/lnic-ctr-<pid>`), removed on drop.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where the `lambdactl` binary is inside every container.
pub const LAMBDACTL: &str = "/lambdactl";

/// How long [`Podman::run`] waits for the container's command to print its `serving` line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A private podman setup; see the module docs. Dropping it removes any container still
/// running in it, its cgroup parent and its directory.
pub struct Podman {
    dir: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
}

/// How to run one container, beyond its command.
#[derive(Default, Clone, Debug)]
pub struct RunOptions {
    /// `--cpuset-cpus`: the CPUs the container may use (e.g. `"0"`). Without it the container
    /// inherits the affinity of the process that started podman.
    pub cpuset_cpus: Option<String>,
}

impl Podman {
    /// Checks that podman and runc are installed, then (re)creates `dir` with the
    /// configuration and the rootfs holding `lambdactl`.
    pub fn prepare(dir: &Path, lambdactl: &Path) -> Result<Podman> {
        for (tool, args) in [("podman", ["--version"]), ("runc", ["--version"])] {
            let ok = Command::new(tool)
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                bail!(
                    "{tool} is not installed or does not run (apt-get install podman runc; \
                     crun does not work on this host's hybrid cgroups)"
                );
            }
        }
        if dir.exists() {
            // A run that died before its drop may have left containers in this storage.
            if dir.join("containers.conf").exists() {
                let _ = podman_command(dir)
                    .args(["rm", "--all", "--force", "--time", "0"])
                    .output();
            }
            fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
        let dir = fs::canonicalize(dir)?;
        let rootfs = dir.join("rootfs");
        let podman = Podman {
            cgroup_parent: format!("/lnic-ctr-{}", std::process::id()),
            dir,
            rootfs,
        };
        podman.write_config()?;
        fill_rootfs(&podman.rootfs, lambdactl)?;
        Ok(podman)
    }

    fn write_config(&self) -> Result<()> {
        let d = &self.dir;
        let containers = format!(
            "# Written by cargo xtask (container.rs): podman for the benchmarks' containers.\n\
             [containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             log_driver = \"k8s-file\"\n\
             \n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{}\"\n\
             tmp_dir = \"{}\"\n\
             # File locks under tmp_dir instead of the host-wide /dev/shm/libpod_lock.\n\
             lock_type = \"file\"\n",
            d.join("events.log").display(),
            d.join("tmp").display(),
        );
        let storage = format!(
            "# Written by cargo xtask (container.rs).\n\
             [storage]\n\
             driver = \"vfs\"\n\
             graphroot = \"{}\"\n\
             runroot = \"{}\"\n",
            d.join("graph").display(),
            d.join("run").display(),
        );
        fs::write(d.join("containers.conf"), containers)?;
        fs::write(d.join("storage.conf"), storage)?;
        Ok(())
    }

    fn podman_ok(&self, args: &[&str]) -> Result<String> {
        podman_ok(&self.dir, args)
    }

    /// The rootfs directory the containers run from.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// [`Podman::run_with`] with default options.
    pub fn run(&self, name: &str, netns: &str, args: &[&str]) -> Result<Container> {
        self.run_with(name, netns, &RunOptions::default(), args)
    }

    /// Starts container `name` running `lambdactl args…` in the network namespace
    /// `/run/netns/<netns>`, and waits until the command prints a line starting with
    /// `serving` (every lambdactl server does: `baseline`, `watchdog`, `run`). The container
    /// is removed (`podman rm -f`) when the returned value is dropped, also on failure here.
    pub fn run_with(
        &self,
        name: &str,
        netns: &str,
        options: &RunOptions,
        args: &[&str],
    ) -> Result<Container> {
        if netns.is_empty() || netns.contains('/') {
            bail!("invalid network namespace name `{netns}`");
        }
        let network = format!("ns:/run/netns/{netns}");
        let mut full = vec![
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            &network,
            "--cgroup-parent",
            &self.cgroup_parent,
            "--mount",
            "type=tmpfs,destination=/sys/fs/cgroup",
        ];
        if let Some(cpus) = &options.cpuset_cpus {
            full.extend(["--cpuset-cpus", cpus]);
        }
        let rootfs = self.rootfs.to_str().context("non-UTF-8 rootfs path")?;
        full.extend(["--rootfs", rootfs, LAMBDACTL]);
        full.extend_from_slice(args);
        // From here on the container may exist: the value removes it on every way out.
        let mut container = Container {
            dir: self.dir.clone(),
            name: name.to_owned(),
            pid: 0,
            conmon_pid: 0,
        };
        self.podman_ok(&full)
            .with_context(|| format!("starting container {name}"))?;
        let info = self.podman_ok(&[
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.ConmonPid}} {{.HostConfig.LogConfig.Path}}",
            name,
        ])?;
        let mut fields = info.split_whitespace();
        let (Some(pid), Some(conmon), Some(log)) = (fields.next(), fields.next(), fields.next())
        else {
            bail!("unexpected podman inspect output for {name}: {info:?}");
        };
        container.pid = pid.parse().context("container PID")?;
        container.conmon_pid = conmon.parse().context("conmon PID")?;
        container.wait_serving(Path::new(log))?;
        Ok(container)
    }

    /// Removes the cgroup directories podman made under our parent (empty once our containers
    /// are gone: conmon's, then the parent, in every hierarchy).
    fn remove_cgroups(&self) {
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for h in hierarchies.flatten() {
            let parent = h.path().join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(children) = fs::read_dir(&parent) {
                for child in children.flatten() {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(child.path());
                    }
                }
                let _ = fs::remove_dir(&parent);
            }
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Every container in this private storage is ours: any still running goes first.
        let _ = podman_command(&self.dir)
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        self.remove_cgroups();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Copies `lambdactl` to [`LAMBDACTL`] in `rootfs`, with the shared libraries and the dynamic
/// loader `ldd` lists at their own paths (nothing more for a static build).
fn fill_rootfs(rootfs: &Path, lambdactl: &Path) -> Result<()> {
    let target = rootfs.join(LAMBDACTL.trim_start_matches('/'));
    fs::copy(lambdactl, &target)
        .with_context(|| format!("copying {} into the rootfs", lambdactl.display()))?;
    let out = Command::new("ldd")
        .arg(lambdactl)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(());
        }
        bail!("ldd {} failed: {}", lambdactl.display(), err.trim());
    }
    for lib in libraries(&text) {
        let inside = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(dir) = inside.parent() {
            fs::create_dir_all(dir)?;
        }
        // fs::copy follows symlinks: the file itself lands under the name the loader asks for.
        fs::copy(&lib, &inside).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has none.
fn libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `podman` with the configuration in `dir`.
fn podman_command(dir: &Path) -> Command {
    let mut command = Command::new("podman");
    command
        .env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"));
    command
}

/// Runs `podman args…` with the configuration in `dir` and returns its stdout; fails with its
/// stderr.
fn podman_ok(dir: &Path, args: &[&str]) -> Result<String> {
    let out = podman_command(dir)
        .args(args)
        .output()
        .context("running podman")?;
    if !out.status.success() {
        bail!(
            "podman {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running container, removed (`podman rm -f -t 0`) on drop (or with its [`Podman`]).
pub struct Container {
    /// The [`Podman`] setup's directory.
    dir: PathBuf,
    name: String,
    /// The container's first process, as the host sees it.
    pid: u32,
    /// Its `conmon` monitor.
    conmon_pid: u32,
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's first process (the `lambdactl` command), as the host numbers it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every host process this container consists of: its `conmon` monitor and all of
    /// conmon's descendants (the command, and whatever it forked at this moment), for RSS and
    /// CPU accounting.
    pub fn pids(&self) -> Result<Vec<u32>> {
        let parents = process_parents()?;
        let mut pids = vec![self.conmon_pid];
        let mut i = 0;
        while i < pids.len() {
            let parent = pids[i];
            pids.extend(
                parents
                    .iter()
                    .filter(|&&(_, ppid)| ppid == parent)
                    .map(|&(pid, _)| pid),
            );
            i += 1;
        }
        if !pids.contains(&self.pid) {
            bail!(
                "container {}: its process {} is not running under conmon {}",
                self.name,
                self.pid,
                self.conmon_pid
            );
        }
        Ok(pids)
    }

    /// What the container's command printed so far (stdout and stderr).
    pub fn logs(&self) -> Result<String> {
        podman_ok(&self.dir, &["logs", &self.name])
    }

    fn wait_serving(&self, log: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let mut text = String::new();
            if let Ok(mut f) = fs::File::open(log) {
                let _ = f.read_to_string(&mut text);
            }
            // k8s-file lines: `<time> stdout F <text>`.
            let serving = text.lines().any(|line| {
                line.splitn(4, ' ')
                    .nth(3)
                    .is_some_and(|t| t.starts_with("serving"))
            });
            if serving {
                return Ok(());
            }
            if !Path::new(&format!("/proc/{}", self.pid)).exists() {
                bail!(
                    "container {} exited before serving; its output:\n{}",
                    self.name,
                    text.trim_end()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "container {} did not start serving within {} s; its output:\n{}",
                    self.name,
                    START_TIMEOUT.as_secs(),
                    text.trim_end()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // -t 0: SIGKILL at once; the command is PID 1 in its namespace and has no SIGTERM
        // handler, so a stop signal would only wait out the 10 s grace period.
        let _ = podman_command(&self.dir)
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

/// (pid, parent pid) of every process, from /proc/<pid>/stat.
fn process_parents() -> Result<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // Gone since the listing: not part of anything any more.
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = parent_of(&stat) {
            out.push((pid, ppid));
        }
    }
    Ok(out)
}

/// The parent PID in a /proc/<pid>/stat line: the field after the state, which follows the
/// command name in parentheses (that may itself hold spaces and parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_come_from_ldd_output() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007fe4)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fe3)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007fe5)\n";
        assert_eq!(
            libraries(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn parent_pid_survives_odd_command_names() {
        assert_eq!(parent_of("42 (a) b) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }
}

/// Real podman, real network namespaces, real clients: needs root.
#[cfg(test)]
mod podman_tests {
    use super::*;
    use crate::bench_workloads::Memcached;
    use crate::netns::{CLIENT_ADDR, SERVER_ADDR, VethPair, sh};
    use std::io::Write as _;

    /// True when the test can run here. Without root it skips with a printed reason, except
    /// under `CI=true`, where skipping would hide a broken CI setup, so it fails instead.
    fn root_tests_enabled(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: CI=true but not running as root; container tests must run in CI");
        }
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: needs root (podman with runc, network namespaces)"
        );
        false
    }

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace")
            .to_path_buf()
    }

    /// The debug `lambdactl`, built now if `cargo test` did not already.
    fn lambdactl() -> PathBuf {
        let root = workspace_root();
        let status = Command::new(crate::cargo())
            .current_dir(&root)
            .args(["build", "--quiet", "--package", "lambdactl"])
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building lambdactl failed ({status})");
        root.join("target/debug/lambdactl")
    }

    /// `curl` in the client namespace: (HTTP status, body).
    fn http_post(pair: &VethPair, url: &str, body: &str) -> (u16, String) {
        let out = sh(
            Path::new("ip"),
            &[
                "netns",
                "exec",
                &pair.client,
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "20",
                "--data-binary",
                body,
                "--write-out",
                "\n%{http_code}",
                url,
            ],
        )
        .expect("curl");
        let (body, code) = out.rsplit_once('\n').expect("curl wrote the status");
        (code.trim().parse().expect("HTTP status"), body.to_owned())
    }

    #[test]
    fn baseline_and_watchdog_serve_from_containers() {
        if !root_tests_enabled("baseline_and_watchdog_serve_from_containers") {
            return;
        }
        let lambdactl = lambdactl();
        let pid = std::process::id();
        let dir = workspace_root().join(format!("target/tmp/container-test-{pid}"));
        let podman = Podman::prepare(&dir, &lambdactl).expect("preparing podman");
        let cgroup = format!("/sys/fs/cgroup/pids{}", podman.cgroup_parent);
        let pair = VethPair::create(&lambdactl, "ctr", "t").expect("netns pair");
        let (server_ns, client_ns) = (pair.server.clone(), pair.client.clone());
        let index = String::from_utf8(workloads::static_content::INDEX_HTML.to_vec()).unwrap();

        // The native baseline in a container, asked over UDP by `lambdactl invoke`.
        let baseline = podman
            .run(
                &format!("lnic-test-baseline-{pid}"),
                &pair.server,
                &["baseline", "static-server", "--listen", "0.0.0.0:9000"],
            )
            .expect("starting the baseline container");
        let target = format!("{SERVER_ADDR}:9000");
        let answer = pair
            .lambdactl_in(
                &pair.client,
                &["invoke", &target, "--lambda", "1", "--body", "index.html"],
            )
            .expect("invoking the containerized baseline");
        assert!(answer.contains(&index), "baseline answered:\n{answer}");
        let pids = baseline.pids().expect("the baseline's processes");
        assert!(
            pids.contains(&baseline.pid()) && pids.len() >= 2,
            "{pids:?}"
        );

        // The watchdog forking `lambdactl handle` per request, asked over HTTP by curl.
        let watchdog = podman
            .run(
                &format!("lnic-test-watchdog-{pid}"),
                &pair.server,
                &[
                    "watchdog",
                    "--listen",
                    "0.0.0.0:8080",
                    "--",
                    LAMBDACTL,
                    "handle",
                    "static-server",
                ],
            )
            .expect("starting the watchdog container");
        let url = format!("http://{SERVER_ADDR}:8080/");
        for _ in 0..3 {
            assert_eq!(http_post(&pair, &url, "index.html"), (200, index.clone()));
        }
        let (code, body) = http_post(&pair, &url, "missing.html");
        assert_eq!(code, 500, "{body}");
        assert!(
            body.contains("NOT_FOUND") && body.contains("missing.html"),
            "{body}"
        );
        assert!(watchdog.logs().unwrap().contains("serving watchdog"));
        assert!(watchdog.pids().unwrap().contains(&watchdog.pid()));

        // memcached (in the client namespace) through both, across the veth pair: the
        // container's handler reaches a real server over UDP.
        let memcached = Memcached::start(&pair).expect("starting memcached");
        let server = format!("{CLIENT_ADDR}:11211");
        let baseline_mc = podman
            .run(
                &format!("lnic-test-baseline-mc-{pid}"),
                &pair.server,
                &[
                    "baseline",
                    "memcached",
                    "--listen",
                    "0.0.0.0:9001",
                    "--memcached",
                    &server,
                ],
            )
            .expect("starting the memcached baseline container");
        let watchdog_mc = podman
            .run(
                &format!("lnic-test-watchdog-mc-{pid}"),
                &pair.server,
                &[
                    "watchdog",
                    "--listen",
                    "0.0.0.0:8081",
                    "--",
                    LAMBDACTL,
                    "handle",
                    "memcached",
                    "--memcached",
                    &server,
                ],
            )
            .expect("starting the memcached watchdog container");
        let url = format!("http://{SERVER_ADDR}:8081/");
        let value = format!("stored-by-{pid}");
        assert_eq!(
            http_post(&pair, &url, &format!("set ctr-key {value}")),
            (200, String::new())
        );
        let target = format!("{SERVER_ADDR}:9001");
        let answer = pair
            .lambdactl_in(
                &pair.client,
                &["invoke", &target, "--lambda", "1", "--body", "get ctr-key"],
            )
            .expect("GET through the containerized baseline");
        assert!(answer.contains(&value), "baseline answered:\n{answer}");
        let (code, body) = http_post(&pair, &url, "get absent-key");
        assert_eq!(code, 500);
        assert!(body.contains("NOT_FOUND"), "{body}");

        drop(baseline);
        drop(watchdog);
        drop(baseline_mc);
        drop(watchdog_mc);
        drop(memcached);
        let left = podman
            .podman_ok(&["ps", "--all", "--format", "{{.Names}}"])
            .unwrap();
        assert_eq!(left.trim(), "", "containers left behind");
        drop(podman);
        drop(pair);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!Path::new(&cgroup).exists(), "{cgroup} left behind");
        for ns in [server_ns, client_ns] {
            assert!(
                !Path::new("/run/netns").join(&ns).exists(),
                "netns {ns} left behind"
            );
        }
    }
}
