//! `examples/systemd/authgate.service`: `systemd-analyze verify` accepts it without a single
//! warning (with this build's binary in place of `/usr/local/bin/authgate`), its offline
//! security exposure stays "OK" (2.0 or less), and its command lines are ones the binary
//! takes. Needs `systemd-analyze` (Debian's `systemd`, which works without systemd running);
//! without it the test skips loudly (fails under `CI`).

use std::process::Command;

use crate::support::*;

const UNIT: &str = "examples/systemd/authgate.service";
const INSTALLED_AT: &str = "/usr/local/bin/authgate";
const CONFIG_AT: &str = "/etc/authgate/gateway.toml";

/// The unit with this build's binary, written as `authgate.service` in a folder of its own.
fn unit_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let text = substitute(
        UNIT,
        &example(UNIT),
        &[(INSTALLED_AT, env!("CARGO_BIN_EXE_authgate"))],
    );
    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("authgate.service");
    std::fs::write(&path, text).expect("write the unit");
    (dir, path)
}

#[test]
fn the_unit_passes_systemd_analyze_verify_and_security() {
    if !program_or_skip(
        "systemd-analyze",
        &["--version"],
        "systemd",
        "the systemd unit check",
    ) {
        return;
    }
    let (_dir, path) = unit_file();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on unknown keys and bad values (it only warns): any output is a finding.
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert_eq!(said.trim(), "", "systemd-analyze verify warns");

    // Exposure 0-10, threshold in tenths: above 2.0 exits non-zero.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure above 2.0: {}{}",
        report,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("OK"), "{report}");
}

/// The unit's ExecStart and ExecStartPre: `run` and `check` of the same `--config`, and that
/// `check` line passes on a valid config (so the flags are the binary's own).
#[tokio::test]
async fn the_units_command_lines_are_the_binarys() {
    let text = example(UNIT);
    let line = |key: &str| -> Vec<String> {
        let prefix = format!("{key}=");
        let found: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .collect();
        assert_eq!(found.len(), 1, "one {key} in {UNIT}");
        found[0].split_whitespace().map(str::to_owned).collect()
    };
    let start = line("ExecStart");
    let pre = line("ExecStartPre");
    assert_eq!(start, [INSTALLED_AT, "run", "--config", CONFIG_AT]);
    assert_eq!(pre, [INSTALLED_AT, "check", "--config", CONFIG_AT]);
    assert_eq!(line("ExecReload"), ["/bin/kill", "-HUP", "$MAINPID"]);

    let up = Upstream::echo().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, Conf::new().render(up.addr)).expect("write gateway.toml");
    let args: Vec<String> = pre[1..]
        .iter()
        .map(|a| {
            if a == CONFIG_AT {
                config.display().to_string()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(&args)
        .env("T_SECRET", SECRET)
        .output()
        .expect("run authgate check");
    assert!(
        out.status.success(),
        "authgate {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
