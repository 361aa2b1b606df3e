"""The transport: the embedded nats-server, connections, subject names, per-role credentials
and the artifact object store. It knows nothing of workflows."""
