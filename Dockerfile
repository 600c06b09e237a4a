# syntax=docker/dockerfile:1
#
# trm-sre container image: the controller (kopf operator + webhook server),
# the runbook catalog and the trained TRM checkpoint, in one read-only image.
#
#   docker build -t trm-sre:dev .                                  # CPU (default)
#   docker build --build-arg VARIANT=cuda -t trm-sre:dev-cuda .    # NVIDIA GPU
#
# VARIANT=cpu installs torch from PyTorch's CPU-only wheel index
# (TORCH_CPU_INDEX): PyPI's Linux torch wheel pulls in several GB of CUDA
# libraries that a CPU image never uses. VARIANT=cuda installs exactly what
# requirements.lock pins (PyPI's torch and its nvidia-* CUDA wheels); the
# node only needs the NVIDIA driver and device plugin, no CUDA base image.
# Every other package comes from PyPI at the version requirements.lock pins.
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
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/trm-sre \
    PATH=/opt/trm-sre/bin:$PATH

RUN python -m venv /opt/trm-sre

WORKDIR /src

# Dependencies first, so a code change does not reinstall torch.
COPY requirements.lock ./
# CPU variant: torch alone from the CPU wheel index. The lock's "torch==X"
# matches the wheel "X+cpu" (PEP 440 ignores a local version label when the
# specifier has none). --no-deps: torch's own dependencies come from PyPI in
# the next step, pinned by the lock. CUDA variant: nothing to do here.
RUN set -eu; \
    case "$VARIANT" in \
      cpu) pip install --no-cache-dir --no-deps --index-url "$TORCH_CPU_INDEX" \
             "$(grep -E '^torch==' requirements.lock)" ;; \
      cuda) ;; \
      *) echo "VARIANT must be cpu or cuda, not '$VARIANT'" >&2; exit 1 ;; \
    esac

COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY controller/ controller/
COPY runbooks/ runbooks/
COPY models/ models/

# The project and its runtime dependencies. requirements.lock also pins the
# test and dev extras, so it is a constraints file here: only what the
# project needs is installed, each at its locked version. For the CPU variant
# the CPU torch installed above already satisfies "torch", so no CUDA wheels
# are fetched.
RUN pip install --no-cache-dir -c requirements.lock . \
 && pip check

# The checkpoint lives in a sub-folder (models/checkpoints/trm/) that the
# package data pattern may not cover: copy it next to the installed `models`
# package explicitly, then prove that the image can load it against the
# shipped runbook catalog (a missing or stale checkpoint fails the build, not
# the first alert); `python -P` keeps /src off sys.path, so this imports the
# installed packages, as the runtime will. Byte-compile whatever pip did not:
# the root filesystem is read-only at run time, so Python could not cache
# bytecode later ("|| true": a few packages ship files for newer Pythons that
# do not compile, e.g. torch's py312 test helpers, and bytecode is only an
# optimisation).
RUN set -eu; \
    site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    test -d models/checkpoints || { echo "models/checkpoints/ is missing: train a model first (make train)" >&2; exit 1; }; \
    mkdir -p "$site/models/checkpoints"; \
    cp -a models/checkpoints/. "$site/models/checkpoints/"; \
    python -P -c 'from models.selector import TRMSelector; TRMSelector.load(device="cpu"); print("checkpoint OK")'; \
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
#   for whatever a library caches (torch, httpx, kube client);
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
