//! Micro-benchmarks of the decisions on the request path, without sockets:
//!   cargo bench --bench hot_path
//! (CI only compiles them.) Numbers are per call on this machine; see the README.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use keygate::keys::generate::generate;
use keygate::keys::{Environment, KeyFormat, KeyHash, KeyTable};
use keygate::policy::RequestFacts;
use keygate::sanitize::{sanitize, HeaderPolicy};
use time::OffsetDateTime;

/// A JSON Lines table of `n` keys; returns it with `sample` of its secrets.
fn table(n: usize, sample: usize) -> (KeyTable, Vec<String>) {
    let mut text = String::with_capacity(n * 200);
    let mut secrets = Vec::with_capacity(sample);
    for i in 0..n {
        let secret = generate("dpl_live_");
        text.push_str(&format!(
            "{{\"id\":\"key_{i:08}\",\"hash\":\"{}\",\"environment\":\"live\",\"scopes\":[\"interactions:read\",\"metrics:read\"],\"clinics\":[\"clinic_{:05}\",\"clinic_00042\"]}}\n",
            KeyHash::of(&secret).to_hex(),
            i % 100_000
        ));
        if secrets.len() < sample {
            secrets.push(secret);
        }
    }
    (keygate::keys::file::parse(&text, "bench", &keygate::keys::Catalogue::default()).unwrap(), secrets)
}

fn config() -> keygate::config::Config {
    keygate::config::parse("environment: live\nupstream:\n  url: http://127.0.0.1:1\nkeys:\n  file: k\n", "bench")
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let format = KeyFormat::default();
    let key = generate("dpl_live_");
    c.bench_function("key format + checksum", |b| b.iter(|| format.check(black_box(&key))));
    c.bench_function("sha256 of a key", |b| b.iter(|| KeyHash::of(black_box(&key))));

    for n in [10_000, 1_000_000] {
        let (t, secrets) = table(n, 1000);
        let hashes: Vec<KeyHash> = secrets.iter().map(|s| KeyHash::of(s)).collect();
        let mut i = 0;
        c.bench_function(&format!("table lookup, {n} keys"), |b| {
            b.iter(|| {
                i = (i + 1) % hashes.len();
                black_box(t.lookup(&hashes[i]).is_some())
            })
        });
        let now = OffsetDateTime::now_utc();
        let mut j = 0;
        c.bench_function(&format!("authenticate (format, hash, lookup, state), {n} keys"), |b| {
            b.iter(|| {
                j = (j + 1) % secrets.len();
                black_box(
                    keygate::authn::authenticate(
                        keygate::keys::Secret::new(&secrets[j]),
                        &format,
                        Environment::Live,
                        &t,
                        now,
                    )
                    .is_ok(),
                )
            })
        });
    }

    let cfg = config();
    let (t, _) = table(1, 1);
    let k = t.records().next().unwrap();
    let facts = RequestFacts {
        method: &Method::GET,
        path: "/api/v1/clinics/clinic_00000/interactions",
        query: Some("from=2026-01-01"),
        client_ip: "10.0.0.1".parse().unwrap(),
    };
    c.bench_function("policy: route + scope + clinic", |b| {
        b.iter(|| black_box(keygate::policy::authorise(&cfg.routes, k, black_box(&facts)).is_ok()))
    });

    c.bench_function("path normalise (already normal)", |b| {
        b.iter(|| keygate::path::normalize(black_box("/api/v1/clinics/clinic_00000/interactions")).is_ok())
    });
    c.bench_function("path normalise (dot segments, encodings)", |b| {
        b.iter(|| keygate::path::normalize(black_box("/api//v1/./clinics/%63linic_1/../clinic_1/interactions")).is_ok())
    });

    let limits = keygate::ratelimit::LocalLimits::new(1_000_000, 1000);
    let quota = keygate::ratelimit::Quota::new(1_000_000, std::time::Duration::from_secs(1), 1_000_000).unwrap();
    let ids: Vec<std::sync::Arc<str>> = (0..10_000).map(|i| format!("key_{i:05}").into()).collect();
    let (mut n, mut tick) = (0, 0u64);
    c.bench_function("limiter decision (local GCRA), 10k active keys", |b| {
        b.iter(|| {
            n = (n + 1) % ids.len();
            tick += 1_000;
            black_box(limits.check_key(&ids[n], &quota, tick).allowed)
        })
    });
    let watch = keygate::anomaly::KeyWatch::new(&keygate::anomaly::Settings::default());
    let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    c.bench_function("anomaly detectors per request (network + rate baseline), 10k keys", |b| {
        b.iter(|| {
            n = (n + 1) % ids.len();
            tick += 1_000;
            black_box(watch.seen(&ids[n], ip, keygate::anomaly::Now { mono: tick, unix: 1_800_000_000 }))
        })
    });

    // A token validated next to the key lookup it replaces.
    let dir = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("jwt.pem");
    std::fs::write(&pem, keygate::jwt::keys::generate_ed25519_pem()).unwrap();
    let settings = keygate::jwt::Settings {
        issuer: "keygate".into(),
        audience: "api".into(),
        leeway: std::time::Duration::from_secs(30),
        keys: vec![keygate::jwt::KeySource {
            kid: "k1".into(),
            algorithm: keygate::jwt::Alg::EdDsa,
            private_key_file: Some(pem),
            public_key_file: None,
        }],
        issue: None,
        jwks_path: "/.well-known/jwks.json".into(),
        loaded: Default::default(),
    };
    let jwt_keys = keygate::jwt::KeySet::load(&settings.keys).unwrap();
    let (t, _) = table(1, 1);
    let parent = t.records().next().unwrap();
    let now_s = OffsetDateTime::now_utc().unix_timestamp();
    let (jwt, _) = keygate::jwt::token::issue(&settings, &jwt_keys, parent, &Default::default(), now_s, 900).unwrap();
    c.bench_function("jwt verify (EdDSA signature, kid, iss/aud, time)", |b| {
        b.iter(|| black_box(keygate::jwt::token::verify(&settings, &jwt_keys, black_box(&jwt), now_s).is_ok()))
    });
    let tokens = keygate::proxy::tokens::Tokens::new(settings.clone()).unwrap();
    let now = OffsetDateTime::now_utc();
    c.bench_function("jwt authenticate, verified before (cache hit, parent state, narrowing)", |b| {
        b.iter(|| black_box(tokens.authenticate(black_box(&jwt), &t, Environment::Live, now).is_ok()))
    });
    let _ = std::fs::remove_dir_all(&dir);

    let policy = HeaderPolicy::new(&[], false);
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.example.com"));
    headers.insert("authorization", HeaderValue::from_static("Bearer x"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    c.bench_function("sanitise 4 ordinary headers", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            black_box(sanitize(&mut h, &policy, false).is_ok())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
