// liteq dashboard: the little the pages do in the browser. Everything works without it.
"use strict";

document.addEventListener("submit", function (event) {
  // A destructive form (or button) asks first: data-confirm holds the question.
  var button = event.submitter;
  var question = (button && button.getAttribute("data-confirm")) ||
    event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("change", function (event) {
  // "All on this page": tick or clear every box of the selection form.
  var box = event.target;
  if (!box.classList || !box.classList.contains("select-all")) {
    return;
  }
  var form = box.closest("form");
  var boxes = document.querySelectorAll('input[type=checkbox][name="' +
    box.getAttribute("data-for") + '"][form="' + form.id + '"]');
  boxes.forEach(function (b) { b.checked = box.checked; });
});

(function () {
  // Pages that change by themselves (overview, workers) offer a refresh every few seconds,
  // off until asked for; the choice is kept in this browser.
  var seconds = Number(document.body.getAttribute("data-refresh") || 0);
  var meta = document.querySelector("header .meta");
  if (!seconds || !meta) {
    return;
  }
  var key = "liteq-refresh";
  var on = window.localStorage.getItem(key) === "1";
  var toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "refresh";
  toggle.textContent = on ? "auto-refresh: on" : "auto-refresh: off";
  toggle.addEventListener("click", function () {
    window.localStorage.setItem(key, on ? "0" : "1");
    window.location.reload();
  });
  meta.appendChild(toggle);
  if (on) {
    window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
  }
})();
