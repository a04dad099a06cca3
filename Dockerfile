# uc-edge container image: a builder stage makes a self-contained virtualenv, the runtime stage carries
# only that venv, libopus and a non-root user.
#
#   docker build -t uc-edge .
#   docker run --rm -p 5060:5060/udp -p 5060:5060/tcp -p 8080:8080 uc-edge            # serve
#   docker run --rm uc-edge migrate | doctor | accounts add alice --password …        # other commands
#
# See deploy/README.md for the production-like stack (PostgreSQL, Redis, Kafka, MinIO).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder -----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Compilers and headers only for dependencies without a wheel for this platform (opuslib is an sdist;
# on arm64 more may build from source). Debian versions float within bookworm on purpose.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential pkg-config libffi-dev libssl-dev libopus-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --upgrade "pip>=24" "setuptools>=68" "wheel>=0.43"

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# Then the project itself, as a wheel (not editable: the runtime stage has no source tree).
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-cache-dir --no-deps /tmp/wheels/uc_edge-*.whl \
    && uc-edge --help > /dev/null

# --- runtime -----------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="uc-edge" \
      org.opencontainers.image.description="SIP/WebRTC media edge server" \
      org.opencontainers.image.licenses="Apache-2.0"

# libopus0: opuslib loads the system libopus through ctypes.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libopus0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 ucedge \
    && useradd --system --uid 10001 --gid ucedge --home-dir /home/ucedge --create-home \
       --shell /usr/sbin/nologin ucedge

COPY --from=builder /opt/venv /opt/venv

# Inside a container the server must listen on all interfaces (the defaults are loopback only).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UC_EDGE_SIP_HOST=0.0.0.0 \
    UC_EDGE_HTTP_HOST=0.0.0.0 \
    UC_EDGE_LOG_FORMAT=json

# Numeric, so orchestrators can verify runAsNonRoot without resolving the name.
USER 10001:10001
WORKDIR /home/ucedge

# SIP UDP/TCP, SIP TLS (when UC_EDGE_TLS_CERT/UC_EDGE_TLS_KEY are set), HTTP API + /sip WebSocket,
# RTP/RTCP media (UC_EDGE_RTP_PORT_MIN..UC_EDGE_RTP_PORT_MAX).
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp 20000-29999/udp

# /healthz answers while the process is alive; python is in the image, curl is not needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('UC_EDGE_HTTP_PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["uc-edge"]
CMD ["serve"]
