#!/usr/bin/env python3
"""Checks `omnihub sim payments` with Stripe's official Python library.

Points the `stripe` package at the simulator (`--base-url`, `--secret-key`) and goes through
what the hub uses: Checkout Sessions (create, retrieve with expand, pay through the simulator's
test API, expire), PaymentIntents (automatic and manual capture, cancel, declines), Refunds
(partial, full, too much), idempotent replays and mismatches, authentication errors, and a
webhook signature checked with `stripe.Webhook.construct_event`. Prints one line per check and
exits non-zero if any failed. Run it through `run.sh`, which starts the simulator.
"""

import argparse
import http.server
import json
import queue
import sys
import threading
import time
import urllib.request
import uuid

import stripe

failures = []


def check(name, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + name + ("" if condition else f"  ({detail})"))
    if not condition:
        failures.append(name)


def expect_error(name, error_class, call, **expected):
    """Runs `call`, which must raise `error_class` with the given attributes."""
    try:
        call()
    except error_class as e:
        got = {k: getattr(e, k, None) for k in expected}
        if "decline_code" in expected:
            got["decline_code"] = e.error.decline_code if e.error else None
        check(name, got == expected, f"got {got}")
        return e
    except stripe.StripeError as e:
        check(name, False, f"got {type(e).__name__}: {e}")
        return None
    check(name, False, "no error raised")
    return None


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook endpoint that queues (body, Stripe-Signature) and answers 200."""

    deliveries: "queue.Queue[tuple[str, str]]" = queue.Queue()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode("utf-8")
        self.deliveries.put((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def wait_for_event(event_type, secret, timeout=15.0):
    """The first delivered event of `event_type`, verified with construct_event."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            body, signature = Receiver.deliveries.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if json.loads(body).get("type") == event_type:
            return body, signature, stripe.Webhook.construct_event(body, signature, secret)
    return None, None, None


def sim_pay(base_url, session_id, card):
    """Pays a session through the simulator's test-only API (not part of Stripe)."""
    request = urllib.request.Request(
        f"{base_url}/_sim/checkout/sessions/{session_id}/pay",
        data=json.dumps({"card": card}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def line_items():
    return [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": 1250,
                "product_data": {"name": "Blue mug"},
            },
            "quantity": 2,
        },
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": 499,
                "product_data": {"name": "Tea, 100 g", "description": "Loose leaf"},
            },
            "quantity": 1,
        },
    ]


def checkout_sessions(base_url, secret):
    order = f"order-{uuid.uuid4()}"
    session = stripe.checkout.Session.create(
        mode="payment",
        line_items=line_items(),
        success_url="https://shop.example/thanks?session={CHECKOUT_SESSION_ID}",
        cancel_url="https://shop.example/basket",
        client_reference_id=order,
        metadata={"checkout_id": order, "channel": "web"},
        expires_at=int(time.time()) + 3600,
    )
    check("session created", isinstance(session, stripe.checkout.Session) and session.id.startswith("cs_test_"), session.id)
    check("session amount_total = sum of lines", session.amount_total == 2 * 1250 + 499, session.amount_total)
    check("session open and unpaid", (session.status, session.payment_status) == ("open", "unpaid"))
    check("session url is the hosted page", session.url == f"{base_url}/pay/{session.id}", session.url)
    check("session metadata round-trips", session.metadata.to_dict() == {"checkout_id": order, "channel": "web"}, session.metadata)

    fetched = stripe.checkout.Session.retrieve(session.id, expand=["line_items"])
    names = [item.description for item in fetched.line_items.data]
    check("session retrieved with expand[]=line_items", names == ["Blue mug", "Tea, 100 g"], names)

    status, paid = sim_pay(base_url, session.id, "4242424242424242")
    check("session paid through /_sim", status == 200 and paid["status"] == "complete", paid)
    fetched = stripe.checkout.Session.retrieve(session.id, expand=["payment_intent"])
    check("session complete and paid", (fetched.status, fetched.payment_status) == ("complete", "paid"))
    intent = fetched.payment_intent
    check("session payment_intent expanded and succeeded", isinstance(intent, stripe.PaymentIntent) and intent.status == "succeeded", intent)

    body, signature, event = wait_for_event("checkout.session.completed", secret)
    check("webhook delivered and verified by construct_event", event is not None and event.data.object.id == session.id)
    if event is not None:
        check("event shape", event.object == "event" and event.id.startswith("evt_") and event.livemode is False)
        try:
            stripe.Webhook.construct_event(body.replace(order, order + "x"), signature, secret)
            check("tampered payload rejected", False, "accepted")
        except stripe.SignatureVerificationError:
            check("tampered payload rejected", True)

    other = stripe.checkout.Session.create(
        mode="payment",
        line_items=line_items(),
        success_url="https://shop.example/thanks",
    )
    expired = stripe.checkout.Session.expire(other.id)
    check("session expired", expired.status == "expired" and expired.url is None, expired.status)
    expect_error(
        "expiring a complete session is an invalid request",
        stripe.InvalidRequestError,
        lambda: stripe.checkout.Session.expire(session.id),
        http_status=400,
    )
    expect_error(
        "expires_at beyond 24 hours is refused",
        stripe.InvalidRequestError,
        lambda: stripe.checkout.Session.create(
            mode="payment",
            line_items=line_items(),
            success_url="https://shop.example/thanks",
            expires_at=int(time.time()) + 25 * 3600,
        ),
        http_status=400,
        param="expires_at",
    )
    listed = stripe.checkout.Session.list(limit=2)
    check("sessions listed", listed.object == "list" and len(listed.data) == 2)


