# Shared by every service.
log() { echo "[$SERVICE] $*"; }
