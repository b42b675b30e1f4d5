# syntax=docker/dockerfile:1
# Build stage: a wheel of tokenscale and its dependencies.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: only the wheels, a non-root user, nothing writable but /tmp.
FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOKENSCALE_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels tokenscale \
    && rm -rf /wheels \
    && groupadd --gid 10001 tokenscale \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tokenscale
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["tokenscale"]
CMD ["run"]
