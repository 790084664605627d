#!/bin/sh
# Makes the secret files deploy/cluster/compose.yaml mounts, with fresh random values, in
# deploy/cluster/secrets/ (readable by you only; git ignores them). Existing files are kept, so
# running it again changes nothing; delete a file to make it anew.
#
#   sh deploy/cluster/make-secrets.sh
#
# The containers' users must read the files: compose mounts them as they are, so they are made
# readable by all in a directory only you can enter.
set -eu

dir="$(cd "$(dirname "$0")" && pwd)/secrets"
mkdir -p "$dir"
chmod 0711 "$dir"

random() {
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40
}

# write NAME VALUE: the file NAME with VALUE, unless it exists.
write() {
    if [ -e "$dir/$1" ]; then
        echo "kept    secrets/$1"
    else
        (umask 0022 && printf '%s' "$2" >"$dir/$1")
        echo "made    secrets/$1"
    fi
}

if [ -e "$dir/postgres_password" ]; then
    password="$(cat "$dir/postgres_password")"
else
    password="$(random)"
fi
write postgres_password "$password"
# The hub's URL holds the same password: PostgreSQL's user `omnihub`, database `omnihub`.
write OMNIHUB_HUB_CLUSTER__POSTGRES_URL "postgres://omnihub:$password@postgres:5432/omnihub"
write OMNIHUB_HUB_CLUSTER__NATS_URL "nats://nats:4222"
# The nodes' calls to each other's actors (webhooks, sign-in merges, the sweeper).
write OMNIHUB_HUB_CLUSTER__SECRET "$(random)"
write OMNIHUB_HUB_ADMIN_TOKEN "$(random)"
write OMNIHUB_HUB_OPS_TOKEN "$(random)"
