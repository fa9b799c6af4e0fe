"""What a driver calls: deployments and graphs, building applications, starting, running,
deleting and shutting down Serve (re-exported by `serve`)."""
