# syntax=docker/dockerfile:1.7
# One image, several commands: `onefunnel ingest`, `sync`, `metrics` (docker-compose.yml runs each
# as a service of its own), `run` for all three in one container, `migrate`, `replay`.
# tests/deploy/test_compose.py runs this file's build steps (COPY, RUN) in a throwaway venv, then
# the installed command and the HEALTHCHECK script below.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY shared ./shared
COPY services ./services
# A regular (non-editable) install into a venv that the runtime stage copies whole.
RUN python -m venv /opt/onefunnel \
 && /opt/onefunnel/bin/pip install --no-cache-dir --disable-pip-version-check /src

FROM python:3.11-slim
ENV PATH=/opt/onefunnel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ONEFUNNEL_INGEST_HOST=0.0.0.0 \
    ONEFUNNEL_SYNC_HOST=0.0.0.0 \
    ONEFUNNEL_METRICS_HOST=0.0.0.0
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/onefunnel onefunnel
COPY --from=build /opt/onefunnel /opt/onefunnel
# Healthy when this container's service answers /healthz. One container serves one port (or all
# three with `run`, where one server stopping stops the process), so any answer is the answer.
COPY --chmod=0755 <<'EOF' /opt/onefunnel/bin/onefunnel-healthcheck
#!/opt/onefunnel/bin/python
import os
import sys
import urllib.request

for name, default in (("INGEST", "8000"), ("SYNC", "8001"), ("METRICS", "8002")):
    port = os.environ.get(f"ONEFUNNEL_{name}_PORT", default)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        continue
sys.exit(1)
EOF
USER onefunnel
# Without ONEFUNNEL_DATABASE_URL and ONEFUNNEL_BUS=kafka, state lives in .onefunnel/ here.
WORKDIR /var/lib/onefunnel
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["onefunnel-healthcheck"]
ENTRYPOINT ["onefunnel"]
CMD ["run"]
