// Omnihub Back Office: small enhancements; every page works without this script.
(function () {
  "use strict";
  // Forms with data-confirm ask before they post (refunds, cancellations, approvals, ends).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
  // Filter selects that submit their form on change.
  document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
