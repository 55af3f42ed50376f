//! `keygate inject` against golden files: tests/golden/inject/NAME.in.{yaml,json} becomes
//! NAME.out.{yaml,json}, or fails with the text in NAME.err.txt. A name starting with
//! `legacy-` runs with --legacy-sidecar, `rewrite-` with --rewrite-service.
//! KEYGATE_BLESS=1 rewrites the .out files (review the diff). Every .out file is also checked
//! by kubernetes-validate --strict in .ci/lint-deploy.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keygate::k8s::inject::Options;
use keygate::k8s::inject_text;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject")
}

fn options_for(name: &str) -> (Options, bool) {
    let opts = Options {
        image: "registry.example.com/keygate:0.1.0".into(),
        config_map: "keygate-config".into(),
        keys_secret: "keygate-keys".into(),
        legacy_sidecar: name.starts_with("legacy-"),
    };
    (opts, name.starts_with("rewrite-"))
}

fn inputs() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?.to_owned();
            let name = file.strip_suffix(".in.yaml").or_else(|| file.strip_suffix(".in.json"))?.to_owned();
            Some((name, p))
        })
        .collect();
    v.sort();
    v
}

fn out_path(input: &Path) -> PathBuf {
    PathBuf::from(input.to_str().unwrap().replace(".in.", ".out."))
}

#[test]
fn every_golden_input_gives_its_output_or_its_error() {
    let bless = std::env::var_os("KEYGATE_BLESS").is_some();
    let mut checked = 0;
    for (name, input) in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let (opts, rewrite) = options_for(&name);
        let result = inject_text(&text, &name, &opts, rewrite);
        let err_file = golden_dir().join(format!("{name}.err.txt"));
        if err_file.exists() {
            let want = std::fs::read_to_string(&err_file).unwrap();
            let err = format!("{:#}", result.expect_err(&format!("{name}: injection should fail")));
            assert!(err.contains(want.trim()), "{name}: error {err:?} does not contain {want:?}");
        } else {
            let (out, _notes) = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let out_file = out_path(&input);
            if bless {
                std::fs::write(&out_file, &out).unwrap();
            }
            let want = std::fs::read_to_string(&out_file).unwrap_or_else(|e| panic!("{}: {e}", out_file.display()));
            assert_eq!(out, want, "{name}: output differs from {} (KEYGATE_BLESS=1 rewrites it)", out_file.display());
        }
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} golden inputs found");
}

#[test]
fn injecting_an_injected_output_changes_nothing() {
    for (name, input) in inputs() {
        let out_file = out_path(&input);
        if !out_file.exists() {
            continue;
        }
        let once = std::fs::read_to_string(&out_file).unwrap();
        let (opts, rewrite) = options_for(&name);
        let (twice, _) = inject_text(&once, &name, &opts, rewrite).unwrap();
        assert_eq!(twice, once, "{name}: a second injection changed the output");
    }
}

#[test]
fn the_already_injected_golden_input_is_its_own_output() {
    let dir = golden_dir();
    let input = std::fs::read_to_string(dir.join("already-injected.in.yaml")).unwrap();
    let output = std::fs::read_to_string(dir.join("already-injected.out.yaml")).unwrap();
    assert_eq!(input, output);
    let (opts, _) = options_for("already-injected");
    let (_, notes) = inject_text(&input, "already-injected", &opts, false).unwrap();
    assert!(notes.iter().any(|n| n == "Deployment/clinic-api: already injected, unchanged"), "{notes:?}");
}

#[test]
fn every_workload_kind_has_a_golden_file() {
    let all: String = inputs().iter().map(|(_, p)| std::fs::read_to_string(p).unwrap()).collect();
    for kind in ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "List"] {
        let yaml = format!("kind: {kind}\n");
        let json = format!("\"kind\": \"{kind}\"");
        assert!(all.contains(&yaml) || all.contains(&json), "no golden input of kind {kind}");
    }
}

