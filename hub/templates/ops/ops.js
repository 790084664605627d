// The ops page: replaces its sections with each snapshot of the live feed (/ops/live, SSE) and
// sends the dead-letter buttons' retries and discards with the page's CSRF token.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="ops-csrf"]') || {}).content || "";
  var live = document.getElementById("live");
  var liveText = document.getElementById("live-text");
  var at = document.getElementById("at");
  var flash = document.getElementById("flash");

  function state(name, text) {
    live.setAttribute("data-state", name);
    liveText.textContent = text;
  }

  function show(message, bad) {
    flash.textContent = message;
    flash.className = bad ? "flash bad" : "flash";
  }

  var source = new EventSource("/ops/live");
  source.addEventListener("open", function () { state("live", "live"); });
  source.addEventListener("error", function () { state("lost", "reconnecting…"); });
  source.addEventListener("snapshot", function (event) {
    var data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    Object.keys(data.html || {}).forEach(function (key) {
      var section = document.getElementById("sec-" + key);
      if (section) { section.innerHTML = data.html[key]; }
    });
    at.textContent = data.snapshot.at;
    state("live", "live");
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    var action = button.getAttribute("data-action");
    var destination = button.getAttribute("data-destination");
    var id = button.getAttribute("data-id");
    var question = action === "retry"
      ? "Send dead letter " + id + " to " + destination + " again?"
      : "Discard dead letter " + id + " for good? It will not be delivered.";
    if (!window.confirm(question)) { return; }
    var url = "/ops/outbox/" + encodeURIComponent(destination) + "/dead/" + encodeURIComponent(id) +
      (action === "retry" ? "/retry" : "");
    button.disabled = true;
    fetch(url, {
      method: action === "retry" ? "POST" : "DELETE",
      credentials: "same-origin",
      headers: { "X-Ops-Csrf": csrf }
    }).then(function (res) {
      if (res.ok) {
        show(action === "retry" ? "Queued for delivery again." : "Discarded.", false);
        var row = button.closest("li");
        if (row) { row.remove(); }
      } else {
        return res.json().then(function (body) {
          show((body.error && body.error.message) || ("Failed: " + res.status), true);
          button.disabled = false;
        }, function () { show("Failed: " + res.status, true); button.disabled = false; });
      }
    }, function () { show("The hub could not be reached.", true); button.disabled = false; });
  });
})();
