"""r3nb's hub service: one process per hub holding the provider keys, the engine and the store.

Single-user servers in relay mode (``r3nb/server/relay.py``) forward their API and SSE
here with two tokens; ``identity.py`` turns them into a person, ``access.py`` decides
what that person may see, ``handlers.py`` is the HTTP face, ``app.py`` the process.
Nothing here is imported by a single-user server except ``wire.py``.
"""
