# One image for every claimcheck role; compose.yaml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bus ./bus
COPY agents ./agents
COPY projections ./projections
COPY handoff_schemas ./handoff_schemas
RUN pip install --no-cache-dir ".[postgres]"
ENV CLAIMCHECK_STATE_DIR=/var/lib/claimcheck
ENTRYPOINT ["claimcheck"]
