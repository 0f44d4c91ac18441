# brainalign: one image for the whole toolchain (CPU, or GPU with `docker run --gpus all`, which
# needs the NVIDIA container toolkit on the host; CUDA comes with the PyPI torch wheels).
FROM python:3.11-slim-bookworm

# System packages: libsndfile (soundfile), git (DVC, --version), make, TeX Live + latexmk (paper),
# SLURM + munge (the test suite starts a local single-node SLURM; `brainalign cluster local`).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git make libsndfile1 \
      latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra \
      texlive-fonts-recommended lmodern \
      slurmctld slurmd slurm-client munge \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 brainalign \
 && mkdir -p /opt/venv /home/brainalign/brainalign \
 && chown brainalign:brainalign /opt/venv /home/brainalign/brainalign
WORKDIR /home/brainalign/brainalign
USER brainalign

# The environment lives outside the repository (/opt/venv, uv's UV_PROJECT_ENVIRONMENT, which
# the Makefile follows), so a checkout mounted over the working directory keeps it. The project
# is installed editable: a mounted checkout's src/ is the code that runs.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv
# The locked dependencies first (cached layer), then the project itself.
COPY --chown=brainalign:brainalign pyproject.toml uv.lock README.md ./
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check uv==0.13.8 \
 && /opt/venv/bin/uv sync --frozen --no-install-project --no-cache
COPY --chown=brainalign:brainalign . .
RUN /opt/venv/bin/uv sync --frozen --no-cache --compile-bytecode && touch /opt/venv/bin/.synced

ARG GIT_COMMIT=unknown
ARG LOCK_SHA256=unknown
LABEL org.opencontainers.image.title="brainalign" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.brainalign.lock-sha256="${LOCK_SHA256}"
ENV PATH=/opt/venv/bin:${PATH} \
    BRAINALIGN_GIT_COMMIT=${GIT_COMMIT} \
    BRAINALIGN_LOCK_SHA256=${LOCK_SHA256}

CMD ["dvc", "repro"]
