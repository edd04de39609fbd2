#!/bin/bash
# Stand-in start script.
set -e
exec mpd --no-daemon --stdout /etc/mpd.conf
