# syntax=docker/dockerfile:1
# The service (`connector serve`) in a small image: the release binary and the connectors, run
# as an unprivileged user. Build: `docker build -t hypernet-connect .`; with PostgreSQL:
# `docker compose up` (compose.yaml). README: "Running the service in a container".

# The toolchain the workspace is tested with (edition 2024).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hypernet-cli \
    && strip target/release/connector

FROM debian:bookworm-slim
# CA certificates for the providers' HTTPS. Debian's security updates move the exact version,
# so it is not pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The service's state (an SQLite database when no PostgreSQL is given, the token key file, the
# uploads waiting for their import) lives in one volume owned by the service's user.
RUN groupadd --system --gid 10001 hypernet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hypernet --create-home hypernet
COPY --from=build /src/target/release/connector /usr/local/bin/connector
COPY --from=build /src/connectors /usr/share/hypernet/connectors
# By number, so that the runtime needs no user database to know it is not root.
USER 10001:10001
WORKDIR /var/lib/hypernet
VOLUME ["/var/lib/hypernet"]
ENV HYPERNET_LISTEN=0.0.0.0:8080 \
    DATABASE_URL=/var/lib/hypernet/hypernet.sqlite
EXPOSE 8080
ENTRYPOINT ["connector"]
CMD ["serve", "--connectors-root", "/usr/share/hypernet/connectors", "--key-file", "/var/lib/hypernet/hypernet.key", "--uploads", "/var/lib/hypernet/uploads"]
