# gnomon: one image for every service; the command picks it (api, scheduler, worker, migrate).
#   docker build -t gnomon .        docker run --rm gnomon --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY application ./application
COPY adapters ./adapters
COPY entrypoints ./entrypoints
COPY migrations ./migrations
RUN pip install . && rm -rf /app/build

# Never run as root; the services write nothing to disk. A gnomon.toml mounted at /app/gnomon.toml is read.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gnomon
USER gnomon

EXPOSE 8000
ENTRYPOINT ["gnomon"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
