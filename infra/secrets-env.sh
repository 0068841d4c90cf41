#!/bin/sh
# OpenFaaS mounts each secret as a file, /var/openfaas/secrets/<name>; the engine reads
# its settings from the environment. A file named after a setting in lower case with
# dashes (redis-url -> REDIS_URL, mastery-jwt-secret -> MASTERY_JWT_SECRET) becomes that
# variable, unless the variable is already set. Then the command runs in its place.
set -eu
dir="${MASTERY_SECRETS_DIR:-/var/openfaas/secrets}"
if [ -d "$dir" ]; then
    for file in "$dir"/*; do
        [ -f "$file" ] || continue
        name=$(basename "$file" | tr 'a-z.-' 'A-Z__')
        case "$name" in
            *[!A-Z0-9_]* | [0-9]*) continue ;; # not a variable name
        esac
        eval "set_already=\${$name+yes}"
        if [ -z "$set_already" ]; then
            value=$(cat "$file")
            export "$name=$value"
        fi
    done
fi
exec "$@"
