// The live queue. The server announces each new escalation on /events/queue (server-sent
// events); the page then re-reads itself (same address, so the same filters and order) and swaps
// in the fresh table. Rows are rendered only by the server: nothing here builds HTML, and text
// from an event is set as text.
"use strict";
(function () {
  const area = document.getElementById("queue-area");
  const status = document.getElementById("live-status");
  const notice = document.getElementById("live-notice");
  if (!area || !status || !window.EventSource) {
    return;
  }
  let reading = false;
  let again = false;
  let connectedBefore = false;

  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  async function reread(highlight) {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", redirect: "manual" });
      if (response.status !== 200) {
        // Signed out (a redirect to the sign-in page) or the server is away: keep what is shown.
        show("stale", response.type === "opaqueredirect" ? "signed out; reload" : "not updated; reload");
        return;
      }
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("queue-area");
      if (fresh) {
        area.replaceChildren(...Array.from(fresh.childNodes, (node) => document.importNode(node, true)));
        if (highlight) {
          for (const row of area.querySelectorAll("tr[data-ticket]")) {
            if (row.dataset.ticket === highlight) {
              row.classList.add("new");
            }
          }
        }
      }
    } finally {
      reading = false;
      if (again) {
        again = false;
        reread("");
      }
    }
  }

  const source = new EventSource("/events/queue");
  source.addEventListener("ready", function () {
    show("live", "live");
    // After a reconnect, escalations may have come while the stream was down.
    if (connectedBefore) {
      reread("");
    }
    connectedBefore = true;
  });
  source.addEventListener("escalated", function (event) {
    const data = JSON.parse(event.data);
    notice.textContent = "New escalation " + data.ticket + " (" + data.reason + ", " + data.channel + ")";
    reread(data.ticket);
  });
  source.addEventListener("error", function () {
    show("off", source.readyState === EventSource.CLOSED ? "off; reload" : "reconnecting");
  });
})();
