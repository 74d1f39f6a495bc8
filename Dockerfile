# Ferry's container image. The embedded broker is left out: in a container,
# Ferry runs against a real Kafka (`ferry run`).
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ferry-connectors --no-default-features --bin ferry

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/ferry ferry && mkdir -p /var/lib/ferry && chown ferry /var/lib/ferry
COPY --from=build /src/target/release/ferry /usr/local/bin/ferry
COPY examples /etc/ferry/examples
COPY schemas /etc/ferry/schemas
USER ferry
WORKDIR /var/lib/ferry
EXPOSE 8080 8081 8083
ENTRYPOINT ["ferry"]
CMD ["run", "/etc/ferry/examples/quickstart.yaml"]
