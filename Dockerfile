# One image for every claimcheck role, built once; compose.yaml picks the command.
# Everything is installed here: nothing is installed when a container starts.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY agents ./agents
COPY projections ./projections
COPY handoff_schemas ./handoff_schemas
RUN pip install --no-cache-dir ".[postgres]"
# Every role runs unprivileged, as uid 10001, and can write only its state directory.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin claimcheck \
    && mkdir -p /var/lib/claimcheck/tools \
    && chown -R claimcheck /var/lib/claimcheck
USER 10001
ENV CLAIMCHECK_STATE_DIR=/var/lib/claimcheck
ENTRYPOINT ["claimcheck"]
