# provline image: the CLI, the workers, the station and the local AWS IoT stand-in.
# Used by docker-compose.yml; see docs/operations.md §8. Node 24 is the current LTS line; CI
# tests provline on Node 20, 22 and 24 (.ci/run).

# ---- build: compile pkcs11js from source, compile TypeScript, drop dev dependencies ----
FROM node:24-bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# pkcs11js is built with node-gyp, which needs Node's headers. The official image has them in
# /usr/local/include/node. This overrides the repository's .npmrc (nodedir=/usr, for Debian's
# Node), so node-gyp never tries to download headers.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.build.json \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime ----
FROM node:24-bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends softhsm2 opensc openssl socat ser2net ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /app /app
# `provline` on PATH (Node resolves the symlink, so bin/provline.js finds dist/), and the home
# directory: a named volume mounted there for the first time takes its owner and mode.
RUN ln -s /app/bin/provline.js /usr/local/bin/provline \
 && mkdir -p /var/lib/provline \
 && chown node:node /var/lib/provline \
 && chmod 700 /var/lib/provline
ENV PROVLINE_HOME=/var/lib/provline
USER node
CMD ["provline", "--help"]
