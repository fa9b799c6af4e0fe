"""proxy: the HTTP proxy actor (uvicorn + compiled prefix trie), built on `actors`.

Not built yet: see the HTTP ingress issue. The package exists so the distribution's
layout is final from the start.
"""

__all__: list[str] = []
