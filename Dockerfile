# cluster-proxy user-server image.
#   docker build -t cluster-proxy-user-server .
# Red Hat UBI Node.js 24 images: OpenShift's restricted-v2 SCC runs the container with an arbitrary
# UID, so nothing here depends on the user's name, home or ownership of files; everything the server
# reads is world-readable and it writes nothing to the image's file system.
ARG BUILDER_IMAGE=registry.access.redhat.com/ubi9/nodejs-24:latest
ARG RUNTIME_IMAGE=registry.access.redhat.com/ubi9/nodejs-24-minimal:latest

# TypeScript -> dist/ with tsc: the build is also the type check, and the runtime image carries
# neither TypeScript nor the sources.
FROM ${BUILDER_IMAGE} AS build
USER 0
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Production dependencies alone, so no dev tool (typescript, vitest, the npm `node` package) ships.
FROM ${BUILDER_IMAGE} AS deps
USER 0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${RUNTIME_IMAGE}
WORKDIR /app
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /build/dist ./dist
ENV NODE_ENV=production
# Node 24's young generation grows to 128 MiB committed under load and does not shrink while idle: capped
# at 16 MiB per semi-space, RSS with 10,000 idle watches fell by ~60 MiB at the same CPU per request (8
# saved 10 MiB more for 12-25 % more CPU). bench/README.md, finding 13. The bench runs the servers with
# this same value; a Deployment may override it.
ENV NODE_OPTIONS=--max-semi-space-size=16
# Numeric, so that runAsNonRoot can be checked without /etc/passwd; OpenShift replaces it anyway.
USER 65532:65532
EXPOSE 9092 8000
# Exec form: node is PID 1 and receives SIGTERM itself (src/cli.ts drains on it); no shell in between.
# No --enable-source-maps: it makes every Error.stack access costly, and stacks name dist/ files anyway.
ENTRYPOINT ["node", "dist/cli.js"]
