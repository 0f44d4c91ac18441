# brainalign: one image for the whole toolchain (CPU, or GPU with `docker run --gpus all`, which
# needs the NVIDIA container toolkit on the host; CUDA comes with the PyPI torch wheels).
FROM python:3.11-slim-bookworm

# System packages: libsndfile (soundfile), git (DVC, --version), make, TeX Live + latexmk (paper).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates git make libsndfile1 \
      latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra \
      texlive-fonts-recommended lmodern \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 brainalign
WORKDIR /home/brainalign/brainalign
RUN chown brainalign:brainalign /home/brainalign/brainalign
USER brainalign

# The locked dependencies first (cached layer), then the project itself.
COPY --chown=brainalign:brainalign pyproject.toml uv.lock README.md ./
RUN python3 -m venv .venv \
 && .venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check uv==0.13.8 \
 && .venv/bin/uv sync --frozen --no-install-project --no-cache
COPY --chown=brainalign:brainalign . .
RUN .venv/bin/uv sync --frozen --no-cache && touch .venv/bin/.synced

ARG GIT_COMMIT=unknown
ARG LOCK_SHA256=unknown
LABEL org.opencontainers.image.title="brainalign" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.brainalign.lock-sha256="${LOCK_SHA256}"
ENV PATH=/home/brainalign/brainalign/.venv/bin:${PATH} \
    BRAINALIGN_GIT_COMMIT=${GIT_COMMIT} \
    BRAINALIGN_LOCK_SHA256=${LOCK_SHA256}

CMD ["dvc", "repro"]
