// The support form: the same validation rules as the server, a character counter, and a submit
// that shows the ticket reference. Without JavaScript the form still posts and gets a page back.
(function () {
  "use strict";
  var form = document.getElementById("support-form");
  if (!form) return;
  var MIN = 10, MAX = 5000;
  var EMAIL = /^[^@\s<>()\[\],;:"]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$/;
  var PHONE = /^\+?[0-9][0-9 ().-]{5,22}[0-9]$/;
  var statusBox = document.getElementById("form-status");
  var message = document.getElementById("message");
  var counter = document.getElementById("message-count");
  var button = document.getElementById("submit");

  function newRequestId() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return String(Date.now()) + "-" + Math.random().toString(36).slice(2, 12);
  }
  document.getElementById("request_id").value = newRequestId();

  function updateCounter() {
    var n = message.value.trim().length;
    counter.textContent = n + " / " + MAX + " characters (at least " + MIN + ")";
    counter.classList.toggle("over", n > MAX);
  }
  message.addEventListener("input", updateCounter);
  updateCounter();

  function value(name) {
    var el = form.elements[name];
    return el && typeof el.value === "string" ? el.value.trim() : "";
  }

  function validate() {
    var errors = {};
    if (!value("name")) errors.name = "Please enter your name.";
    if (!value("email")) errors.email = "Please enter your email address.";
    else if (!EMAIL.test(value("email"))) errors.email = "Please enter a valid email address, like name@example.com.";
    if (value("phone") && !PHONE.test(value("phone"))) errors.phone = "Please enter a valid phone number, like +1 415 555 0100, or leave it empty.";
    if (!value("subject")) errors.subject = "Please enter a subject.";
    var n = value("message").length;
    if (n < MIN) errors.message = "Please describe your request in at least " + MIN + " characters.";
    else if (n > MAX) errors.message = "Message must be at most " + MAX + " characters.";
    return errors;
  }

  function showErrors(errors) {
    var first = null;
    Array.prototype.forEach.call(form.querySelectorAll(".error"), function (p) { p.textContent = ""; });
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (el) { el.removeAttribute("aria-invalid"); });
    Object.keys(errors).forEach(function (field) {
      var p = document.getElementById(field + "-error");
      if (p) p.textContent = errors[field];
      var input = document.getElementById(field);
      if (input) {
        input.setAttribute("aria-invalid", "true");
        if (!first) first = input;
      }
    });
    var count = Object.keys(errors).length;
    if (count) {
      showStatus("Please correct " + (count === 1 ? "the field" : "the " + count + " fields") + " marked below.", "error");
      if (first) first.focus();
    }
    return count === 0;
  }

  function showStatus(text, kind) {
    statusBox.textContent = text;
    statusBox.className = "status " + (kind || "");
    statusBox.hidden = !text;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!showErrors(validate())) return;
    showStatus("", "");
    button.disabled = true;
    button.textContent = "Sending…";
    var body = {};
    new FormData(form).forEach(function (v, k) { body[k] = typeof v === "string" ? v : ""; });
    fetch(form.getAttribute("action"), {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) { return { status: resp.status, data: data }; });
    }).then(function (r) {
      if (r.status === 202 && r.data.reference) {
        form.hidden = true;
        document.getElementById("reference").textContent = r.data.reference;
        document.getElementById("status-link").setAttribute("href", r.data.status_url);
        var done = document.getElementById("done");
        done.hidden = false;
        done.focus();
      } else if (r.status === 422 && r.data.fields) {
        showErrors(r.data.fields);
      } else if (r.status === 429) {
        showStatus("You have sent several requests in a short time. Please wait a minute and try again.", "error");
      } else {
        showStatus((r.data && r.data.message) || "We could not take your request right now. Please try again in a minute; nothing you typed was lost.", "error");
      }
    }).catch(function () {
      showStatus("We could not reach the server. Check your connection and try again; nothing you typed was lost.", "error");
    }).then(function () {
      button.disabled = false;
      button.textContent = "Send request";
    });
  });

  // Tell an embedding page (embed.js) how tall we are, so its iframe fits without scrolling.
  if (window.parent !== window && window.ResizeObserver) {
    new ResizeObserver(function () {
      window.parent.postMessage({ fteSupportHeight: document.documentElement.scrollHeight }, "*");
    }).observe(document.body);
  }
})();
