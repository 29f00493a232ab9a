// Small enhancements of the Contera console. Every page works without this script.
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", function () {
  // An accept or reset link carries its token in the fragment, which never reaches the
  // server or its logs: put it into the form and hide the field that asks for it.
  var match = location.hash.match(/token=([0-9a-fA-F]+)/);
  var tokenInput = document.getElementById("token");
  if (match && tokenInput) {
    tokenInput.value = match[1];
    var field = tokenInput.closest(".token-field");
    if (field) field.hidden = true;
    history.replaceState(null, "", location.pathname);
  }

  // Copy buttons: the text of the element named by data-copy.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent.trim();
      var done = function () {
        var label = button.textContent;
        button.textContent = "Copied";
        button.setAttribute("data-copied", text);
        setTimeout(function () { button.textContent = label; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, done);
      } else {
        var range = document.createRange();
        range.selectNodeContents(source);
        var selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        try { document.execCommand("copy"); } catch (e) { /* selected for the user */ }
        done();
      }
    });
  });

  // Live parts of a page: refreshed from their URL, so a recorder that comes online shows
  // without a reload.
  document.querySelectorAll("[data-refresh-url]").forEach(function (region) {
    var url = region.getAttribute("data-refresh-url");
    var every = parseInt(region.getAttribute("data-refresh-millis"), 10) || 5000;
    var refresh = function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) { if (html !== null) region.innerHTML = html; })
        .catch(function () { /* offline for a moment: try again next time */ });
    };
    setInterval(refresh, every);
  });
});
