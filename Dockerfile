# ckptd container image. CPU torch by default; for a CUDA build:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t ckptd:cuda .
# Run with the checkpoint and output folders mounted and a config at /etc/ckptd/ckptd.toml:
#   docker run -v /data:/data -v /etc/ckptd:/etc/ckptd:ro -v ckptd-state:/var/lib/ckptd ckptd
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/ckptd/.venv/bin:$PATH \
    CKPTD_CONFIG=/etc/ckptd/ckptd.toml \
    XDG_STATE_HOME=/var/lib

RUN groupadd --system --gid 10001 ckptd \
 && useradd --system --uid 10001 --gid ckptd --home-dir /var/lib/ckptd --create-home ckptd

WORKDIR /opt/ckptd
COPY pyproject.toml README.md ./
COPY deploy ./deploy
COPY migrations ./migrations
COPY ckptd ./ckptd
# The same install script as the README's `make` targets (CI runs it through `make test`).
RUN PYTHON=python3 TORCH_SPEC="${TORCH_SPEC}" TORCH_INDEX_URL="${TORCH_INDEX_URL}" \
    deploy/install.sh /opt/ckptd/.venv

USER ckptd
VOLUME ["/var/lib/ckptd"]
EXPOSE 9464
HEALTHCHECK --interval=60s --timeout=20s --start-period=120s --retries=3 \
  CMD ["ckptd", "health"]
# Exec form: ckptd is PID 1 and gets docker stop's SIGTERM itself (no shell in between).
ENTRYPOINT ["ckptd"]
CMD ["run"]
