# syntax=docker/dockerfile:1
#
# trm-sre container image: the controller (kopf operator + webhook server),
# the runbook catalog and the trained TRM checkpoint, in one read-only image.
#
#   docker build -t trm-sre:dev .                                  # CPU (default)
#   docker build --build-arg VARIANT=cuda -t trm-sre:dev-cuda .    # NVIDIA GPU
#
# The controller serves the TRM with ONNX Runtime (models/checkpoints/*/model.onnx);
# torch is the `train` extra and is in neither image (issue #14).
# VARIANT=cpu installs the serving dependencies only (`pip install .`, onnxruntime).
# VARIANT=cuda swaps onnxruntime for onnxruntime-gpu at the same version, with the
# CUDA and cuDNN runtime libraries from their nvidia-* wheels (its `cuda`/`cudnn`
# extras); the node only needs the NVIDIA driver and device plugin, no CUDA base
# image. Run it with --device cuda (strict: not ready when CUDA cannot start).
# Every package comes from PyPI at the version requirements.lock pins.
#
# Runtime contract (see deploy/base/deployment.yaml, deploy/helm/trm-sre):
# - runs as uid/gid 65532, never root; works with readOnlyRootFilesystem;
# - writable state: /var/lib/trm-sre (mount a volume; the SQLite store lives
#   there) and /tmp (mount an emptyDir; HOME and caches point into it);
# - listens on 8080 (API, /healthz, /readyz, /metrics); kopf's liveness
#   endpoint on the port given with --liveness-port (8081 in the manifests).
#
# Listening on 0.0.0.0 needs a bearer token (TRM_SRE_WEBHOOK_TOKEN or
# --token-file): the controller refuses to serve unauthenticated on a
# non-loopback address.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------
# build: a virtualenv in /opt/trm-sre with the locked dependencies and the
# project installed as a regular (non-editable) package.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
# A failing command anywhere in a pipe fails the RUN (hadolint DL4006).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/trm-sre \
    PATH=/opt/trm-sre/bin:$PATH

RUN python -m venv /opt/trm-sre

WORKDIR /src

COPY requirements.lock ./
RUN case "$VARIANT" in cpu|cuda) ;; *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; esac

COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY controller/ controller/
COPY runbooks/ runbooks/
COPY models/ models/

# The project and its serving dependencies (no extras: no torch). requirements.lock
# also pins the train, test and dev extras, so it is a constraints file here: only
# what the project needs is installed, each at its locked version. The CUDA variant
# then replaces onnxruntime by onnxruntime-gpu of the locked version (one module,
# two distributions: never both).
RUN set -eu; \
    pip install --no-cache-dir -c requirements.lock .; \
    if [ "$VARIANT" = cuda ]; then \
      ort=$(grep -E '^onnxruntime==' requirements.lock | cut -d= -f3); \
      pip uninstall -y onnxruntime; \
      pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==$ort"; \
    fi; \
    pip check

# The checkpoint lives in a sub-folder (models/checkpoints/trm/) that the
# package data pattern may not cover: copy it next to the installed `models`
# package explicitly, then prove that the image can load it against the
# shipped runbook catalog (a missing or stale checkpoint fails the build, not
# the first alert) with the ONNX runtime, without importing torch (and torch
# must not be installed at all); `python -P` keeps /src off sys.path, so this
# imports the installed packages, as the runtime will. Byte-compile whatever pip did not:
# the root filesystem is read-only at run time, so Python could not cache
# bytecode later ("|| true": a few packages ship files for newer Pythons that
# do not compile, and bytecode is only an optimisation).
RUN set -eu; \
    site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    test -d models/checkpoints || { echo "models/checkpoints/ is missing: train a model first (make train)" >&2; exit 1; }; \
    mkdir -p "$site/models/checkpoints"; \
    cp -a models/checkpoints/. "$site/models/checkpoints/"; \
    python -P -c 'import importlib.util, sys; sys.exit("torch is installed" if importlib.util.find_spec("torch") else 0)'; \
    python -P -c 'import sys; from models.selector import TRMSelector; TRMSelector.load(device="cpu", runtime="onnx"); assert "torch" not in sys.modules; print("checkpoint OK")'; \
    python -m compileall -q "$site" >/dev/null || true; \
    trm-sre --help >/dev/null

# ---------------------------------------------------------------------------
# runtime: the same Python base, the virtualenv, an unprivileged user.
# ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu

LABEL org.opencontainers.image.title="trm-sre" \
      org.opencontainers.image.description="Turns Prometheus alerts into safe automatic remediations (kopf operator + TRM model)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.homelab.trm-sre.variant="${VARIANT}"

# uid/gid 65532 (the conventional "nonroot" id). /var/lib/trm-sre is the state
# directory; it belongs to the user so the image also works without a volume
# (docker run), and a mounted volume gets its group from fsGroup.
RUN groupadd --system --gid 65532 trm-sre \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/trm-sre --no-create-home \
            --shell /usr/sbin/nologin trm-sre \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/trm-sre

COPY --from=build /opt/trm-sre /opt/trm-sre

# Read-only root: nothing may be written outside /var/lib/trm-sre and /tmp.
# - XDG_DATA_HOME=/var/lib makes the default state directory (platformdirs'
#   user data dir, used when --state-dir is not given) /var/lib/trm-sre;
# - HOME, TMPDIR and XDG_CACHE_HOME point at /tmp (an emptyDir in Kubernetes)
#   for whatever a library caches (onnxruntime, httpx, kube client);
# - no bytecode writes (it was compiled at build time), unbuffered logs.
ENV PATH=/opt/trm-sre/bin:$PATH \
    VIRTUAL_ENV=/opt/trm-sre \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_DATA_HOME=/var/lib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /var/lib/trm-sre
EXPOSE 8080 8081
VOLUME ["/var/lib/trm-sre"]

ENTRYPOINT ["trm-sre"]
CMD ["run", "--host", "0.0.0.0"]
