// Omnihub Market: progressive enhancement only. Every page works without this script.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var SYMBOLS = { EUR: "€", USD: "$", GBP: "£" };
  var EXPONENTS = { BHD: 3, ISK: 0, JOD: 3, JPY: 0, KRW: 0, KWD: 3 };

  // Sort selects apply as soon as they change.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { if (select.form) select.form.submit(); });
  });

  var body = document.body;
  chatBox();
  var basketId = body.dataset.basketId;
  var checkout = checkoutQuotes();

  // Live basket: the hub pushes the basket as JSON whenever it changes (another tab, the app,
  // a store); the header count follows, and the basket page reloads unless it is being edited.
  // When a payment starts or ends anywhere (the basket locks or unlocks), the basket and
  // checkout pages reload; a change of the lines re-prices an open checkout form.
  if (!basketId || !("WebSocket" in window)) return;
  var version = Number(body.dataset.basketVersion || 0);
  var locked = body.dataset.basketLocked === "true";
  var onBasketPage = body.dataset.page === "basket";
  var onCheckoutPage = body.dataset.page === "checkout";
  var editing = false;
  var leaving = false;
  var delay = 1000;
  var failures = 0;

  document.addEventListener("input", function (e) {
    if (e.target && e.target.closest && e.target.closest(".line-quantity")) editing = true;
  });
  document.addEventListener("submit", function () { leaving = true; });
  window.addEventListener("pagehide", function () { leaving = true; });

  function setCount(count) {
    document.querySelectorAll("[data-basket-count]").forEach(function (el) { el.textContent = String(count); });
  }

  function offerRefresh() {
    var notices = document.getElementById("notices");
    if (!notices || document.getElementById("basket-changed")) return;
    var p = document.createElement("p");
    p.id = "basket-changed";
    p.className = "notice notice-info";
    p.setAttribute("role", "status");
    p.appendChild(document.createTextNode("Your basket changed somewhere else. "));
    var link = document.createElement("a");
    link.href = "/basket";
    link.textContent = "Show the latest basket";
    p.appendChild(link);
    notices.appendChild(p);
  }

  function onMessage(event) {
    var view;
    try { view = JSON.parse(event.data); } catch (err) { return; }
    if (!view || typeof view.version !== "number" || view.version <= version) return;
    version = view.version;
    if (typeof view.item_count === "number") setCount(view.item_count);
    var nowLocked = Boolean(view.checkout);
    if (nowLocked !== locked) {
      locked = nowLocked;
      if ((onBasketPage || onCheckoutPage) && !leaving) window.location.reload();
      return;
    }
    if (onCheckoutPage && checkout && !leaving) { checkout.requote(); return; }
    if (!onBasketPage || leaving) return;
    if (editing) offerRefresh(); else window.location.reload();
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket;
    try {
      socket = new WebSocket(scheme + window.location.host + "/api/v1/baskets/" + encodeURIComponent(basketId) + "/live");
    } catch (err) { return; }
    var opened = false;
    socket.addEventListener("open", function () {
      opened = true;
      failures = 0;
      delay = 1000;
      var note = document.getElementById("live-note");
      if (note) note.hidden = false;
    });
    socket.addEventListener("message", onMessage);
    socket.addEventListener("close", function (event) {
      // 1008 and 4xxx, or an upgrade refused again and again (the basket was merged, the
      // session ended): the page still works, it just stops being live.
      if (!opened) failures += 1;
      if (leaving || event.code === 1008 || event.code >= 4000 || failures >= 5) return;
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, 30000);
    });
  }

  connect();

  // Checkout: choosing another country or shipping method asks the hub for the new options and
  // price (the page never computes one) and shows them; without this script the "Update
  // shipping options" button does the same by reloading the form.
  function checkoutQuotes() {
    var form = document.getElementById("checkout-form");
    if (!form || !basketId || !window.fetch) return null;
    var country = form.querySelector("[data-quote-country]");
    var optionsBox = form.querySelector("[data-shipping-options]");
    var summary = form.querySelector("[data-order-summary]");
    var status = document.getElementById("shipping-status");
    var pay = form.querySelector("[data-pay]");
    var region = document.getElementById("region");
    var postal = form.querySelector("[data-postal]");
    var pickupNote = form.querySelector("[data-pickup-note]");
    var legend = form.querySelector("[data-address-legend]");
    if (!country || !optionsBox || !summary) return null;
    // The no-script button goes, so pressing Enter in a field means "Pay now".
    var update = form.querySelector("[data-update-shipping]");
    if (update && update.parentNode) update.parentNode.removeChild(update);
    var sequence = 0;

    function quoteUrl(method) {
      var url = "/api/v1/baskets/" + encodeURIComponent(basketId) + "/quote?country=" + encodeURIComponent(country.value);
      return method ? url + "&shipping_method=" + encodeURIComponent(method) : url;
    }

    function getJson(url) {
      return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (data) {
          if (!res.ok) {
            var message = data && data.error && data.error.message;
            throw new Error(message || "We could not work out the delivery options just now. Please try again.");
          }
          return data;
        });
      });
    }

    function chosenMethod() {
      var checked = form.querySelector('input[name="shipping_method"]:checked');
      return checked ? checked.value : "";
    }

    // Click-and-collect (`collect:<store>`) needs who collects, not a postal address.
    function showPostal(method) {
      if (!postal) return;
      var pickup = (method || "").indexOf("collect:") === 0;
      postal.hidden = pickup;
      if (pickupNote) pickupNote.hidden = !pickup;
      if (legend) legend.textContent = pickup ? "Who collects the order" : "Shipping address";
      ["line1", "postcode", "city"].forEach(function (id) {
        var input = document.getElementById(id);
        if (input) input.required = !pickup;
      });
      if (region) region.required = !pickup && country.value === "US";
    }

    function requote() {
      var mine = ++sequence;
      var wanted = chosenMethod();
      form.classList.add("is-loading");
      if (region) region.required = country.value === "US";
      getJson(quoteUrl("")).then(function (options) {
        var list = options.shipping_options || [];
        if (!list.length) throw new Error("Sorry, we cannot deliver this basket there. Please choose another country.");
        var method = list.some(function (o) { return o.id === wanted; }) ? wanted : list[0].id;
        return getJson(quoteUrl(method));
      }).then(function (quote) {
        if (mine !== sequence) return;
        form.classList.remove("is-loading");
        showOptions(quote.shipping_options || [], quote.breakdown && quote.breakdown.shipping.id);
        showPostal(quote.breakdown && quote.breakdown.shipping.id);
        if (quote.breakdown) showSummary(quote.breakdown);
        var label = country.options[country.selectedIndex];
        setStatus("Delivery to " + (label ? label.text : country.value), false);
        if (pay) pay.disabled = !quote.breakdown;
      }).catch(function (err) {
        if (mine !== sequence) return;
        form.classList.remove("is-loading");
        clear(optionsBox);
        setStatus(err.message, true);
        if (pay) pay.disabled = true;
      });
    }

    function setStatus(text, isError) {
      if (!status) return;
      status.textContent = text;
      status.className = isError ? "field-error" : "hint";
    }

    function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }

    function el(tag, className, text) {
      var node = document.createElement(tag);
      if (className) node.className = className;
      if (text !== undefined) node.textContent = text;
      return node;
    }

    function showOptions(list, chosen) {
      clear(optionsBox);
      list.forEach(function (o) {
        var wrap = el("div", "shipping-option");
        var input = el("input");
        input.type = "radio";
        input.name = "shipping_method";
        input.id = "ship-" + o.id;
        input.value = o.id;
        input.checked = o.id === chosen;
        var label = el("label");
        label.htmlFor = input.id;
        label.appendChild(el("span", "shipping-name", o.name));
        label.appendChild(el("span", "shipping-price", price(o.price)));
        label.appendChild(el("span", "shipping-delivery", o.delivery));
        wrap.appendChild(input);
        wrap.appendChild(label);
        optionsBox.appendChild(wrap);
      });
    }

    function row(dl, term, amount, className, sub) {
      var div = el("div", className);
      var dt = el("dt", "", term);
      if (sub) dt.appendChild(el("span", "summary-sub", sub));
      div.appendChild(dt);
      div.appendChild(el("dd", "", amount));
      dl.appendChild(div);
    }

    function showSummary(b) {
      clear(summary);
      var lines = el("ul", "summary-lines");
      b.lines.forEach(function (l) {
        var li = el("li", "summary-line");
        var media = el("span", "summary-media");
        var img = el("img");
        img.src = l.image;
        img.alt = "";
        img.width = 56;
        img.height = 56;
        media.appendChild(img);
        var qty = el("span", "summary-qty", String(l.quantity));
        qty.setAttribute("aria-hidden", "true");
        media.appendChild(qty);
        var name = el("span", "summary-name", l.name);
        name.appendChild(el("span", "summary-variant", l.variant + " · Qty " + l.quantity));
        li.appendChild(media);
        li.appendChild(name);
        li.appendChild(el("span", "summary-amount", money(l.line_total)));
        lines.appendChild(li);
      });
      summary.appendChild(lines);
      var dl = el("dl");
      row(dl, "Subtotal", money(b.subtotal));
      if (b.discount.minor !== 0) row(dl, "Discount", "-" + money(b.discount), "discount");
      row(dl, "Shipping ", price(b.shipping.price), "", b.shipping.name);
      if (!b.prices_include_tax) b.taxes.forEach(function (t) { row(dl, "Tax " + rate(t.rate_bp), money(t.tax)); });
      row(dl, "Total", money(b.total), "total");
      summary.appendChild(dl);
      if (b.prices_include_tax && b.taxes.length) {
        var taxes = el("ul", "taxes");
        b.taxes.forEach(function (t) { taxes.appendChild(el("li", "", "incl. " + rate(t.rate_bp) + " VAT " + money(t.tax))); });
        summary.appendChild(taxes);
      }
    }

    country.addEventListener("change", requote);
    form.addEventListener("change", function (e) {
      if (e.target && e.target.name === "shipping_method") {
        showPostal(e.target.value);
        requote();
      }
    });
    return { requote: requote };
  }

  // Money and rates read as the server writes them (see web/format.rs).
  function money(m) {
    var digits = m.currency in EXPONENTS ? EXPONENTS[m.currency] : 2;
    var text = String(Math.abs(m.minor));
    while (text.length <= digits) text = "0" + text;
    var whole = digits ? text.slice(0, -digits) : text;
    var amount = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (digits ? "." + text.slice(-digits) : "");
    var symbol = SYMBOLS[m.currency];
    return (m.minor < 0 ? "-" : "") + (symbol ? symbol + amount : m.currency + " " + amount);
  }

  function price(m) { return m.minor === 0 ? "Free" : money(m); }

  function rate(bp) {
    var whole = Math.floor(bp / 100);
    var fraction = bp % 100;
    if (fraction === 0) return whole + "%";
    if (fraction % 10 === 0) return whole + "." + fraction / 10 + "%";
    return whole + "." + (fraction < 10 ? "0" : "") + fraction + "%";
  }
  // The "Ask us" chat box: posts each message to /api/v1/chat with the page's CSRF token (the
  // session and basket are the page's cookies) and shows the answers. A changed basket updates
  // the header count; the live basket refreshes the basket page.
  function chatBox() {
    var box = document.querySelector("[data-chat]");
    if (!box || !window.fetch || !window.JSON) return;
    var toggle = box.querySelector(".chat-toggle");
    var panel = box.querySelector(".chat-panel");
    var close = box.querySelector(".chat-close");
    var log = box.querySelector(".chat-log");
    var chips = box.querySelector(".chat-suggestions");
    var form = box.querySelector(".chat-form");
    var input = box.querySelector("#chat-input");
    var conversation = null;
    var opened = false;
    var busy = false;
    try { conversation = window.sessionStorage.getItem("omnihub-chat"); } catch (err) { conversation = null; }
    box.hidden = false;

    function say(who, text, link) {
      var item = document.createElement("li");
      item.className = "chat-" + who;
      item.appendChild(document.createTextNode(text));
      if (link && /^(https?:\/\/|\/)/.test(link)) {
        item.appendChild(document.createTextNode(" "));
        var a = document.createElement("a");
        a.href = link;
        a.textContent = "Open the checkout";
        item.appendChild(a);
      }
      log.appendChild(item);
      log.scrollTop = log.scrollHeight;
    }

    function suggest(list) {
      while (chips.firstChild) chips.removeChild(chips.firstChild);
      (list || []).slice(0, 4).forEach(function (text) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "chat-chip";
        b.textContent = text;
        b.addEventListener("click", function () { send(text); });
        chips.appendChild(b);
      });
    }

    function send(message) {
      if (busy) return;
      busy = true;
      if (message) say("me", message);
      fetch("/api/v1/chat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": box.dataset.csrf || "" },
        body: JSON.stringify({ message: message, conversation: conversation })
      }).then(function (res) {
        return res.json().catch(function () { return {}; }).then(function (data) {
          if (!res.ok) throw new Error((data && data.error && data.error.message) || "Sorry, I cannot answer just now. Please try again.");
          return data;
        });
      }).then(function (data) {
        conversation = data.conversation || null;
        try { if (conversation) window.sessionStorage.setItem("omnihub-chat", conversation); } catch (err) { /* private mode */ }
        say("bot", data.reply || "", data.link);
        suggest(data.suggestions);
        if (data.basket && typeof data.basket.item_count === "number") {
          document.querySelectorAll("[data-basket-count]").forEach(function (el) { el.textContent = String(data.basket.item_count); });
          // A basket page without a live basket yet (the chat made the basket) shows it now.
          if (body.dataset.page === "basket" && !body.dataset.basketId) window.location.reload();
        }
      }).catch(function (err) {
        say("bot", err.message);
      }).then(function () { busy = false; });
    }

    function show(open) {
      panel.hidden = !open;
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) {
        input.focus();
        if (!opened) { opened = true; send(""); }
      } else {
        toggle.focus();
      }
    }

    toggle.addEventListener("click", function () { show(panel.hidden); });
    close.addEventListener("click", function () { show(false); });
    panel.addEventListener("keydown", function (e) { if (e.key === "Escape") show(false); });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = input.value.trim();
      if (!text) return;
      input.value = "";
      send(text);
    });
  }
})();
