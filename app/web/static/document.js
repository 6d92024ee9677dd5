// The document page's editing: title, tags and sensitivity (saved only by the Save button; a
// lower sensitivity is confirmed first) and replacing the file (confirmed: the current file is
// erased). Loaded after app.js, whose helpers it uses (window.cairn). Messages come from the
// page's data attributes, in the page's language; user text only ever goes through
// textContent or form values.
"use strict";

(function () {
  const cairn = window.cairn;
  const meta = document.getElementById("doc-meta");
  if (!cairn || !meta) return;
  const path = cairn.tenantApi("/documents/" + meta.dataset.id);
  const LEVELS = ["public", "internal", "confidential"];
  const NOTICE_KEY = "cairn.replaced." + meta.dataset.id;
  const fill = (text, values) =>
    Object.entries(values).reduce((out, [k, v]) => out.split("{" + k + "}").join(String(v)), text);

  // After a replacement the page reloads (and keeps reloading while the new file is processed):
  // the notice with the deletion receipt outlives those reloads until it is read once.
  const notice = document.getElementById("doc-notice");
  const receipt = sessionStorage.getItem(NOTICE_KEY);
  if (notice && receipt && !["queued", "processing"].includes(meta.dataset.status)) {
    sessionStorage.removeItem(NOTICE_KEY);
  }
  if (notice && receipt) {
    notice.textContent = fill(notice.dataset.replaced, { receipt });
    notice.hidden = false;
  }

  const edit = document.getElementById("doc-edit");
  if (edit) {
    edit.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const before = edit.dataset.sensitivity;
      const select = document.getElementById("edit-sensitivity");
      const after = select.value;
      if (LEVELS.indexOf(after) < LEVELS.indexOf(before)) {
        const names = { from: optionText(select, before), to: optionText(select, after) };
        if (!confirm(fill(edit.dataset.confirmLower, names))) return;
      }
      const body = {
        title: document.getElementById("edit-title").value.trim(),
        tags: document.getElementById("edit-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
        sensitivity: after,
      };
      try {
        await cairn.api("PATCH", path, body);
        location.reload();
      } catch (e) { cairn.failWith(e); }
    });
  }

  function optionText(select, value) {
    const option = Array.from(select.options).find((o) => o.value === value);
    return option ? option.textContent : value;
  }

  const replace = document.getElementById("replace-form");
  if (replace) {
    replace.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const input = document.getElementById("replace-file");
      const file = input.files && input.files[0];
      if (!file) return cairn.toast(replace.dataset.choose, true);
      if (!confirm(fill(replace.dataset.confirm, { name: file.name }))) return;
      const form = new FormData();
      form.append("file", file, file.name);
      const button = document.getElementById("replace-submit");
      button.disabled = true;
      try {
        const accepted = await cairn.api("PUT", path + "/file", form);
        sessionStorage.setItem(NOTICE_KEY, accepted.receipt_id);
        location.reload();
      } catch (e) {
        button.disabled = false;
        cairn.failWith(e);
      }
    });
  }
})();
