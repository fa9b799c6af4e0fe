"""The data plane: this process's client of Serve, handles and responses, routers, the
replica actor and its streams, the HTTP proxy actor, and what runs in replicas (ingress
apps, batching, deployment-graph plans)."""