#[test]
fn a_service_targeting_the_app_is_reported_or_rewritten() {
    let text = std::fs::read_to_string(golden_dir().join("deployment.in.yaml")).unwrap();
    let (opts, _) = options_for("deployment");
    let (out, notes) = inject_text(&text, "deployment", &opts, false).unwrap();
    assert!(out.contains("targetPort: web"), "without the flag the Service is left alone");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Service/clinic-api port 80 targets the app (web) of Deployment/clinic-api")),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("The app must listen on 127.0.0.1 only (3000)")), "{notes:?}");

    let (out, notes) = inject_text(&text, "deployment", &opts, true).unwrap();
    assert!(out.contains("targetPort: keygate\n") && !out.contains("targetPort: web"), "{out}");
    assert!(
        notes.iter().any(|n| n == "Service/clinic-api port 80: targetPort web -> keygate (keygate, 8080)"),
        "{notes:?}"
    );
}

#[test]
fn a_template_no_service_selects_gets_a_note() {
    let text = std::fs::read_to_string(golden_dir().join("statefulset.in.yaml")).unwrap();
    let (opts, _) = options_for("statefulset");
    let (_, notes) = inject_text(&text, "statefulset", &opts, false).unwrap();
    assert!(notes.iter().any(|n| n.starts_with("StatefulSet/ledger: no Service in the input selects it")), "{notes:?}");
}

#[test]
fn malformed_input_names_the_document() {
    let (opts, _) = options_for("x");
    let err = inject_text("kind: Pod\n---\nkind: [\n", "bad.yaml", &opts, false).unwrap_err();
    assert!(format!("{err:#}").starts_with("bad.yaml: document 2: invalid YAML"), "{err:#}");
    let err = inject_text("kind: Pod\nmetadata: {name: x}\nspec: 3\n", "bad.yaml", &opts, false).unwrap_err();
    assert_eq!(format!("{err:#}"), "bad.yaml: Pod/x: spec must be a mapping");
}

fn keygate_inject(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("inject")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_injects_stdin_and_refuses_host_network_with_nothing_on_stdout() {
    let dir = golden_dir();
    let input = std::fs::read_to_string(dir.join("deployment.in.yaml")).unwrap();
    let out = keygate_inject(&["--image", "registry.example.com/keygate:0.1.0"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        std::fs::read_to_string(dir.join("deployment.out.yaml")).unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("keygate inject: Deployment/clinic-api: keygate injected"));

    let host = std::fs::read_to_string(dir.join("hostnetwork.in.yaml")).unwrap();
    let out = keygate_inject(&[], &format!("{input}---\n{host}"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "half a manifest was written");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("<stdin>: Pod/on-the-node: spec.hostNetwork is true"), "{stderr}");
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    /// Manifest-shaped text: the keys and values inject looks at, in random nesting.
    fn yamlish() -> impl Strategy<Value = String> {
        let words = prop::sample::select(vec![
            "kind",
            "Pod",
            "List",
            "items",
            "CronJob",
            "Deployment",
            "spec",
            "template",
            "jobTemplate",
            "metadata",
            "annotations",
            "containers",
            "initContainers",
            "volumes",
            "ports",
            "containerPort",
            "8080",
            "hostNetwork",
            "true",
            "name",
            "keygate",
            "keygate.io/inject",
            "disabled",
            "Service",
            "selector",
            "targetPort",
            "-",
            ":",
            "\n",
            "\n  ",
            "\n    ",
            "---\n",
            "[",
            "]",
            "{",
            "}",
            "null",
            "3000",
            "\"",
        ]);
        prop::collection::vec(words, 0..60).prop_map(|w| w.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn inject_text_on_manifest_shaped_text(text in yamlish(), rewrite in any::<bool>()) {
            let (opts, _) = options_for("fuzz");
            if let Ok((out, _)) = inject_text(&text, "fuzz", &opts, rewrite) {
                // Whatever it accepted, a second pass accepts too and leaves as it was.
                let (again, _) = inject_text(&out, "fuzz", &opts, rewrite).expect("its own output is accepted");
                prop_assert_eq!(again, out);
            }
        }

        #[test]
        fn inject_text_on_arbitrary_text(text in ".{0,200}") {
            let (opts, _) = options_for("fuzz");
            let _ = inject_text(&text, "fuzz", &opts, false);
        }
    }
}
