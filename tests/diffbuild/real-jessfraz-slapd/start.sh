#!/bin/bash
# Stand-in for the project start script.
set -e
echo "slapd for ${LDAP_DOMAIN}"
exec /usr/sbin/slapd -h "ldap:///" -u openldap -g openldap -d 0
