// Curation pages: a knowledge base's settings (with keyword-index rebuild and re-parse
// progress) and a document's chunks.
// Builds on the helpers app.js exposes as window.cairn; text reaches the page through
// textContent only, like everywhere else.
"use strict";

(function () {
  const C = window.cairn;
  if (!C) return;
  const { api, el, toast, T, tenantApi, failWith, $ } = C;

  // Knowledge-base settings ------------------------------------------------------------------
  function changed(input) {
    return input.value !== (input.dataset.initial || "");
  }

  function separators(text) {
    // One per line; "\n" written out stands for a line break, so a blank line can be one.
    return text.split("\n").map((s) => s.replace(/\\n/g, "\n")).filter((s) => s.length > 0);
  }

  // The keyword-index rebuild a stemmer change started (also shown to whoever opens the page
  // while it runs).
  const REBUILD = { box: "#bm25-progress", bar: "#bm25-bar", text: "#bm25-text", messages: "kb.bm25" };

  function settingsPage() {
    const form = $("#kb-form");
    const template = $("#kb-template");
    const stemmer = $("#kb-stemmer");
    template.addEventListener("change", () => {
      $("#kb-template-help").textContent = T("kb.template.help." + template.value);
    });
    const running = $("#bm25-progress").dataset.job;
    if (running && /^job_[0-9a-f]{32}$/.test(running)) follow(running, 1, REBUILD);
    const save = $("#kb-save");
    if (!save) {
      for (const input of form.querySelectorAll("input, select, textarea")) input.disabled = true;
      return;
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const chunking = {};
      const retrieval = {};
      const bm25 = {};
      if (changed(template)) chunking.template = template.value;
      if (changed($("#kb-size"))) chunking.size = Number($("#kb-size").value);
      if (changed($("#kb-overlap"))) chunking.overlap = Number($("#kb-overlap").value);
      if (changed($("#kb-separators"))) chunking.separators = separators($("#kb-separators").value);
      if (changed($("#kb-mode"))) retrieval.mode = $("#kb-mode").value;
      if (changed($("#kb-top-k"))) retrieval.top_k = Number($("#kb-top-k").value);
      if (changed($("#kb-w-bm25")) || changed($("#kb-w-vector"))) {
        retrieval.weights = { bm25: Number($("#kb-w-bm25").value), vector: Number($("#kb-w-vector").value) };
      }
      if (changed($("#kb-min-score"))) {
        retrieval.min_score = $("#kb-min-score").value === "" ? null : Number($("#kb-min-score").value);
      }
      if (changed(stemmer)) bm25.stemmer = stemmer.value;
      const body = {};
      if (Object.keys(chunking).length) body.chunking = chunking;
      if (Object.keys(retrieval).length) body.retrieval = retrieval;
      if (Object.keys(bm25).length) body.bm25 = bm25;
      if (!body.chunking && !body.retrieval && !body.bm25) { toast(T("kb.unchanged")); return; }
      try {
        const saved = await api("PATCH", tenantApi("/settings"), body);
        // What is now in force becomes the form's starting point.
        template.dataset.initial = saved.chunking.template;
        $("#kb-size").dataset.initial = String(saved.chunking.size);
        $("#kb-overlap").dataset.initial = String(saved.chunking.overlap);
        $("#kb-separators").dataset.initial = saved.chunking.separators.join("\n");
        $("#kb-mode").dataset.initial = saved.retrieval.mode;
        $("#kb-top-k").dataset.initial = String(saved.retrieval.top_k);
        $("#kb-w-bm25").value = $("#kb-w-bm25").dataset.initial = String(saved.retrieval.weights.bm25);
        $("#kb-w-vector").value = $("#kb-w-vector").dataset.initial = String(saved.retrieval.weights.vector);
        $("#kb-min-score").dataset.initial = saved.retrieval.min_score === null ? "" : String(saved.retrieval.min_score);
        stemmer.dataset.initial = saved.bm25.stemmer;
        toast(T("saved"));
        if (body.bm25 && saved.rebuild_job_id) follow(saved.rebuild_job_id, 1, REBUILD);
        $("#kb-note").textContent = body.chunking ? T("kb.chunking_changed") : "";
        if (body.chunking && $("#reparse-start")) $("#reparse-start").focus();
      } catch (e) { failWith(e); }
    });

    const start = $("#reparse-start");
    if (!start) return;
    // Arriving from the documents page's "Re-parse selected": that job's progress.
    const jobId = new URLSearchParams(window.location.search).get("job");
    const reparse = {
      box: "#reparse-progress", bar: "#reparse-bar", text: "#reparse-text", messages: "kb.reparse",
      ended: () => { start.disabled = false; },
    };
    if (jobId && /^job_[0-9a-f]{32}$/.test(jobId)) {
      start.disabled = true;
      follow(jobId, 1, reparse);
    }
    start.addEventListener("click", async () => {
      if (!window.confirm(T("kb.reparse.confirm"))) return;
      start.disabled = true;
      try {
        const job = await api("POST", tenantApi("/documents/reparse"), { keep_curated: $("#reparse-keep").checked });
        follow(job.job_id, job.total, reparse);
      } catch (e) { start.disabled = false; failWith(e); }
    });
  }

  // A background job's progress, polled until it ends: `ui` names the box, bar and status
  // text, the messages' key prefix (…progress / …done / …failed) and what to do at the end.
  function follow(jobId, total, ui) {
    const box = $(ui.box);
    const bar = $(ui.bar);
    const text = $(ui.text);
    const ended = ui.ended || (() => {});
    ui.following = jobId; // a newer job shown in the same box stops this one's polling
    box.hidden = false;
    bar.max = Math.max(total, 1);
    const tick = async () => {
      if (ui.following !== jobId) return;
      let job;
      try { job = await api("GET", tenantApi("/jobs/" + encodeURIComponent(jobId))); }
      catch (e) { failWith(e); ended(); return; }
      bar.max = Math.max(job.total, 1);
      bar.value = job.done;
      const counts = { done: job.done, total: job.total };
      if (job.status === "done" || job.status === "failed") {
        text.textContent = T(ui.messages + "." + job.status, counts);
        ended();
        return;
      }
      text.textContent = T(ui.messages + ".progress", counts);
      setTimeout(tick, 700);
    };
    tick();
  }

  // A document's chunks ------------------------------------------------------------------------
  const PAGE = 50;

  function chunksPage() {
    const list = $("#chunk-list");
    const docId = list.dataset.doc;
    const canEdit = list.dataset.edit === "yes";
    const base = tenantApi("/documents/" + encodeURIComponent(docId) + "/chunks");
    let offset = 0;
    let total = 0;

    function badges(chunk) {
      const out = [];
      if (!chunk.enabled) out.push(el("span", { class: "badge badge-off", text: T("chunks.disabled") }));
      if (chunk.origin === "edited") out.push(el("span", { class: "badge", text: T("chunks.edited") }));
      if (chunk.origin === "added") out.push(el("span", { class: "badge", text: T("chunks.added") }));
      return out;
    }

    function item(chunk) {
      const text = el("div", { class: "text", text: chunk.text });
      const li = el("li", { id: chunk.id, class: "chunk" + (chunk.enabled ? "" : " off"), "data-enabled": chunk.enabled ? "yes" : "no" },
        el("div", { class: "heading" }, "#" + chunk.position + " " + chunk.headings.join(" › ") + " ", ...badges(chunk)),
        text);
      if (!canEdit) return li;
      const edit = el("button", { type: "button", class: "secondary chunk-edit", text: T("chunks.edit"),
        "aria-label": T("chunks.edit.label", { position: chunk.position }) });
      const toggle = el("button", { type: "button", class: "secondary chunk-toggle",
        text: chunk.enabled ? T("chunks.disable") : T("chunks.enable"),
        "aria-label": T(chunk.enabled ? "chunks.disable.label" : "chunks.enable.label", { position: chunk.position }) });
      const actions = el("div", { class: "row" }, edit, toggle);
      li.append(actions);
      toggle.addEventListener("click", async () => {
        toggle.disabled = true;
        try {
          const updated = await api("PATCH", base + "/" + encodeURIComponent(chunk.id), { enabled: !chunk.enabled });
          const fresh = item(updated);
          li.replaceWith(fresh);
          $(".chunk-toggle", fresh).focus();
          toast(updated.enabled ? T("chunks.enabled_now") : T("chunks.disabled_now"));
        } catch (e) { toggle.disabled = false; failWith(e); }
      });
      edit.addEventListener("click", () => {
        const area = el("textarea", { class: "chunk-text", rows: 6, maxlength: 8000, "aria-label": T("chunks.text") });
        area.value = chunk.text;
        const saveBtn = el("button", { type: "button", class: "chunk-save", text: T("chunks.save") });
        const cancel = el("button", { type: "button", class: "secondary chunk-cancel", text: T("chunks.cancel") });
        const editor = el("div", { class: "chunk-editor" }, area, el("div", { class: "row" }, saveBtn, cancel));
        text.replaceWith(editor);
        actions.hidden = true;
        area.focus();
        const close = () => { editor.replaceWith(text); actions.hidden = false; edit.focus(); };
        cancel.addEventListener("click", close);
        area.addEventListener("keydown", (ev) => { if (ev.key === "Escape") { ev.preventDefault(); close(); } });
        saveBtn.addEventListener("click", async () => {
          if (!area.value.trim()) { toast(T("chunks.empty"), true); return; }
          saveBtn.disabled = true;
          saveBtn.textContent = T("chunks.saving");
          try {
            const updated = await api("PATCH", base + "/" + encodeURIComponent(chunk.id), { text: area.value });
            const fresh = item(updated);
            li.replaceWith(fresh);
            $(".chunk-edit", fresh).focus();
            toast(T("chunks.saved"));
          } catch (e) { saveBtn.disabled = false; saveBtn.textContent = T("chunks.save"); failWith(e); }
        });
      });
      return li;
    }

    async function load() {
      try {
        const page = await api("GET", base + "?limit=" + PAGE + "&offset=" + offset);
        total = page.total;
        $("#chunk-items").replaceChildren(...page.items.map(item));
        $("#chunk-items").start = offset + 1;
        const last = Math.min(offset + PAGE, total);
        $("#chunk-info").textContent = T("chunks.range", { first: total ? offset + 1 : 0, last, total });
        $("#chunk-prev").disabled = offset === 0;
        $("#chunk-next").disabled = offset + PAGE >= total;
      } catch (e) { failWith(e); }
    }
    $("#chunk-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
    $("#chunk-next").addEventListener("click", () => { offset += PAGE; load(); });

    const add = $("#chunk-add");
    if (add) {
      add.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const text = $("#chunk-add-text").value.trim();
        if (!text) { toast(T("chunks.empty"), true); return; }
        const headings = $("#chunk-add-headings").value.split("›").map((h) => h.trim()).filter(Boolean);
        $("#chunk-add-submit").disabled = true;
        try {
          await api("POST", base, { text, headings });
          add.reset();
          toast(T("chunks.added_now"));
          offset = Math.floor(total / PAGE) * PAGE;
          await load();
        } catch (e) { failWith(e); }
        $("#chunk-add-submit").disabled = false;
      });
    }
    load();
  }

  const pages = { settings: settingsPage, chunks: chunksPage };
  const start = pages[document.body.dataset.page];
  if (start) start();
})();
