#!/usr/bin/env bash
# Checks `omnihub sim payments` against Stripe's official Python library (a pinned version):
# makes a venv in target/stripe-compat-venv if missing, builds the omnihub binary, starts the
# simulator on a free port, runs stripe_python.py against it and stops the simulator on exit.
#
# Needs python3 (with venv) and access to PyPI the first time. OMNIHUB_BIN overrides the binary
# (then nothing is built).
set -euo pipefail

STRIPE_PYTHON_VERSION=16.1.0
SECRET_KEY=sk_test_compat

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

venv="$root/target/stripe-compat-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import stripe, sys; sys.exit(stripe.VERSION != '$STRIPE_PYTHON_VERSION')" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "stripe==$STRIPE_PYTHON_VERSION"
fi

bin="${OMNIHUB_BIN:-}"
if [ -z "$bin" ]; then
    # A no-op when the binary is fresh; never test a stale one.
    cargo build --quiet --bin omnihub
    bin="$root/target/debug/omnihub"
fi

tmp="$(mktemp -d)"
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ]; then
        kill "$sim_pid" 2>/dev/null || true
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# Flags win over any OMNIHUB_SIM_PAYMENTS_* in the environment.
"$bin" sim payments --listen 127.0.0.1:0 --secret-key "$SECRET_KEY" \
    --webhook-secret whsec_compat >"$tmp/out" 2>"$tmp/err" &
sim_pid=$!

base=""
for _ in $(seq 1 300); do
    base="$(sed -n 's/^payments simulator listening on //p' "$tmp/out" | head -n 1)"
    if [ -n "$base" ]; then
        break
    fi
    if ! kill -0 "$sim_pid" 2>/dev/null; then
        echo "the simulator exited before listening:" >&2
        cat "$tmp/err" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "the simulator printed no address within 30 s:" >&2
    cat "$tmp/err" >&2
    exit 1
fi

"$venv/bin/python" "$root/simulators/compat/stripe_python.py" --base-url "$base" --secret-key "$SECRET_KEY"
