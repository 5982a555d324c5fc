"""The web dashboard (issue 21): ``liteq.web.app(db)`` is a WSGI application to mount
in a web app of one's own, and ``liteq web`` serves it (:func:`serve`).

Server-rendered HTML escaped with :func:`html.escape`, inline SVG charts, one small
stylesheet and one small script shipped in the package: no dependency beyond the
standard library, and nothing loaded from the network.
"""

from .app import Dashboard, app, shown_path
from .server import is_local, serve

__all__ = ["app", "Dashboard", "serve", "is_local", "shown_path"]
