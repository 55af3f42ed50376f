//! `keygate demo` through the real binary: its curl commands show the status, a busy port
//! leaves no temp dir (it holds a private key) and says how to pick another, and its text logs
//! carry no colour codes when stderr is not a terminal.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

fn demo(tmp: &std::path::Path, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(["demo", "--listen", listen, "--admin-listen", "127.0.0.1:0"]).env("TMPDIR", tmp);
    cmd
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn a_busy_demo_port_leaves_no_temp_dir_and_says_how_to_pick_another() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = demo(tmp.path(), &busy.local_addr().unwrap().to_string()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("in use") && stderr.contains("--listen"), "{stderr}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new(), "the demo dir (with its private key) is gone");
}

#[test]
fn the_demo_curls_show_the_status_and_its_logs_have_no_colour_codes_off_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo(tmp.path(), "127.0.0.1:0").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut curls = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("Ctrl-C stops it") {
            break;
        }
        if line.trim_start().starts_with("curl ") || line.contains("; do curl ") {
            curls.push(line);
        }
    }
    assert!(curls.len() >= 8, "{curls:?}");
    for c in &curls {
        let shows_status = c.contains("%{http_code}") || c.contains(" -i ") || c.contains("| grep");
        assert!(shows_status, "a curl that hides the status: {c}");
    }
    assert_eq!(entries(tmp.path()).len(), 1, "the demo dir while it runs");
    // SIGTERM, as a terminal's Ctrl-C or a supervisor would stop it (the pid is our child's).
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(stderr.contains("keygate listening"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in logs written to a pipe: {stderr:?}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new(), "the demo dir is removed on exit");
}
