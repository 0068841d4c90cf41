"""The HTTP edge every function shares: the function app, auth, problems, handlers.

A function imports the modules it uses (``mastery.web.app``, its handler's): nothing here
loads the others, so a cold start pays only for its own.
"""

__all__: list[str] = []
