"""Hypercorn's settings for this server, when it is run by hypercorn's own command:

    hypercorn --config python:streams.hypercorn_config streams.app:app

Hypercorn imports this module in its own process before it binds a port (it imports the app
only later, in the worker, after listening), so the server's settings are checked here: an
invalid one is one line on stderr and exit status 78 before anything is bound, in any worker
mode. The values are `streams serve`'s (streams/serve.py): bind from `DS_SERVER__HOST` and
`DS_SERVER__PORT`, a backlog of 2048, no keep-alive request cap, TLS from `DS_TLS__*`; hypercorn's
own command-line options override them. `hypercorn.toml` holds the same without the checks.
"""

from streams import serve as _serve
from streams.config_load import settings_or_exit as _settings_or_exit

_config = _serve.hypercorn_config(_settings_or_exit())

worker_class = "trio"
workers = 0  # serve from hypercorn's own process: one process owns the data directory
bind = _config.bind
backlog = _config.backlog
keep_alive_max_requests = _config.keep_alive_max_requests
graceful_timeout = _config.graceful_timeout
certfile = _config.certfile
keyfile = _config.keyfile
loglevel = _config.loglevel
errorlog = _config.errorlog  # a logger: "Running on ..." through the root logger, once

del _config, _serve, _settings_or_exit  # hypercorn copies every name left here
