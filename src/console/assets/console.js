// cashloop console: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // The job page: follow a pending or running job until it settles.
  var status = document.querySelector("[data-poll]");
  if (status) {
    var url = status.getAttribute("data-poll");
    var tries = 0;
    var poll = function () {
      tries += 1;
      fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) { return; }
          status.textContent = j.status;
          status.className = "status status-" + j.status;
          if ((j.status === "pending" || j.status === "running") && tries < 300) {
            setTimeout(poll, 1000);
          }
        })
        .catch(function () { if (tries < 300) { setTimeout(poll, 3000); } });
    };
    setTimeout(poll, 500);
  }
  // The payment page: show only the chosen method's fields.
  var form = document.getElementById("pay-form");
  if (form) {
    var sync = function () {
      var chosen = form.querySelector("input[name=method]:checked");
      var m = chosen ? chosen.value : "card";
      form.querySelectorAll("fieldset[data-method]").forEach(function (fs) {
        var on = fs.getAttribute("data-method") === m;
        fs.hidden = !on;
        fs.disabled = !on;
      });
    };
    form.querySelectorAll("input[name=method]").forEach(function (r) { r.addEventListener("change", sync); });
    sync();
    // Card numbers: digits and spaces only, grouped as typed.
    var num = document.getElementById("card_number");
    if (num) {
      num.addEventListener("input", function () {
        var d = num.value.replace(/\D/g, "").slice(0, 19);
        num.value = d.replace(/(.{4})/g, "$1 ").trim();
      });
    }
    form.addEventListener("submit", function () {
      var b = document.getElementById("pay");
      if (b) { b.disabled = true; b.textContent = "Processing…"; }
    });
  }
})();
