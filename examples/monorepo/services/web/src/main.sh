SERVICE=web
log "serving $(ls /srv/web/static | wc -l) static files with $MODULES pages"
