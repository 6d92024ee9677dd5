// The deletion receipt page's one control that needs script: Print (the CSP forbids inline
// handlers). Everything else on the governance pages is server-rendered.
"use strict";

(function () {
  const print = document.getElementById("receipt-print");
  if (print) print.addEventListener("click", () => window.print());
})();
