//! `keygate check-config` through the real binary, against the broken configs in
//! tests/golden/check-config: each `NAME.yaml` must print exactly `NAME.out` (exit code, then
//! stdout and stderr). `KEYGATE_UPDATE_GOLDEN=1 cargo test --test it golden` rewrites the
//! `.out` files; review the diff before committing it.

use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/check-config")
}

/// Runs `keygate check-config NAME` in `dir` (so paths in the output are the relative ones).
fn check_config(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("check-config")
        .arg(name)
        .current_dir(dir)
        .output()
        .unwrap();
    format!(
        "exit {}\n{}{}",
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn golden_check_config_outputs() {
    let dir = golden_dir();
    let update = std::env::var_os("KEYGATE_UPDATE_GOLDEN").is_some();
    let mut configs: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.starts_with("keys"))
        .collect();
    configs.sort();
    assert!(configs.len() >= 8, "the golden set is there: {configs:?}");
    let mut wrong = Vec::new();
    for name in &configs {
        let got = check_config(&dir, name);
        let expected_path = dir.join(name.replace(".yaml", ".out"));
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} is missing (KEYGATE_UPDATE_GOLDEN=1 writes it)", expected_path.display()));
        if got != want {
            wrong.push(format!("{name}:\n--- expected\n{want}--- got\n{got}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_rust_type_name_reaches_the_operator() {
    let dir = golden_dir();
    for name in ["typos-and-types.yaml", "semantic.yaml"] {
        let out = check_config(&dir, name);
        for rust in [
            "usize",
            "u64",
            "u32",
            "struct Raw",
            "Option<",
            "expected a boolean",
            "invalid type: sequence, expected a map",
        ] {
            assert!(!out.contains(rust), "{rust} in {name}: {out}");
        }
    }
}
