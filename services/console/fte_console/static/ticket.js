// Live delivery status on the ticket page. The server announces each outbound message's new
// status on /events/tickets/{id} (server-sent events); this moves the message's badge on. Statuses
// only go forward (queued, sent, delivered, read; failed is final), as the agent stores them, so a
// repeated or late event changes nothing. Text from an event is set as text, never as HTML.
"use strict";
(function () {
  const conversation = document.getElementById("conversation");
  const status = document.getElementById("live-status");
  if (!conversation || !status || !window.EventSource) {
    return;
  }
  const RANK = { queued: 1, sent: 2, delivered: 3, read: 4, failed: 5 };

  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function apply(delivery, next) {
    if (!(next in RANK)) {
      return;
    }
    for (const badge of conversation.querySelectorAll("[data-delivery]")) {
      if (badge.dataset.delivery !== delivery || (RANK[badge.dataset.status] || 0) >= RANK[next]) {
        continue;
      }
      badge.classList.remove("delivery-" + badge.dataset.status);
      badge.classList.add("delivery-" + next);
      badge.dataset.status = next;
      badge.textContent = next;
    }
  }

  const source = new EventSource("/events/tickets/" + encodeURIComponent(conversation.dataset.ticket));
  source.addEventListener("ready", function () {
    show("live", "live");
  });
  source.addEventListener("delivery", function (event) {
    const data = JSON.parse(event.data);
    apply(data.delivery, data.status);
  });
  source.addEventListener("error", function () {
    show("off", source.readyState === EventSource.CLOSED ? "off; reload" : "reconnecting");
  });
})();
