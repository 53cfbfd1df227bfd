# The app image, with its models bundled: it runs air-gapped (docker run --network none).
#
#   docker build -t app .                                         # models from ./models.toml
#   docker build --secret id=hf_token,src=$HOME/.cache/huggingface/token -t app .   # gated models
#   docker build --build-arg HF_ENDPOINT=https://mirror.example -t app .             # a mirror
#   docker build --target slim -t app .        # no models: a volume brings them (Kubernetes, a cluster)
#
# Two images from one file:
# * app (the default): the models at /app/models, in the same layers as the bundled seeder image
#   (./Dockerfile.seeder), for docker-compose.yml on one host.
# * slim: the app without models, for wherever a seeder fills the volume it mounts: Kubernetes,
#   compose.cluster.yml. Its build never runs the models stage, so it asks no hub for anything.
#
# Stages: build (seeder in a venv) -> models (seeder runs, BuildKit cache mount) -> bundle (the
# venv and the verified models) -> app (final); and build -> slim. The models stage depends only on
# seeder and the manifest/lock, never on app code, so changing the app never re-runs it; changing the
# manifest re-runs it, and the cache mount means only a model that is new or changed is downloaded.
# build, models and bundle are identical in ./Dockerfile.seeder: `docker compose up --build` runs
# the models stage once for both images, and the host stores the model layer once.
ARG PYTHON_IMAGE=python:3.11-slim

# -- build: seeder in a venv (keep identical in ./Dockerfile.seeder) ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY seeder/ seeder/
# README.md is only the package's long description: an empty stand-in keeps doc edits from
# invalidating this layer (and every model layer built on top of it).
RUN --mount=type=cache,target=/root/.cache/pip \
    touch README.md && /opt/venv/bin/pip install ".[s3]"   # boto3: s3:// caches

# -- models: the seeder fills /models at build time (keep identical in ./Dockerfile.seeder) --
FROM ${PYTHON_IMAGE} AS models
COPY --from=build /opt/venv /opt/venv
# Which manifest: MANIFEST_DIR/models.toml, plus MANIFEST_DIR/models.lock if there is one
# (models.loc[k] is a glob, so a missing lock matches nothing instead of failing the build).
ARG MANIFEST_DIR=.
COPY ${MANIFEST_DIR}/models.toml ${MANIFEST_DIR}/models.loc[k] /etc/seeder/
# Hub or mirror. Not secret, so a build arg is fine (it only changes which server is asked).
ARG HF_ENDPOINT
# 1 allows a plain-http mirror that is not localhost (e.g. a hub on a test network).
ARG SEEDER_ALLOW_HTTP
# /cache is BuildKit's cache mount: it outlives the build, and seeder's --cache is content-addressed,
#   so a file downloaded by any earlier build is copied from there, never fetched again.
# The token (if any) is a secret mount at /run/secrets/hf_token, where seeder looks by itself: it never
#   becomes a build arg, an environment variable or part of a layer.
# Files taken from the cache mount are copied (another filesystem) and hashed on the way, so the
#   models stage ends verified without a second pass.
ENV PATH=/opt/venv/bin:$PATH \
    SEEDER_MANIFEST=/etc/seeder/models.toml \
    SEEDER_TARGET=/models \
    SEEDER_LOG_FORMAT=json
# A TLS-inspecting proxy's CA bundle, if any, is a secret too (docker build --secret id=ca_bundle,src=...).
# sharing=locked: the app and seeder images build this stage side by side; the second waits and
#   then finds every blob in the cache instead of downloading it too.
RUN --mount=type=cache,id=seeder-models,target=/cache,sharing=locked \
    --mount=type=secret,id=hf_token \
    --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export SEEDER_CA_BUNDLE=/run/secrets/ca_bundle; fi; \
    seeder seed --cache /cache

# -- bundle: the venv and the verified models (keep identical in ./Dockerfile.seeder) -----------------
# Both final images start with exactly these layers; the bundled seeder image fills its volume from
# this copy. Models before anything app-specific: an app change rebuilds only the layers after them.
# They stay owned by root: the app reads them, it never needs to change them.
FROM ${PYTHON_IMAGE} AS bundle
COPY --from=build /opt/venv /opt/venv
COPY --from=models /models /app/models

# -- slim: the app without models; a volume mounted at /app/models brings them ---------------------------
# The venv is the same layer as in the other images. Below it, the same instructions as the app stage's
# (a test holds the two to that), so the two images differ only in the models.
FROM ${PYTHON_IMAGE} AS slim
COPY --from=build /opt/venv /opt/venv
LABEL org.opencontainers.image.title="seeder reference app" \
      org.opencontainers.image.description="Stand-in app serving the models at /app/models; replace app/ with yours." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
WORKDIR /app
# The venv gives the app seeder's Python API (seeder.check at start-up); add your app's own
# dependencies in a RUN pip install here.
COPY app/ /app/app/
ENV PATH=/opt/venv/bin:$PATH \
    MODELS_DIR=/app/models \
    PORT=8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "app"]

# -- app: the default image, models bundled (last, so that a build without --target makes it) -------------
FROM bundle AS app
LABEL org.opencontainers.image.title="seeder reference app" \
      org.opencontainers.image.description="Stand-in app serving the models at /app/models; replace app/ with yours." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app
WORKDIR /app
# The venv gives the app seeder's Python API (seeder.check at start-up); add your app's own
# dependencies in a RUN pip install here.
COPY app/ /app/app/
ENV PATH=/opt/venv/bin:$PATH \
    MODELS_DIR=/app/models \
    PORT=8000 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "app"]
