// Embed the support form: <script src="https://SUPPORT-HOST/support/embed.js" async></script>
// puts an iframe where the script tag is, sized to the form's height.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var origin = new URL(script.src).origin;
  var frame = document.createElement("iframe");
  frame.src = origin + "/support";
  frame.title = "Contact support";
  frame.style.width = "100%";
  frame.style.border = "0";
  frame.style.minHeight = "720px";
  script.parentNode.insertBefore(frame, script);
  window.addEventListener("message", function (event) {
    if (event.origin !== origin || !event.data || typeof event.data.fteSupportHeight !== "number") return;
    frame.style.height = event.data.fteSupportHeight + "px";
  });
})();
