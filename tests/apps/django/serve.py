#!/usr/bin/env python
"""Migrates the SQLite database, then serves the app on 127.0.0.1:PORT with Django's own
threaded development server classes (what `manage.py runserver --noreload` uses), and
prints `listening on 127.0.0.1:PORT` once the socket is bound.

Usage: PORT=8000 REDIS_URL=... DJANGO_DB_PATH=... python serve.py
"""

import errno
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sgapp.settings")
    port = int(os.environ["PORT"])

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    try:
        httpd = ThreadedWSGIServer(("127.0.0.1", port), WSGIRequestHandler)
    except OSError as e:
        print(f"listen failed: {errno.errorcode.get(e.errno, e.errno)} {e}", file=sys.stderr, flush=True)
        sys.exit(3)
    httpd.daemon_threads = True
    httpd.set_app(get_wsgi_application())
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