def payment_intents():
    intent = stripe.PaymentIntent.create(amount=2000, currency="eur", payment_method="pm_card_visa", confirm=True)
    check("intent confirmed with pm_card_visa", intent.status == "succeeded" and intent.amount_received == 2000, intent.status)
    check("intent has a charge", (intent.latest_charge or "").startswith("ch_"), intent.latest_charge)

    manual = stripe.PaymentIntent.create(amount=3000, currency="eur", payment_method="pm_card_visa", capture_method="manual")
    check("manual intent requires confirmation", manual.status == "requires_confirmation", manual.status)
    manual = stripe.PaymentIntent.confirm(manual.id)
    check("manual intent authorized", manual.status == "requires_capture" and manual.amount_capturable == 3000, manual.status)
    manual = stripe.PaymentIntent.capture(manual.id, amount_to_capture=2500)
    check("manual intent captured in part", manual.status == "succeeded" and manual.amount_received == 2500, manual.status)

    pending = stripe.PaymentIntent.create(amount=100, currency="eur")
    canceled = stripe.PaymentIntent.cancel(pending.id, cancellation_reason="abandoned")
    check("intent canceled", canceled.status == "canceled" and canceled.cancellation_reason == "abandoned", canceled.status)

    expect_error(
        "pm_card_chargeDeclined raises CardError",
        stripe.CardError,
        lambda: stripe.PaymentIntent.create(amount=500, currency="eur", payment_method="pm_card_chargeDeclined", confirm=True),
        http_status=402,
        code="card_declined",
        decline_code="generic_decline",
    )
    error = expect_error(
        "pm_card_chargeDeclinedInsufficientFunds raises CardError",
        stripe.CardError,
        lambda: stripe.PaymentIntent.create(
            amount=500, currency="eur", payment_method="pm_card_chargeDeclinedInsufficientFunds", confirm=True
        ),
        http_status=402,
        code="card_declined",
        decline_code="insufficient_funds",
    )
    if error is not None:
        failed = stripe.PaymentIntent.retrieve(error.error.payment_intent.id)
        check(
            "declined intent keeps last_payment_error",
            failed.status == "requires_payment_method" and failed.last_payment_error.decline_code == "insufficient_funds",
            failed.status,
        )
    expect_error(
        "unknown intent is resource_missing",
        stripe.InvalidRequestError,
        lambda: stripe.PaymentIntent.retrieve("pi_missing"),
        http_status=404,
        code="resource_missing",
    )
    return intent


def refunds(intent):
    partial = stripe.Refund.create(payment_intent=intent.id, amount=500)
    check("partial refund", partial.object == "refund" and partial.amount == 500 and partial.status == "succeeded", partial)
    full = stripe.Refund.create(payment_intent=intent.id)
    check("refund of the rest", full.amount == 1500, full.amount)
    charge = stripe.Charge.retrieve(intent.latest_charge)
    check("charge fully refunded", charge.refunded and charge.amount_refunded == 2000, charge.amount_refunded)
    expect_error(
        "refunding a refunded charge fails",
        stripe.InvalidRequestError,
        lambda: stripe.Refund.create(payment_intent=intent.id, amount=1),
        http_status=400,
        code="charge_already_refunded",
    )
    other = stripe.PaymentIntent.create(amount=1000, currency="eur", payment_method="pm_card_visa", confirm=True)
    expect_error(
        "refunding more than was paid fails",
        stripe.InvalidRequestError,
        lambda: stripe.Refund.create(payment_intent=other.id, amount=1001),
        http_status=400,
        param="amount",
    )


def idempotency():
    key = f"compat-{uuid.uuid4()}"
    first = stripe.PaymentIntent.create(amount=700, currency="eur", idempotency_key=key)
    again = stripe.PaymentIntent.create(amount=700, currency="eur", idempotency_key=key)
    replayed = again.last_response.headers.get("Idempotent-Replayed")
    check("same key and parameters replay the first response", again.id == first.id and replayed == "true", (again.id, replayed))
    expect_error(
        "same key with other parameters is an IdempotencyError",
        stripe.IdempotencyError,
        lambda: stripe.PaymentIntent.create(amount=701, currency="eur", idempotency_key=key),
        http_status=400,
    )


def authentication(base_url):
    expect_error(
        "a wrong key is an AuthenticationError",
        stripe.AuthenticationError,
        lambda: stripe.PaymentIntent.list(api_key="sk_test_wrong"),
        http_status=401,
    )


def stripe_client(base_url, key, intent):
    """The StripeClient style of newer versions, beside the global one."""
    client = stripe.StripeClient(key, base_addresses={"api": base_url})
    service = client.v1.payment_intents if hasattr(client, "v1") else client.payment_intents
    fetched = service.retrieve(intent.id)
    check("StripeClient retrieves through base_addresses", fetched.id == intent.id, fetched.id)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--secret-key", required=True)
    args = parser.parse_args()
    base_url = args.base_url.rstrip("/")

    stripe.api_key = args.secret_key
    stripe.api_base = base_url
    print(f"stripe-python {stripe.VERSION} against {base_url}")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
    try:
        endpoint = stripe.WebhookEndpoint.create(url=hook_url, enabled_events=["checkout.session.completed"])
        check("webhook endpoint created with a secret", endpoint.secret.startswith("whsec_"), endpoint)
        checkout_sessions(base_url, endpoint.secret)
        intent = payment_intents()
        refunds(intent)
        idempotency()
        authentication(base_url)
        stripe_client(base_url, args.secret_key, intent)
        stripe.WebhookEndpoint.delete(endpoint.id)
    except Exception as e:  # a failure outside the checks, e.g. an unexpected error
        check("no unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        server.shutdown()

    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failed check(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
