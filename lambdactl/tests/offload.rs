//! NIC offload without a NIC: `attach --mode hw` on a veth fails naming the missing capability
//! and leaves nothing loaded, pinned or recorded; `--mode auto` falls back to drv and says why;
//! `probe` and `plan` answer from the command line. The kernel tests build their veth in
//! namespaces of their own (see `common::NetnsPair`).

mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use common::{
    NetnsPair, kernel_tests_enabled, lambda_object, lambdactl, lambdactl_ok, prepared_pair, run_ok,
    send_requests,
};

/// Ids of the loaded programs named `name` (`bpftool prog show -j`).
fn programs_named(name: &str) -> Vec<u64> {
    let json = run_ok("bpftool", &["prog", "show", "-j"]);
    let progs: serde_json::Value = serde_json::from_str(&json).expect("bpftool JSON");
    progs
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Ids of loaded programs bound to a device (offloaded or device-bound): bpftool shows `dev`.
fn device_bound_programs() -> Vec<u64> {
    let json = run_ok("bpftool", &["prog", "show", "-j"]);
    let progs: serde_json::Value = serde_json::from_str(&json).expect("bpftool JSON");
    progs
        .as_array()
        .expect("array")
        .iter()
        .filter(|p| p.get("dev").is_some())
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// The pin directory and the state record `lambdactl` would use for `iface` in `ns`.
fn attachment_paths(ns: &str, iface: &str) -> (PathBuf, PathBuf) {
    let inode = std::fs::metadata(format!("/run/netns/{ns}"))
        .expect("netns file")
        .ino();
    (
        Path::new("/sys/fs/bpf/lnic")
            .join(inode.to_string())
            .join(iface),
        Path::new("/run/lnic")
            .join(inode.to_string())
            .join(format!("{iface}.json")),
    )
}

fn assert_nothing_left(pair: &NetnsPair, before_offload: &[u64]) {
    let (pins, record) = attachment_paths(&pair.server_ns, &pair.server_if);
    assert!(!pins.exists(), "{} left behind", pins.display());
    assert!(!record.exists(), "{} left behind", record.display());
    assert!(!pair.server_xdp_attached(), "an XDP program is attached");
    let new: Vec<u64> = programs_named("lnic_offload")
        .into_iter()
        .filter(|id| !before_offload.contains(id))
        .collect();
    assert!(new.is_empty(), "offload programs left loaded: {new:?}");
    assert!(
        device_bound_programs().is_empty(),
        "device-bound programs loaded"
    );
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NO_OFFLOAD: &str = "driver veth has no BPF offload (its ndo_bpf does not support \
                          BPF_OFFLOAD_VERIFIER_PREP / XDP_SETUP_PROG_HW)";

#[test]
fn hw_attach_on_veth_names_the_missing_capability_and_leaves_nothing_behind() {
    if !kernel_tests_enabled("hw_attach_on_veth_names_the_missing_capability") {
        return;
    }
    let pair = NetnsPair::create();
    let before = programs_named("lnic_offload");
    let ns = pair.server_ns.as_str();
    let iface = pair.server_if.as_str();

    // A program the nfp profile accepts gets as far as the probe, which names the capability.
    let pong = lambda_object("baseline-raw-pong");
    let out = lambdactl(&[
        "-n",
        ns,
        "attach",
        pong.to_str().unwrap(),
        "--iface",
        iface,
        "--mode",
        "hw",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(
        !out.status.success(),
        "hw attach on veth succeeded: {stdout}"
    );
    assert!(
        stderr.contains(&format!("{iface} cannot offload: {NO_OFFLOAD}")),
        "{stderr}"
    );
    assert!(stderr.contains("prog_ifindex"), "{stderr}");
    // Lowered first (nothing to lower in it), then accepted for the NIC.
    assert!(
        stdout.contains("lowered baseline-raw-pong for agilio-cx: 288 -> 288 slots"),
        "{stdout}"
    );
    assert!(stdout.contains("accepted for agilio-cx"), "{stdout}");
    assert_nothing_left(&pair, &before);

    // A program the nfp profile refuses is refused before anything is loaded, with the reason.
    let server = lambda_object("static-server");
    let out = lambdactl(&[
        "-n",
        ns,
        "attach",
        server.to_str().unwrap(),
        "--iface",
        iface,
        "--mode",
        "hw",
        "--nic",
        "nfp-4000",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "`static-server` is refused for nfp-4000 before anything is loaded: the NFP lowering pass cannot make it fit: "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("map OBJECTS has 1496-byte elements"),
        "{stderr}"
    );
    assert!(
        stderr.contains("helper bpf_xdp_load_bytes at instructions "),
        "{stderr}"
    );
    // What the lowering did before it gave up: the SDK's log lines went.
    assert!(stderr.contains("(lowered as far as it goes: "), "{stderr}");
    assert!(!stderr.contains("0 log calls removed"), "{stderr}");
    assert!(!stdout.contains("accepted for"), "{stdout}");
    assert_nothing_left(&pair, &before);
}

/// The SDK's NIC build gets through the lowering and the nfp check (the output says what the
/// lowering did) and fails only at the probe, naming the capability; the normal build is
/// refused by the lowering, naming the helpers the NFP lacks. Nothing is loaded or pinned.
#[test]
fn hw_attach_lowers_the_nic_build_and_refuses_the_normal_one_by_helper() {
    if !kernel_tests_enabled("hw_attach_lowers_the_nic_build_and_refuses_the_normal_one_by_helper")
    {
        return;
    }
    let pair = NetnsPair::create();
    let before = programs_named("lnic_offload");
    let (ns, iface) = (pair.server_ns.as_str(), pair.server_if.as_str());
    let hw = |object: &Path| {
        lambdactl(&[
            "-n",
            ns,
            "attach",
            object.to_str().unwrap(),
            "--iface",
            iface,
            "--mode",
            "hw",
            "--nic",
            "nfp-4000",
            "--lambda-id",
            "1",
        ])
    };

    let out = hw(&lambda_object("whoami-nic"));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    // The lowering ran, on the whole program: .rodata folded, the per-CPU counters made
    // atomic on a plain array, the slots fewer.
    let line = stdout
        .lines()
        .find(|l| l.starts_with("lowered whoami-nic for nfp-4000: "))
        .unwrap_or_else(|| panic!("no lowering report: {stdout}"));
    let slots: Vec<u64> = line
        .trim_start_matches("lowered whoami-nic for nfp-4000: ")
        .split(" slots")
        .next()
        .unwrap()
        .split(" -> ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(slots[1] < slots[0], "{line}");
    assert!(!line.contains(" 0 .rodata loads folded"), "{line}");
    assert!(!line.contains(" 0 counters made atomic"), "{line}");
    assert!(
        stdout.contains("  LNIC_STATS: percpu_array -> array"),
        "{stdout}"
    );
    // Then the nfp check passed, and the probe said no.
    assert!(
        stdout.contains("accepted for nfp-4000 (our verifier's nfp profile and the model's rules, on the lowered program)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("{iface} cannot offload: {NO_OFFLOAD}")),
        "{stderr}"
    );
    assert_nothing_left(&pair, &before);

    let out = hw(&lambda_object("whoami"));
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("`whoami` is refused for nfp-4000 before anything is loaded"),
        "{stderr}"
    );
    for helper in ["bpf_xdp_load_bytes", "bpf_xdp_store_bytes", "bpf_csum_diff"] {
        assert!(
            stderr.contains(&format!("helper {helper} at instruction")),
            "{helper}: {stderr}"
        );
    }
    assert!(!stderr.contains("cannot offload"), "probed: {stderr}");
    assert_nothing_left(&pair, &before);
}

/// Past the probe, as after one that said yes: the loader's device-bound load of the LOWERED
/// program (its maps as the lowering left them) fails in the kernel at its first step and
/// removes what it made.
#[test]
fn lowered_offloaded_load_on_veth_fails_in_the_kernel_and_is_undone() {
    if !kernel_tests_enabled("lowered_offloaded_load_on_veth_fails_in_the_kernel_and_is_undone") {
        return;
    }
    let pair = NetnsPair::create();
    let before = programs_named("lnic_offload");
    let object = lambda_object("whoami-nic");
    let bytes = std::fs::read(&object).unwrap();
    let params = loader::LambdaParams {
        port: 9000,
        lambda_id: Some(1),
    };
    let rule = nic_offload::MatchRule {
        port: params.port,
        lambda_id: params.lambda_id,
    };
    let input = nic_offload::CoalesceInput::from_object(&bytes, "whoami-nic", rule).unwrap();
    let model = nic_offload::model("nfp-4000").unwrap();
    let ready =
        nic_offload::lower_and_check(&input, model, &loader::verify::Limits::default()).unwrap();
    // The lowered maps: no .rodata, the counters a plain array.
    let maps: Vec<(&str, u32)> = ready
        .input
        .linked
        .maps
        .iter()
        .map(|m| (m.name.as_str(), m.map_type))
        .collect();
    assert!(
        maps.iter().all(|(name, _)| !name.starts_with(".rodata")),
        "{maps:?}"
    );
    assert!(
        maps.contains(&("LNIC_STATS", verifier::map_type::ARRAY)),
        "{maps:?}"
    );
    let iface = pair.server_if.clone();
    let result = NetnsPair::within(&pair.server_ns, || {
        let host = loader::Host::from_env().unwrap();
        host.attach_offloaded_program(
            &loader::kernel::OffloadProgram {
                object: &object,
                lambda: "whoami-nic",
                linked: &ready.input.linked,
                seeds: &ready.input.seeds,
                params,
            },
            &iface,
        )
        .map(|a| a.record.mode)
    });
    match result {
        Err(loader::KernelError::OffloadFailed { step, reason, .. }) => {
            // The first map the code uses, created with map_ifindex on a device without
            // offload.
            assert!(
                step.starts_with("creating map ") && step.ends_with(" on the device"),
                "{step}: {reason}"
            );
        }
        other => panic!("expected an offload failure, got {other:?}"),
    }
    assert_nothing_left(&pair, &before);
}

#[test]
fn offloaded_load_on_veth_fails_in_the_kernel_and_is_undone() {
    if !kernel_tests_enabled("offloaded_load_on_veth_fails_in_the_kernel_and_is_undone") {
        return;
    }
    // Past the probe: the loader's own device-bound load, as after a probe that said yes.
    let pair = NetnsPair::create();
    let before = programs_named("lnic_offload");
    let object = lambda_object("baseline-raw-pong");
    let iface = pair.server_if.clone();
    let result = NetnsPair::within(&pair.server_ns, || {
        let host = loader::Host::from_env().unwrap();
        host.attach_offloaded(&object, &iface, &loader::LambdaParams::default())
            .map(|a| a.record.mode)
    });
    match result {
        Err(loader::KernelError::OffloadFailed { step, reason, .. }) => {
            assert_eq!(step, "loading the program for the device");
            assert!(reason.contains("Invalid argument"), "{reason}");
        }
        other => panic!("expected an offload failure, got {other:?}"),
    }
    assert_nothing_left(&pair, &before);
}

/// `--mode auto` with the SDK's NIC build: the probe (first) says no, it falls back to drv,
/// says why, and the lambda answers real UDP requests from the client namespace.
#[test]
fn auto_falls_back_to_drv_with_the_nic_build_and_it_answers() {
    if !kernel_tests_enabled("auto_falls_back_to_drv_with_the_nic_build_and_it_answers") {
        return;
    }
    let pair = prepared_pair();
    let object = lambda_object("whoami-nic");
    let out = lambdactl(&[
        "-n",
        &pair.server_ns,
        "attach",
        object.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        "auto",
        "--nic",
        "nfp-4000",
        "--lambda-id",
        "1",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "note: hw offload not used, trying drv: {} cannot offload: {NO_OFFLOAD}",
            pair.server_if
        )),
        "{stdout}"
    );
    // Probe first: the lowering never ran.
    assert!(!stdout.contains("lowered whoami-nic"), "{stdout}");
    assert!(stdout.contains("in drv mode"), "{stdout}");
    // Lambda 1 on port 9000, each answered OK (send_requests checks the statuses).
    send_requests(&pair, 5);
    lambdactl_ok(&["-n", &pair.server_ns, "detach", "--iface", &pair.server_if]);
    assert!(!pair.server_xdp_attached());
}

#[test]
fn auto_falls_back_to_drv_and_says_why() {
    if !kernel_tests_enabled("auto_falls_back_to_drv_and_says_why") {
        return;
    }
    let pair = NetnsPair::create();
    let pong = lambda_object("baseline-raw-pong");
    let out = lambdactl(&[
        "-n",
        &pair.server_ns,
        "attach",
        pong.to_str().unwrap(),
        "--iface",
        &pair.server_if,
        "--mode",
        "auto",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "note: hw offload not used, trying drv: {} cannot offload: {NO_OFFLOAD}",
            pair.server_if
        )),
        "{stdout}"
    );
    assert!(stdout.contains("in drv mode"), "{stdout}");
    assert!(pair.server_xdp_attached());
    let (_, record) = attachment_paths(&pair.server_ns, &pair.server_if);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(json["mode"], "drv");
    lambdactl(&["-n", &pair.server_ns, "detach", "--iface", &pair.server_if]);
    assert!(!pair.server_xdp_attached());
}

#[test]
fn probe_answers_no_on_veth_with_the_driver() {
    if !kernel_tests_enabled("probe_answers_no_on_veth_with_the_driver") {
        return;
    }
    let pair = NetnsPair::create();
    let out = lambdactl(&[
        "-n",
        &pair.server_ns,
        "probe",
        "--iface",
        &pair.server_if,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["interface"]["driver"], "veth");
    assert_eq!(json["interface"]["tc_offload"], false);
    assert_eq!(json["probe"]["offload"], "unsupported");
    assert_eq!(json["probe"]["capability"], NO_OFFLOAD);
}

/// `deploy --mode hw` is refused (the dispatcher tail-calls, offload NICs do not) with the
/// three commands that do work named, before anything touches the interface (which here does
/// not even exist).
#[test]
fn deploy_mode_hw_is_refused_naming_what_works() {
    // `deploy` reads the deployment records first, which takes root.
    if !kernel_tests_enabled("deploy_mode_hw_is_refused_naming_what_works") {
        return;
    }
    let pong = lambda_object("pong");
    let out = lambdactl(&[
        "deploy",
        pong.to_str().unwrap(),
        "--iface",
        "lnic-none0",
        "--name",
        "hw-refused",
        "--match",
        "port=9000",
        "--mode",
        "hw",
    ]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    for named in [
        "offload NICs run no tail calls",
        "attach OBJECT --iface IF --mode hw",
        "deploy --mode coalesced --lower",
        "coalesce --lower --nic MODEL",
    ] {
        assert!(stderr.contains(named), "{named} not in: {stderr}");
    }
}

#[test]
fn plan_fits_a_nic_ready_lambda_and_explains_the_rest() {
    // No root needed: the planner only verifies objects.
    let pong = lambda_object("baseline-raw-pong");
    let server = lambda_object("static-server");
    let out = lambdactl(&[
        "plan",
        "--nic",
        "nfp-4000",
        pong.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["fits"], true);
    assert_eq!(plan["cores_needed"], 1);
    let lambda = &plan["lambdas"][0];
    assert_eq!(lambda["core"], 0);
    // 288 executed instructions + the dispatch (42 fixed + 5 for its rule), 2 cycles each,
    // no map calls, at 800 MHz.
    assert_eq!(lambda["max_insns_executed"], 288);
    assert_eq!(lambda["worst_case_cycles"], (288 + 47) * 2);
    assert_eq!(lambda["worst_case_ns"], (288 + 47) * 2 * 1000 / 800);
    assert_eq!(plan["core_insns"], serde_json::json!([42 + 5 + 288]));

    let out = lambdactl(&[
        "plan",
        "--nic",
        "agilio-cx",
        pong.to_str().unwrap(),
        server.to_str().unwrap(),
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("fits: no"), "{stdout}");
    assert!(
        stdout.contains("static-server: map OBJECTS has 1496-byte elements"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cores needed for one copy: 1 of 48"),
        "{stdout}"
    );

    // Not an object: one clear error, not a panic.
    let text_file = std::env::temp_dir().join(format!("lnic-plan-{}.o", std::process::id()));
    std::fs::write(&text_file, "not an object\n").unwrap();
    let out = lambdactl(&["plan", "--nic", "nfp-4000", text_file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&text_file);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.matches("not an ELF file").count(), 1, "{stderr}");

    let out = lambdactl(&["plan", "--nic", "connectx", pong.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown NIC model `connectx` (known: nfp-4000, agilio-cx)"),
        "{stderr}"
    );
}

#[test]
fn coalesce_reports_sizes_verdicts_and_cores() {
    let server = lambda_object("static-server");
    let counter = lambda_object("counter");
    let pong = lambda_object("baseline-raw-pong");
    let spec = |p: &Path, rule: &str| format!("{}{rule}", p.display());
    let mut args = vec![
        "coalesce".to_owned(),
        spec(&server, "@9000"),
        spec(&counter, "@9001/8"),
        "--json".to_owned(),
    ];
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        args.push("--kernel".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lambdactl(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let report = &json["report"];
    assert_eq!(report["lambdas"], 2);
    let before = report["insns_before"].as_u64().unwrap();
    let after = report["insns_after"].as_u64().unwrap();
    let dispatch = report["dispatch_insns"].as_u64().unwrap();
    // Shared SDK functions are merged: less than the sum plus the dispatch.
    assert!(
        report["functions_merged"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(after < before + dispatch, "{report}");
    assert_eq!(json["eligible"], serde_json::json!(["kernel"]));
    assert!(
        json["refused"][0]
            .as_str()
            .unwrap()
            .ends_with("instructions exceed the NFP budget of 2800"),
        "{json}"
    );
    // About 1,700 slots each: one per 2,800-instruction core.
    assert_eq!(json["cores_needed"], 2);
    let mut cores: Vec<u64> = json["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    cores.sort_unstable();
    assert_eq!(cores, [0, 1], "one lambda per core: {json}");
    // Each core's own program, as written (not lowered): within the budget, and the nfp
    // profile names what the NIC lacks.
    let programs = json["core_programs"].as_array().unwrap();
    assert_eq!(programs.len(), 2, "{json}");
    for program in programs {
        assert_eq!(program["lambdas"].as_array().unwrap().len(), 1, "{program}");
        assert!(program["insns"].as_u64().unwrap() <= 2800, "{program}");
        assert_eq!(program["nfp_passes"], false, "{program}");
        assert!(
            program["nfp_refused"]
                .as_str()
                .unwrap()
                .contains("the NFP offloads only array and hash maps"),
            "{program}"
        );
        if root {
            assert!(
                program["kernel_verified_insns"].as_u64().unwrap() > 0,
                "{program}"
            );
        }
    }
    if root {
        let processed = json["kernel_verified_insns"].as_u64().unwrap();
        assert!(processed > 0 && processed <= 1_000_000, "{json}");
    }

    // A NIC-ready lambda coalesces into a program the nfp profile accepts.
    let out = lambdactl(&["coalesce", &spec(&pong, "@9000"), "--nic", "nfp-4000"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("eligible: kernel, nfp"), "{stdout}");
    assert!(stdout.contains("nfp-4000: 1 core for one copy"), "{stdout}");

    let out = lambdactl(&["coalesce", &spec(&pong, "@0")]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("is not a UDP port (1-65535)"));
}

#[test]
fn coalesce_lower_leaves_out_what_it_refuses_and_names_why() {
    let server = lambda_object("static-server");
    let pong = lambda_object("baseline-raw-pong");
    let spec = |p: &Path, rule: &str| format!("{}{rule}", p.display());
    let (server, pong) = (spec(&server, "@9000"), spec(&pong, "@9001"));
    let out = lambdactl(&[
        "coalesce", "--lower", "--nic", "nfp-4000", &server, &pong, "--json",
    ]);
    let (stdout, stderr) = text(&out);
    // A refused lambda makes the exit status 1; the rest is still coalesced and judged.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let lowering = json["lowering"].as_array().unwrap();
    assert_eq!(lowering.len(), 2);
    assert_eq!(lowering[0]["lambda"], "static-server");
    assert_eq!(lowering[0]["lowered"], false);
    let reasons: Vec<&str> = lowering[0]["refusals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        reasons.contains(
            &"map OBJECTS has 1496-byte elements (key and value rounded up to 8); nfp-4000 takes at most 64"
        ),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("helper bpf_xdp_load_bytes at instructions ")),
        "{reasons:?}"
    );
    // What lowering did before it gave up: the SDK's logs and counters went.
    assert!(lowering[0]["report"]["log_calls_removed"].as_u64().unwrap() >= 2);
    assert_eq!(lowering[1]["lowered"], true);
    assert_eq!(json["report"]["lambdas"], 1);
    assert_eq!(json["eligible"], serde_json::json!(["kernel", "nfp"]));
    assert_eq!(json["cores_needed"], 1);

    // The object's own size, as the JSON report gave it (it changes with the SDK).
    let server_slots = lowering[0]["report"]["insns_before"].as_u64().unwrap();
    let out = lambdactl(&["coalesce", "--lower", "--nic", "nfp-4000", &server, &pong]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "refused static-server (left out; lowered as far as it goes: {server_slots} -> "
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("lowered baseline-raw-pong: 288 -> 288 slots"),
        "{stdout}"
    );
    assert!(stdout.contains("eligible: kernel, nfp"), "{stdout}");

    // The planner, with the same pass: the refused lambda takes no core, with the pass's
    // reasons; the lowered one is planned as lowered.
    let server_object = server.trim_end_matches("@9000");
    let pong_object = pong.trim_end_matches("@9001");
    let out = lambdactl(&[
        "plan",
        "--nic",
        "nfp-4000",
        "--lower",
        server_object,
        pong_object,
    ]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("each lambda lowered for it first"),
        "{stdout}"
    );
    assert!(
        stdout.contains("static-server: lowering: map OBJECTS has 1496-byte elements"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("baseline-raw-pong") && l.ends_with("core 0")),
        "{stdout}"
    );

    // Nothing left: said so, status 1.
    let out = lambdactl(&["coalesce", "--lower", "--nic", "nfp-4000", &server]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("nothing left to coalesce: nfp-4000 refused every lambda"),
        "{stdout}"
    );
}
