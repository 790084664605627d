// Omnihub POS: the small script of the till pages (embedded in the edge node). The pages work
// without it; it adds the PIN keypad, a scan field that keeps focus, the EAN-13 check before a
// scan is sent, change due as the cash is typed, the online/offline badge, hold and recall of a
// sale in this browser, and the print buttons.
(function () {
  "use strict";
  var $ = function (sel, root) { return (root || document).querySelector(sel); };

  // PIN keypad: taps type into the PIN field; the keyboard works as usual.
  var pin = $("[data-pin]");
  var pad = $("[data-keypad]");
  if (pin && pad) {
    pad.addEventListener("click", function (e) {
      var key = e.target.closest("[data-key]");
      if (!key) return;
      var k = key.getAttribute("data-key");
      if (k === "clear") pin.value = "";
      else if (k === "back") pin.value = pin.value.slice(0, -1);
      else if (pin.value.length < 8) pin.value += k;
      pin.focus();
    });
  }

  // EAN-13: twelve digits weighted 1, 3, 1, 3, … decide the thirteenth.
  function ean13Problem(code) {
    if (!/^\d+$/.test(code)) return null; // a typed SKU: the node looks it up
    if (code.length !== 13) return "'" + code + "' is not an EAN-13 barcode: it has 13 digits, this has " + code.length + ".";
    var sum = 0;
    for (var i = 0; i < 12; i++) sum += Number(code[i]) * (i % 2 ? 3 : 1);
    var check = (10 - (sum % 10)) % 10;
    if (Number(code[12]) !== check) return "'" + code + "' is not a valid EAN-13 barcode: its check digit is " + code[12] + ", it should be " + check + ". Scan it again or type the SKU.";
    return null;
  }

  // The scan field keeps focus (keyboard-wedge scanners type digits + Enter) unless the clerk
  // is typing somewhere else.
  var scan = $("[data-scan]");
  var scanForm = $("[data-scan-form]");
  if (scan && scanForm) {
    var errorBox = $("[data-scan-error]");
    scanForm.addEventListener("submit", function (e) {
      var problem = ean13Problem(scan.value.trim());
      if (problem) {
        e.preventDefault();
        errorBox.textContent = problem;
        errorBox.hidden = false;
        scan.select();
      }
    });
    document.addEventListener("click", function (e) {
      if (!e.target.closest("input, button, a, summary, select, textarea, label")) scan.focus();
    });
    scan.focus();
  }

  // Change due while the cash given is typed (the node computes the real change on the sale).
  var totals = $("[data-total-minor]");
  var given = $("[data-given]");
  var change = $("[data-change]");
  if (totals && given && change) {
    var exp = Number(totals.getAttribute("data-exponent")) || 0;
    var total = Number(totals.getAttribute("data-total-minor")) || 0;
    given.addEventListener("input", function () {
      var m = given.value.trim().replace(",", ".").match(/^(\d+)(?:\.(\d*))?$/);
      if (!m || (m[2] || "").length > exp) { change.hidden = true; return; }
      var minor = Number(m[1]) * Math.pow(10, exp) + Number(((m[2] || "") + "000000").slice(0, exp) || 0);
      var diff = minor - total;
      var text = (Math.abs(diff) / Math.pow(10, exp)).toFixed(exp);
      change.textContent = diff >= 0 ? "Change due: " + text : "Short: " + text;
      change.className = diff >= 0 ? "change" : "change short";
      change.hidden = false;
    });
  }

  // Split tender: once the card part is typed, the cash field says what cash must cover (the
  // node checks the real amounts; change comes from the cash part only).
  var splitCard = $("[data-split-card]");
  var splitCash = $("[data-split-cash]");
  if (totals && splitCard && splitCash) {
    var sExp = Number(totals.getAttribute("data-exponent")) || 0;
    var sTotal = Number(totals.getAttribute("data-total-minor")) || 0;
    splitCard.addEventListener("input", function () {
      var m = splitCard.value.trim().replace(",", ".").match(/^(\d+)(?:\.(\d*))?$/);
      if (!m || (m[2] || "").length > sExp) { splitCash.placeholder = "the rest, or more"; return; }
      var minor = Number(m[1]) * Math.pow(10, sExp) + Number(((m[2] || "") + "000000").slice(0, sExp) || 0);
      var rest = Math.max(sTotal - minor, 0);
      splitCash.placeholder = "at least " + (rest / Math.pow(10, sExp)).toFixed(sExp);
    });
  }

  // Online/offline badge from the node's sync state. The poll only looks at the session (it
  // does not keep it alive); once the session is over, the page goes back to the sign-in.
  var badge = $("[data-sync]");
  if (badge && document.body.getAttribute("data-page") !== "signin") {
    var poll = function () {
      fetch("/pos/status", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (s) {
          badge.className = "sync " + (s.online ? "online" : "offline");
          badge.textContent = (s.online ? "Online" : "Offline") + (s.pending ? " · " + s.pending + " unsynced" : "");
        })
        .catch(function (status) {
          if (status === 401) { location.href = "/pos"; return; }
          badge.className = "sync offline";
          badge.textContent = "Node unreachable";
        });
    };
    setInterval(poll, 5000);
  }

  // Hold and recall: a held sale is its cart and coupons, kept in this browser only.
  var sale = $("[data-cart]");
  var holdBtn = $("[data-hold]");
  var held = $("[data-held]");
  var KEY = "omnihub-pos-held";
  var load = function () { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; } };
  var save = function (list) { try { localStorage.setItem(KEY, JSON.stringify(list)); } catch (e) { /* private mode */ } };
  if (sale && holdBtn && held) {
    var cart = sale.getAttribute("data-cart");
    var coupons = sale.getAttribute("data-coupons");
    if (cart) {
      holdBtn.hidden = false;
      holdBtn.addEventListener("click", function () {
        var list = load();
        list.push({ cart: cart, coupons: coupons, at: new Date().toLocaleTimeString() });
        save(list.slice(-10));
        location.href = "/pos/till";
      });
    }
    load().forEach(function (h, i) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "btn btn-ghost";
      b.textContent = "Recall sale held " + h.at;
      b.addEventListener("click", function () {
        var list = load();
        list.splice(i, 1);
        save(list);
        location.href = "/pos/till?cart=" + encodeURIComponent(h.cart) + "&coupons=" + encodeURIComponent(h.coupons || "");
      });
      held.appendChild(b);
    });
  }

  document.querySelectorAll("[data-print]").forEach(function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
})();
