#! /usr/bin/env sh
# Stand-in start script.
set -e
exec gunicorn -k uvicorn.workers.UvicornWorker -c /gunicorn_conf.py main:app
