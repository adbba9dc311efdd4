# flashstock container image: a release build (fat LTO, as benchmarked), then a slim
# runtime with the binary only, run as an unprivileged user.
#   docker build -t flashstock .
#   docker compose up            (the service wired to Redis and MariaDB)

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src src
COPY lua lua
COPY migrations migrations
COPY assets assets
COPY schema.graphql ./
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && cp target/release/flashstock /flashstock

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin flashstock
COPY --from=build /flashstock /usr/local/bin/flashstock
USER flashstock
# The API on every interface of the container; /metrics too, for the scraper inside the
# container network (publish 9464 only to where Prometheus runs).
ENV LISTEN_ADDR=0.0.0.0:8080 \
    METRICS_ADDR=0.0.0.0:9464 \
    LOG_FORMAT=json \
    RUST_LOG=info,sqlx=warn
EXPOSE 8080 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["flashstock"]
CMD ["serve"]
