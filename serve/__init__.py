"""serve: deployments, the controller, replicas, handles (built on `actors` and `proxy`).

Not built yet: see the serve-core issue. The package exists so the distribution's layout
is final from the start.
"""

__all__: list[str] = []
