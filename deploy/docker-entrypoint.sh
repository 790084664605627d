#!/bin/sh
# The image's entrypoint: exports each secret file named like a setting as that variable, then
# runs omnihub with the container's arguments.
#
# A file $OMNIHUB_SECRETS_DIR/OMNIHUB_HUB_CLUSTER__POSTGRES_URL (default directory /run/secrets,
# where compose and swarm mount secrets) becomes the variable OMNIHUB_HUB_CLUSTER__POSTGRES_URL,
# so a secret never has to sit in the compose file, the image or `docker inspect`'s environment.
# Only names of OMNIHUB_HUB_* and OMNIHUB_EDGE_* settings are taken; a trailing newline is
# dropped. Values are never printed.
set -eu

dir="${OMNIHUB_SECRETS_DIR:-/run/secrets}"
if [ -d "$dir" ]; then
    for file in "$dir"/OMNIHUB_HUB_* "$dir"/OMNIHUB_EDGE_*; do
        [ -f "$file" ] || continue
        name="${file##*/}"
        case "$name" in
            *[!A-Z0-9_]*)
                echo "docker-entrypoint: ignoring $file: not a setting's variable name" >&2
                continue
                ;;
        esac
        if ! value="$(cat "$file")"; then
            echo "docker-entrypoint: cannot read $file" >&2
            exit 1
        fi
        export "$name=$value"
    done
fi

exec /usr/local/bin/omnihub "$@"
