SERVICE=api
log "listening on :${PORT:-8080} with $MODULES handlers"
