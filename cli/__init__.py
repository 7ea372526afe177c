"""``defeah-db``: one command line for the project's jobs (``python -m cli`` runs it too).

It sits on top of both packages (``cli -> web -> dal``): the data layer never imports it, and
``python -m web`` and ``defeah-db serve`` share ``web.app.run_server``.
"""
