# The one image every service in docker-compose.yml runs.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY templates ./templates
COPY worker.py ./
RUN pip install . && useradd --system --home /app newsletter && mkdir -p /app/var \
    && chown newsletter /app/var
USER newsletter
EXPOSE 8000
CMD ["newsletter", "api", "--port", "8000"]
