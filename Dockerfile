# One image for every videoq role: worker, simulator, flower, CLI.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producers ./producers
COPY simulator ./simulator
RUN pip install . && useradd --system --uid 10001 videoq && mkdir /data && chown videoq /data
USER videoq

CMD ["videoq", "worker"]
