SERVICE=worker
log "processing queue ${QUEUE:-default} with $MODULES jobs"
