// Omnihub Market: progressive enhancement only. Every page works without this script.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Sort selects apply as soon as they change.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { if (select.form) select.form.submit(); });
  });

  // Live basket: the hub pushes the basket as JSON whenever it changes (another tab, the app,
  // a store); the header count follows, and the basket page reloads unless it is being edited.
  var body = document.body;
  var basketId = body.dataset.basketId;
  if (!basketId || !("WebSocket" in window)) return;
  var version = Number(body.dataset.basketVersion || 0);
  var onBasketPage = body.dataset.page === "basket";
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
})();
