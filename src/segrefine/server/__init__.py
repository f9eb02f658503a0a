"""The web app: FastAPI JSON API over the session engine and the NiiVue viewer.

``make_app`` builds it (``app.py``), ``routes.py`` holds the endpoints,
``models.py`` the request and answer models, ``store.py`` the persisted
sessions by random id. FastAPI and uvicorn are imported only here, never by the
rest of the package.
"""

from segrefine.server.app import make_app, serve

__all__ = ["make_app", "serve"]
