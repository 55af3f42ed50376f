# keygate: sidecar authorization proxy.
#
#   docker build -t registry.example.com/keygate:0.1.0 .
#
# Ports: 8080 = proxy listener, 9090 = admin listener (/metrics, /healthz, /readyz).

# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------
# The locked dependency set needs rustc >= 1.89 (uuid 1.29 declares
# rust-version 1.89); 1.95 is the toolchain the project is developed with.
FROM docker.io/library/rust:1.95-bookworm AS builder

WORKDIR /app

# Dependency-caching layer: build every locked dependency against stub
# sources, so editing src/ does not rebuild the dependency graph. Cargo reads
# every target the manifest declares ([lib], [[bin]], [[bench]], examples/),
# so each one gets a stub here; .ci/image.sh fails when Cargo.toml declares a
# target this list misses.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches examples \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && echo 'fn main() {}' > examples/floor_proxy.rs \
    && cargo build --release --locked --bin keygate \
    && rm -rf src target/release/keygate target/release/deps/keygate-* \
       target/release/deps/libkeygate-* target/release/.fingerprint/keygate-*

# Real sources. touch: COPY keeps the context's mtimes, which may be older
# than the stub build above. benches/ and examples/ keep their stubs: only
# the keygate binary is built. openapi/ holds the admin API's document, which
# the binary serves (include_str!).
COPY openapi ./openapi
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin keygate

# ---------------------------------------------------------------------------
# Runtime: distroless, glibc only (ring/rustls need nothing else), non-root.
# ---------------------------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="Sidecar authorization proxy: API keys, scopes, clinic restrictions, in front of an unmodified HTTP API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /app/target/release/keygate /usr/local/bin/keygate

# 65532 = distroless "nonroot"; numeric so that Kubernetes runAsNonRoot can
# verify it without resolving names.
USER 65532:65532

# mimalloc may back its arenas with 2 MiB pages (transparent huge pages, madvise mode): a
# 1M-key table loads in ~1.24 s instead of 1.5-2.0 s, with the same resident memory. Read at
# process start (setting it from code was measured too late); override with =0.
ENV MIMALLOC_ALLOW_LARGE_OS_PAGES=1

EXPOSE 8080 9090

ENTRYPOINT ["/usr/local/bin/keygate"]
# Generic default path; the Kubernetes Deployment overrides the args.
CMD ["serve", "--config", "/etc/keygate/config.yaml"]
