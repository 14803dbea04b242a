# Home Panel backend.
#   docker build -t homepanel .
#   docker run --env-file .env -p 8000:8000 -v ./data:/app/data -v ./logs:/app/logs homepanel
# or, simpler: docker compose up -d (see docker-compose.yml).

# --- build: a virtualenv with the dependencies, then the package ----------------------------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build

# Dependencies first, from pyproject.toml alone: editing the source does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# Then the package itself (README.md is its long description, so the build needs it).
COPY README.md ./
COPY src ./src
RUN pip install --no-cache-dir .

# --- runtime: the virtualenv, a non-root user, nothing else ---------------------------------
FROM python:3.11-slim

# The user's ids; match them to the owner of the bind-mounted ./data and ./logs on the host
# (docker compose build --build-arg APP_UID=$(id -u) --build-arg APP_GID=$(id -g)).
ARG APP_UID=1000
ARG APP_GID=1000

ENV ENV=production \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATABASE_PATH=/app/data/metrics.db \
    LOG_DIR=/app/logs

RUN groupadd --system --gid "${APP_GID}" homepanel \
    && useradd --system --uid "${APP_UID}" --gid homepanel --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin homepanel \
    && mkdir -p /app/data /app/logs \
    && chown homepanel:homepanel /app/data /app/logs \
    && chmod 0750 /app/data /app/logs

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# After the chown: Docker copies this ownership into a fresh named volume.
VOLUME ["/app/data", "/app/logs"]
USER homepanel
EXPOSE 8000

# python:3.11-slim has no curl. A proxy from the environment must not catch 127.0.0.1, hence
# ProxyHandler({}). 503 (database unusable) raises HTTPError: exit 1, unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.build_opener(r.ProxyHandler({})).open('http://127.0.0.1:8000/health', timeout=4)"]

# Exec form: uvicorn (one worker, inside `homepanel serve`) gets SIGTERM itself and shuts down
# gracefully within 5 s, under Docker's 10 s before SIGKILL.
STOPSIGNAL SIGTERM
CMD ["homepanel", "serve"]
