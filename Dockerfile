# syntax=docker/dockerfile:1
#
# The Reflector gateway as a container image:
#
#   docker build -t reflector:0.1.0 .
#   docker run --rm -p 8080:8080 \
#     -v /etc/reflector:/etc/reflector:ro \
#     reflector:0.1.0
#
# It runs `reflector server --config /etc/reflector/server.yaml` as the
# unprivileged user 10001. The mounted server.yaml must listen on
# { host: 0.0.0.0, port: 8080 } (or set REFLECTOR_HEALTHCHECK_URL), and the
# host key it names must be mode 0600 and readable by uid 10001
# (chown 10001 host.jwk): the server refuses a private key that others can read.
# Kubernetes manifests: deploy/kubernetes/.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile the TypeScript with the dev dependencies
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would run tsc before the sources are here.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json index.ts ./
COPY shared ./shared
COPY server ./server
COPY client ./client
COPY bin ./bin
RUN npm run build

# ---- deps: production dependencies only (bufferutil ships prebuilt binaries)
FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# ---- runtime: node, the compiled code and production modules; nothing else
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    REFLECTOR_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
RUN groupadd --system --gid 10001 reflector \
 && useradd --system --uid 10001 --gid reflector --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin reflector
WORKDIR /app
# Owned by root and not writable by the service user.
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
USER 10001:10001
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.REFLECTOR_HEALTHCHECK_URL).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/bin/reflector.js"]
CMD ["server", "--config", "/etc/reflector/server.yaml"]
