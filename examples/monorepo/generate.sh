#!/bin/sh
# Generates the many small files of this example's context: 2,000 source
# files (600 modules per service, 200 shared library files), plus files that
# .dockerignore keeps out of the context (logs, node_modules, scratch
# directories). Deterministic and idempotent: run it again and nothing
# changes. Only the hand-written files are committed; see .gitignore.
#
#   examples/monorepo/generate.sh        # or: sh generate.sh DIR
set -eu
dir=${1:-$(dirname "$0")}
cd "$dir"

i=1
while [ "$i" -le 200 ]; do
  n=$(printf '%04d' "$i")
  mkdir -p shared/lib/gen
  printf 'lib_%s() { echo "lib %s"; }\n' "$n" "$n" > "shared/lib/gen/lib_$n.sh"
  i=$((i + 1))
done

for svc in api worker web; do
  i=1
  while [ "$i" -le 600 ]; do
    n=$(printf '%04d' "$i")
    d="services/$svc/src/gen/m$(( (i - 1) / 100 ))"
    mkdir -p "$d"
    printf '%s_mod_%s() { echo "%s module %s"; }\n' "$svc" "$n" "$svc" "$n" > "$d/mod_$n.sh"
    i=$((i + 1))
  done
  # Kept out of the context by .dockerignore.
  mkdir -p "services/$svc/node_modules/left-pad" "services/$svc/.cache"
  echo 'module.exports = 1' > "services/$svc/node_modules/left-pad/index.js"
  echo 'stale' > "services/$svc/.cache/build.tmp"
  echo "debug log of $svc" > "services/$svc/debug.log"
done
