// Cairn web admin. Plain JavaScript, no build step, no inline script (the CSP forbids it).
// Every user-controlled string reaches the page through textContent or a DOM attribute set
// from script, never through innerHTML, so titles, file names, chunk text and answers render as
// text. The session cookie is HttpOnly; the CSRF token comes from the page's <meta>.
"use strict";

(function () {
  const M = JSON.parse(document.getElementById("messages").textContent || "{}");
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const TENANT = document.body.dataset.tenant || "";
  const T = (key, values) => {
    let text = M["js." + key] || key;
    for (const [k, v] of Object.entries(values || {})) text = text.split("{" + k + "}").join(String(v));
    return text;
  };
  const $ = (sel, root) => (root || document).querySelector(sel);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function toast(text, isError) {
    const box = $("#toast");
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "show error" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (box.className = ""), 5000);
  }

  // The server writes its messages in English. In another language a refusal with a known
  // code is shown in that language; any other keeps the server's words (they name what was
  // wrong) after a translated summary of its status.
  function errorText(status, code, message) {
    const fallback = message || "HTTP " + status;
    if (document.documentElement.lang === "en") return fallback;
    const own = M["js.error.code." + code];
    if (own) return own;
    const summary = M["js.error.status." + status];
    return summary ? summary + (message ? "（" + message + "）" : "") : fallback;
  }

  class ApiError extends Error {
    constructor(status, body) {
      const err = (body && body.error) || {};
      super(errorText(status, err.code, err.message));
      this.status = status;
      this.code = err.code || "";
      this.details = err.details || null;
    }
  }

  async function api(method, path, body, extra) {
    const headers = { "X-CSRF-Token": CSRF };
    const init = { method, headers, credentials: "same-origin" };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    Object.assign(init, extra || {});
    const response = await fetch(path, init);
    if (response.status === 401) {
      window.location.href = "/signin?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, null);
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  const tenantApi = (suffix) => "/api/v1/tenants/" + encodeURIComponent(TENANT) + suffix;
  const fmtTime = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace(/(\+00:00|Z)$/, "") : "—");
  const failWith = (e) => toast(T("error", { message: e.message }), true);
  // For the scripts of single pages (static/document.js), which load after this one.
  window.cairn = Object.freeze({ api, el, toast, T, tenantApi, failWith, fmtTime, TENANT, $, errorText });

  function statusBadge(doc) {
    const wrap = el("span", { class: "status-cell" });
    wrap.append(el("span", { class: "status status-" + doc.status, text: T("status." + doc.status) }));
    if (doc.status === "processing") {
      wrap.append(" ", el("progress", { max: "1", value: String(doc.progress || 0), "aria-label": T("progress") }),
        " " + Math.round((doc.progress || 0) * 100) + "%");
    }
    if (doc.status === "failed" && doc.error) {
      // The reason in the page's language (by its code), the server's particulars beneath.
      const known = M["js.reason." + doc.error_code];
      wrap.append(el("span", { class: "reason", text: (known || doc.error) + " (" + (doc.error_code || "") + ")" }));
      if (known) wrap.append(el("span", { class: "muted detail", text: doc.error }));
    }
    return wrap;
  }

  // Dark or light: the system's choice until the toggle makes one, remembered in this browser.
  const themeToggle = $("#theme-toggle");
  const systemDark = window.matchMedia("(prefers-color-scheme: dark)");
  const chosenTheme = localStorage.getItem("cairn-theme");
  if (chosenTheme === "dark" || chosenTheme === "light") document.documentElement.dataset.theme = chosenTheme;
  const effectiveTheme = () => document.documentElement.dataset.theme || (systemDark.matches ? "dark" : "light");
  const labelTheme = () => {
    const dark = effectiveTheme() === "dark";
    themeToggle.textContent = dark ? themeToggle.dataset.light : themeToggle.dataset.dark;
    themeToggle.setAttribute("aria-pressed", String(dark));
  };
  if (themeToggle) {
    labelTheme();
    systemDark.addEventListener("change", labelTheme);
    themeToggle.addEventListener("click", () => {
      const next = effectiveTheme() === "dark" ? "light" : "dark";
      document.documentElement.dataset.theme = next;
      localStorage.setItem("cairn-theme", next);
      labelTheme();
    });
  }

  // The tenant switcher and the language select change nothing until their button is pressed:
  // choosing with the arrow keys must not leave the page (WCAG 2.2, 3.2.2 On Input).

  // Documents --------------------------------------------------------------------------------
  function documentsPage() {
    const table = $("#docs");
    const writer = table.dataset.writer === "yes";
    const tbody = $("tbody", table);
    const state = { offset: 0, limit: 25, total: 0, items: [], selected: new Set(), timer: null };

    function filters() {
      const params = new URLSearchParams({ limit: state.limit, offset: state.offset });
      for (const [key, id] of [["title", "#f-title"], ["status", "#f-status"], ["sensitivity", "#f-sensitivity"], ["tag", "#f-tag"]]) {
        const value = $(id).value.trim();
        if (value) params.set(key, value);
      }
      return params;
    }

    async function load() {
      let page;
      try {
        page = await api("GET", tenantApi("/documents?" + filters()));
      } catch (e) {
        failWith(e);
        return;
      }
      state.items = page.items;
      state.total = page.total;
      render();
      const busy = page.items.some((d) => d.status === "queued" || d.status === "processing");
      clearTimeout(state.timer);
      // Live rows: poll while anything on the page is still moving.
      if (busy) state.timer = setTimeout(load, 1000);
    }

    function render() {
      tbody.replaceChildren();
      for (const doc of state.items) {
        const link = el("a", { href: "/t/" + encodeURIComponent(TENANT) + "/documents/" + doc.id, text: doc.title });
        const row = el("tr", { "data-id": doc.id, "data-status": doc.status },
          writer ? el("td", {}, el("input", {
            type: "checkbox", class: "pick", "aria-label": T("select", { title: doc.title }),
            checked: state.selected.has(doc.id),
            onchange: (ev) => { ev.target.checked ? state.selected.add(doc.id) : state.selected.delete(doc.id); count(); },
          })) : null,
          el("td", {}, link, doc.filename && doc.filename !== doc.title ? el("div", { class: "muted", text: doc.filename }) : null),
          el("td", {}, statusBadge(doc), writer && doc.retryable
            ? el("button", { type: "button", class: "small retry", text: T("retry"), onclick: () => retry([doc.id]) }) : null),
          el("td", { text: T("sensitivity." + doc.sensitivity) }),
          el("td", { text: doc.tags.join(", ") }),
          el("td", { text: String(doc.chunk_count) }),
          el("td", { text: fmtTime(doc.updated_at) }));
        tbody.append(row);
      }
      $("#docs-empty").hidden = state.items.length > 0;
      const pages = Math.max(1, Math.ceil(state.total / state.limit));
      $("#page-info").textContent = T("page", { page: Math.floor(state.offset / state.limit) + 1, pages, total: state.total });
      $("#prev").disabled = state.offset === 0;
      $("#next").disabled = state.offset + state.limit >= state.total;
      count();
    }

    function count() {
      const box = $("#selected-count");
      if (box) box.textContent = T("selected", { count: state.selected.size });
    }

    async function each(ids, action) {
      let failed = 0;
      for (const id of ids) {
        try { await action(id); } catch (e) { failed += 1; failWith(e); }
      }
      if (!failed) toast(T("done", { count: ids.length }));
      state.selected.clear();
      await load();
    }

    function retry(ids) {
      return each(ids, (id) => api("POST", tenantApi("/documents/" + id + "/retry")));
    }

    $("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.offset = 0; load(); });
    $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
    $("#next").addEventListener("click", () => { state.offset += state.limit; load(); });

    if (writer) {
      $("#select-all").addEventListener("change", (ev) => {
        for (const doc of state.items) ev.target.checked ? state.selected.add(doc.id) : state.selected.delete(doc.id);
        render();
      });
      $("#batch-delete").addEventListener("click", () => {
        if (!state.selected.size || !confirm(T("confirm.delete", { count: state.selected.size }))) return;
        each([...state.selected], (id) => api("DELETE", tenantApi("/documents/" + id)));
      });
      $("#batch-restore").addEventListener("click", () =>
        each([...state.selected], (id) => api("POST", tenantApi("/documents/" + id + "/restore"))));
      $("#batch-tag-apply").addEventListener("click", () => {
        const tag = $("#batch-tag").value.trim();
        if (!tag) return;
        each([...state.selected], (id) => {
          const doc = state.items.find((d) => d.id === id);
          const tags = doc ? [...new Set([...doc.tags, tag])] : [tag];
          return api("PATCH", tenantApi("/documents/" + id), { tags });
        });
      });
      $("#batch-sensitivity-apply").addEventListener("click", () => {
        // No level is preselected, and changing who may see documents is confirmed first.
        const level = $("#batch-sensitivity").value;
        if (!state.selected.size || !level) return toast(T("choose_sensitivity"), true);
        const name = T("sensitivity." + level);
        if (!confirm(T("confirm.sensitivity", { count: state.selected.size, level: name }))) return;
        each([...state.selected], (id) => api("PATCH", tenantApi("/documents/" + id), { sensitivity: level }));
      });
      if ($("#batch-reparse")) {
        // Re-parse the chosen documents with the knowledge base's chunking; the settings page
        // follows the job's progress.
        $("#batch-reparse").addEventListener("click", async () => {
          if (!state.selected.size || !confirm(T("kb.reparse.confirm_selected", { count: state.selected.size }))) return;
          try {
            const job = await api("POST", tenantApi("/documents/reparse"), { document_ids: [...state.selected] });
            window.location.href = "/t/" + encodeURIComponent(TENANT) + "/settings?job=" + encodeURIComponent(job.job_id) + "#reparse";
          } catch (e) { failWith(e); }
        });
      }
      $("#retry-all").addEventListener("click", async () => {
        // Every failed document, not only this page's.
        const ids = [];
        for (let offset = 0; ; offset += 100) {
          const page = await api("GET", tenantApi("/documents?status=failed&limit=100&offset=" + offset));
          // Only where another attempt can help: a file that cannot be read needs replacing.
          ids.push(...page.items.filter((d) => d.retryable).map((d) => d.id));
          if (offset + 100 >= page.total) break;
        }
        retry(ids);
      });
      setUpUploads(load);
    }
    load();
  }

  function setUpUploads(reload) {
    const zone = $("#dropzone");
    const list = $("#uploads");
    const queue = [];
    let running = 0;

    function upload(file, path) {
      const progress = el("progress", { max: "100", value: "0", "aria-label": T("transfer", { name: path }) });
      const status = el("span", { class: "upload-status", text: T("upload.waiting") });
      const row = el("li", { "data-name": path }, el("span", { class: "name", text: path }), progress, status);
      list.append(row);
      queue.push(() => new Promise((resolve) => {
        const form = new FormData();
        form.append("file", file, file.name);
        form.append("sensitivity", $("#upload-sensitivity").value);
        const tags = $("#upload-tags").value.trim();
        if (tags) form.append("tags", tags);
        const xhr = new XMLHttpRequest();
        xhr.open("POST", tenantApi("/documents"));
        xhr.setRequestHeader("X-CSRF-Token", CSRF);
        // Per-file transfer progress; the document's own row then shows ingestion progress.
        xhr.upload.addEventListener("progress", (ev) => {
          if (ev.lengthComputable) progress.value = Math.round((ev.loaded / ev.total) * 100);
          status.textContent = T("upload.sending");
        });
        xhr.addEventListener("load", () => {
          let body = null;
          try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
          if (xhr.status === 202) {
            progress.value = 100;
            status.textContent = T("upload.accepted");
            row.dataset.state = "accepted";
          } else {
            const err = (body && body.error) || {};
            status.textContent = T("upload.refused", { message: errorText(xhr.status, err.code, err.message), code: err.code || xhr.status });
            row.dataset.state = "refused";
            row.classList.add("failed");
          }
          resolve();
        });
        xhr.addEventListener("error", () => {
          status.textContent = T("upload.network");
          row.dataset.state = "refused";
          row.classList.add("failed");
          resolve();
        });
        xhr.send(form);
      }));
      pump();
    }

    function pump() {
      // Three transfers at a time: a folder of hundreds of files neither floods the server
      // nor loses any (each file keeps its own row and outcome).
      while (running < 3 && queue.length) {
        running += 1;
        queue.shift()().then(() => { running -= 1; reload(); pump(); });
      }
    }

    async function walk(entry, prefix) {
      if (entry.isFile) {
        await new Promise((resolve) => entry.file((file) => { upload(file, prefix + file.name); resolve(); }, resolve));
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((resolve) => reader.readEntries(resolve, () => resolve([])));
          if (!batch.length) break;
          for (const child of batch) await walk(child, prefix + entry.name + "/");
        }
      }
    }

    zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", async (ev) => {
      ev.preventDefault();
      zone.classList.remove("over");
      const items = [...(ev.dataTransfer.items || [])];
      const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
      if (entries.length && entries.every((e) => e)) {
        for (const entry of entries) await walk(entry, "");
      } else {
        for (const file of ev.dataTransfer.files) upload(file, file.name);
      }
    });
    zone.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("#file-input").click(); }
    });
    zone.addEventListener("click", () => $("#file-input").click());
    for (const id of ["#file-input", "#folder-input"]) {
      $(id).addEventListener("change", (ev) => {
        for (const file of ev.target.files) upload(file, file.webkitRelativePath || file.name);
        ev.target.value = "";
      });
    }
  }

  // One document -----------------------------------------------------------------------------
  function documentPage() {
    const meta = $("#doc-meta");
    const id = meta.dataset.id;
    const path = tenantApi("/documents/" + id);
    const act = (method, suffix) => async () => {
      try { await api(method, path + suffix); location.reload(); } catch (e) { failWith(e); }
    };
    const bind = (sel, fn) => { const b = $(sel); if (b) b.addEventListener("click", fn); };
    bind("#doc-retry", act("POST", "/retry"));
    bind("#doc-restore", act("POST", "/restore"));
    bind("#doc-delete", act("DELETE", ""));
    const purge = $("#purge-form");
    if (purge) {
      purge.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if ($("#purge-confirm").value !== meta.dataset.title) {
          toast(T("purge.mismatch"), true);
          return;
        }
        try {
          const accepted = await api("DELETE", path + "?purge=true");
          const receiptPath = tenantApi("/deletion-receipts/" + accepted.receipt_id);
          let receipt = await api("GET", receiptPath);
          for (let i = 0; i < 60 && receipt.status === "pending"; i++) {
            await new Promise((r) => setTimeout(r, 500));
            receipt = await api("GET", receiptPath);
          }
          $("#receipt").hidden = false;
          const link = $("#receipt-link");
          link.href = "/t/" + encodeURIComponent(TENANT) + "/receipts/" + encodeURIComponent(receipt.id);
          link.dataset.status = receipt.status;
          purge.hidden = true;
          // The document is gone: nothing is left to retry, delete or restore.
          for (const sel of ["#doc-retry", "#doc-restore", "#doc-delete", "#doc-download", "#doc-edit", "#replace-form"]) {
            const button = $(sel);
            if (button) button.hidden = true;
          }
        } catch (e) { failWith(e); }
      });
    }
    const highlighted = $(".chunk.hl");
    if (highlighted) highlighted.scrollIntoView({ block: "center" });
    if (meta.dataset.status === "queued" || meta.dataset.status === "processing") setTimeout(() => location.reload(), 1500);
  }

  // Retrieval test ---------------------------------------------------------------------------
  // Raw scores are on each mode's own scale (a fused hybrid score is often negative): each hit
  // shows how close it comes to the best one of this list, with the raw score beside it.
  function hitItem(hit, low, high) {
    const link = el("a", {
      href: "/t/" + encodeURIComponent(TENANT) + "/documents/" + hit.document_id + "?chunk=" + hit.chunk_id + "#" + hit.chunk_id,
      text: hit.title,
    });
    const share = high > low ? (hit.score - low) / (high - low) : 1;
    const percent = Math.round(100 * share);
    return el("li", { class: "hit", "data-document": hit.document_id, "data-sensitivity": hit.sensitivity },
      el("div", {}, link, " ",
        el("span", { class: "badge sensitivity-" + hit.sensitivity, text: T("sensitivity." + hit.sensitivity) }), " ",
        el("meter", { min: 0, max: 100, value: percent, "aria-label": T("match", { percent }) }), " ",
        el("span", { class: "score", text: T("match", { percent }) }), " ",
        el("span", { class: "muted score-raw", text: T("score", { score: hit.score.toFixed(3) }) }),
        hit.heading_path && hit.heading_path.length ? el("span", { class: "muted", text: " " + hit.heading_path.join(" › ") }) : null),
      el("div", { class: "text", text: hit.text }),
      el("div", { class: "muted mono", text: hit.chunk_id }));
  }

  function searchPage() {
    $("#search-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      // Mode and top-k left empty: the knowledge base's retrieval settings decide.
      const body = { query: $("#q").value };
      if ($("#mode").value) body.mode = $("#mode").value;
      if (Number($("#top-k").value)) body.top_k = Number($("#top-k").value);
      const role = $("#view-as") ? $("#view-as").value : "";
      try {
        const result = role
          ? await api("POST", "/t/" + encodeURIComponent(TENANT) + "/search/preview", { ...body, role })
          : await api("POST", tenantApi("/search"), body);
        $("#search-info").textContent = T("hits", { count: result.hits.length, ms: Math.round(result.took_ms) })
          + (role ? " · " + T("viewing_as", { role: T("role." + role) }) : "");
        const scores = result.hits.map((h) => h.score);
        const low = Math.min(...scores), high = Math.max(...scores);
        $("#hits").replaceChildren(...result.hits.map((h) => hitItem(h, low, high)));
      } catch (e) { failWith(e); }
    });
  }

  // Chat -------------------------------------------------------------------------------------
  function chatPage() {
    let sessionId = null;
    const transcript = $("#transcript");
    const banner = $("#model-banner");
    let lastPercent = 0;
    // Rename, delete, search, copy, stop, feedback: static/chat_tools.js, which loads after this
    // script and is set up (below) before anything is drawn.
    let tools = null;

    // On a first start the answer model takes minutes to prepare: say how far it has got
    // (from /readyz, public and tenant-free) until it is ready.
    let watching = false;
    async function watchModel() {
      if (watching) return;
      watching = true;
      try {
        for (;;) {
          let generator = null;
          try {
            const response = await fetch("/readyz?generator=optional", { credentials: "same-origin" });
            const data = await response.json().catch(() => null);
            generator = data && (data.generator || (data.error && data.error.details && data.error.details.generator));
          } catch (e) { generator = null; }
          if (!generator || !generator.preparing) break;
          lastPercent = generator.percent;
          banner.textContent = T("preparing", { percent: generator.percent });
          banner.hidden = false;
          await new Promise((resolve) => setTimeout(resolve, 3000));
        }
        banner.hidden = true;
      } finally {
        watching = false;
      }
    }

    // What the reader is told an answer is (app/chat/states.py): checked model words, the
    // documents' own sentence instead, nothing found, or unverified. Live and from history
    // alike, from the state stored with the turn; an answer stored before states has none.
    function stateBadge(state) {
      if (!state) return null;
      const kind = { answered: "ok", quoted: "info", not_found: "muted", unverified: "warn" }[state] || "warn";
      return el("p", { class: "badge state state-" + state + " " + kind, "data-state": state, text: T("state." + state) });
    }

    // A citation's supporting quote with the answer's words in it marked (`highlight`, as the
    // server found them). Document text: built as text nodes and <mark> elements, never parsed
    // as markup. Latin words are marked whole ("pay", not inside "repayment"), Chinese words
    // wherever they stand, the longest first.
    function quoteNode(c) {
      const text = String(c.quote);
      const node = el("blockquote", { class: "quote" });
      const terms = [...new Set((c.highlight || []).filter((t) => typeof t === "string" && t.trim()))]
        .sort((a, b) => b.length - a.length)
        .map((t) => {
          const escaped = t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
          return /\p{Script=Han}/u.test(t) ? escaped : "(?<![\\p{L}\\p{N}])" + escaped + "(?![\\p{L}\\p{N}])";
        });
      let last = 0;
      if (terms.length) {
        for (const match of text.matchAll(new RegExp(terms.join("|"), "giu"))) {
          node.append(text.slice(last, match.index), el("mark", { text: match[0] }));
          last = match.index + match[0].length;
        }
      }
      node.append(text.slice(last));
      return node;
    }

    function answerNode(text, citations, state, withheld, message, note) {
      const body = el("div", { class: "answer-text" });
      const byRef = new Map((citations || []).map((c) => [c.ref, c]));
      // The answer is text; only [n] markers of real citations become links.
      let last = 0;
      for (const match of text.matchAll(/\[(\d+)\]/g)) {
        const cite = byRef.get(Number(match[1]));
        if (!cite) continue;
        body.append(text.slice(last, match.index));
        body.append(el("a", {
          class: "cite", href: "/t/" + encodeURIComponent(TENANT) + "/documents/" + cite.document_id + "?chunk=" + cite.chunk_id + "#" + cite.chunk_id,
          title: cite.title, text: "[" + cite.ref + "]",
        }));
        last = match.index + match[0].length;
      }
      body.append(text.slice(last));
      const wrap = el("div", { class: "msg assistant" });
      const badge = withheld ? null : stateBadge(state);
      // The label comes first: a reader sees what the answer is before reading it.
      if (badge) wrap.append(badge);
      wrap.append(body);
      if (withheld) wrap.append(el("p", { class: "badge warn", text: T("withheld") }));
      // A stored unverified answer already ends with its note (the server keeps it there).
      if (note && !withheld && !text.includes(note)) wrap.append(el("p", { class: "muted state-note", text: note }));
      if (citations && citations.length) {
        wrap.append(el("ol", { class: "citations" }, citations.map((c) => el("li", {},
          el("a", { class: "cite", href: "/t/" + encodeURIComponent(TENANT) + "/documents/" + c.document_id + "?chunk=" + c.chunk_id + "#" + c.chunk_id, text: "[" + c.ref + "] " + c.title }),
          el("div", { class: "muted", text: c.snippet }),
          c.quote ? quoteNode(c) : null))));
      }
      if (tools && message && !withheld) tools.answer(wrap, text, message);
      return wrap;
    }

    // The open conversation is in the address (?session=…), so Back from a citation (or a
    // reload) returns to it.
    function remember(id) {
      const url = new URL(location.href);
      if (id) url.searchParams.set("session", id); else url.searchParams.delete("session");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }

    async function loadSessions() {
      try {
        const q = tools ? tools.query() : "";
        const page = await api("GET", tenantApi("/chat/sessions?limit=50" + (q ? "&q=" + encodeURIComponent(q) : "")));
        $("#session-list").replaceChildren(...page.items.map((s) => {
          const item = el("li", { "data-id": s.id },
            el("button", { type: "button", class: "link" + (s.id === sessionId ? " current" : ""), text: s.title || T("untitled"), onclick: () => openSession(s.id) }));
          if (tools) tools.session(item, s);
          return item;
        }));
      } catch (e) { failWith(e); }
    }

    async function openSession(id) {
      try {
        const detail = await api("GET", tenantApi("/chat/sessions/" + id));
        sessionId = id;
        remember(id);
        transcript.replaceChildren(...detail.messages.map((m) => m.role === "user"
          ? el("div", { class: "msg user", text: m.content })
          : answerNode(m.content, m.citations, m.state, m.withheld, m, m.note)));
        loadSessions();
      } catch (e) {
        failWith(e);
        // A conversation deleted since (an old address): start afresh.
        if (e.status === 404) newChat();
      }
    }

    function newChat() { sessionId = null; remember(null); transcript.replaceChildren(); loadSessions(); }
    $("#new-chat").addEventListener("click", newChat);

    $("#chat-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const question = $("#question").value.trim();
      if (!question) return;
      $("#question").value = "";
      $("#ask").disabled = true;
      transcript.append(el("div", { class: "msg user", text: question }));
      // While the model writes and its words are checked, only how far it has got is shown:
      // its draft is never on screen, so nothing the check replaces is ever read as the answer.
      const progress = el("p", { class: "progress-text", text: T("chat.writing", { tokens: 0 }) });
      const live = el("div", { class: "msg assistant streaming", "aria-busy": "true" }, progress);
      transcript.append(live);
      const body = { question, stream: true };
      if (sessionId) body.session_id = sessionId;
      const controller = new AbortController();
      const streaming = tools ? tools.streaming(controller) : () => {};
      try {
        const response = await fetch(tenantApi("/chat"), {
          method: "POST", credentials: "same-origin", signal: controller.signal,
          headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF, Accept: "text/event-stream" },
          body: JSON.stringify(body),
        });
        if (!response.ok) {
          const data = await response.json().catch(() => null);
          throw new ApiError(response.status, data);
        }
        // Server-Sent Events over fetch (EventSource cannot POST): `delta`, then `done` or `error`.
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        // `delta` carries the checked text just before `done`, which shows it with its label.
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const raw = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let event = "message";
            const data = [];
            for (const line of raw.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
            }
            if (!data.length) continue;
            const payload = JSON.parse(data.join("\n"));
            if (event === "progress") {
              progress.textContent = payload.stage === "checking"
                ? T("chat.checking") : T("chat.writing", { tokens: payload.tokens });
            } else if (event === "done") {
              sessionId = payload.session_id;
              remember(sessionId);
              live.replaceWith(answerNode(payload.answer, payload.citations, payload.state, false,
                payload.message_id ? { id: payload.message_id, feedback: null } : null, payload.note));
            } else if (event === "error") {
              throw new ApiError(500, payload);
            }
          }
        }
        loadSessions();
      } catch (e) {
        if (e.name === "AbortError") {
          // Stopped: no answer (nothing unchecked was shown), marked as stopped; the server
          // stores no half answer.
          live.classList.remove("streaming");
          live.classList.add("stopped");
          live.removeAttribute("aria-busy");
          live.replaceChildren(el("p", { class: "badge warn", text: T("chat.stopped") }));
          loadSessions();
          return;
        }
        live.classList.add("failed");
        if (e.code === "generator_preparing") {
          const preparation = e.details && e.details.preparation;
          live.textContent = T("preparing.ask_again", { percent: preparation ? preparation.percent : lastPercent });
          watchModel();
        } else {
          live.textContent = T("error", { message: e.message });
        }
      } finally {
        streaming();
        $("#ask").disabled = false;
      }
    });
    // Deferred scripts run before DOMContentLoaded: by then static/chat_tools.js is there.
    document.addEventListener("DOMContentLoaded", () => {
      if (window.cairnChatTools) tools = window.cairnChatTools({ openSession, loadSessions, newChat, current: () => sessionId });
      const asked = new URLSearchParams(location.search).get("session");
      if (asked) openSession(asked); else loadSessions();
      watchModel();
    });
  }

  // Members ----------------------------------------------------------------------------------
  function membersPage() {
    const table = $("#members");
    const writer = table.dataset.writer === "yes";
    const options = $("#role-options");
    async function load() {
      try {
        const page = await api("GET", tenantApi("/members?limit=200"));
        $("tbody", table).replaceChildren(...page.items.map((m) => {
          let roleCell = el("td", { text: T("role." + m.role) });
          if (writer) {
            const select = el("select", { "aria-label": T("role_of", { name: m.username }) });
            select.append(options.content.cloneNode(true));
            select.value = m.role;
            select.addEventListener("change", () => setRole(m.username, select.value));
            roleCell = el("td", {}, select);
          }
          return el("tr", { "data-username": m.username }, el("td", { text: m.username }), roleCell, el("td", { text: fmtTime(m.since) }),
            writer ? el("td", {}, el("button", { type: "button", class: "danger small", text: T("remove"), onclick: () => remove(m.username) })) : null);
        }));
      } catch (e) { failWith(e); }
    }
    async function setRole(username, role) {
      try { await api("PUT", tenantApi("/members/" + encodeURIComponent(username)), { role }); toast(T("saved")); } catch (e) { failWith(e); }
      load();
    }
    async function remove(username) {
      if (!confirm(T("confirm.remove", { name: username }))) return;
      try { await api("DELETE", tenantApi("/members/" + encodeURIComponent(username))); } catch (e) { failWith(e); }
      load();
    }
    if (writer) {
      $("#member-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        setRole($("#m-username").value.trim(), $("#m-role").value);
      });
    }
    load();
  }

  // Audit (the rows, filters and pager are server-rendered: app/web/governance.py) -----------
  function auditPage() {
    async function verify() {
      const badge = $("#chain-badge");
      try {
        const report = await api("GET", tenantApi("/audit/verify"));
        badge.textContent = report.ok ? T("chain.ok", { entries: report.entries }) : T("chain.broken");
        badge.className = "badge " + (report.ok ? "ok" : "bad");
        badge.dataset.ok = report.ok ? "true" : "false";
        $("#chain-detail").textContent = report.first_bad
          ? T("chain.first_bad", { seq: report.first_bad.seq, reason: report.first_bad.reason }) : "";
      } catch (e) { badge.textContent = T("chain.unknown"); failWith(e); }
    }
    verify();
  }

  // API keys ---------------------------------------------------------------------------------
  function keysPage() {
    async function load() {
      try {
        const keys = await api("GET", "/api/v1/api-keys");
        $("#keys tbody").replaceChildren(...keys.map((k) => el("tr", { "data-id": k.id, "data-name": k.name },
          el("td", { text: k.name }), el("td", { class: "mono", text: k.prefix + "…" }), el("td", { text: fmtTime(k.created_at) }),
          el("td", { text: fmtTime(k.expires_at) }),
          el("td", { class: k.revoked_at ? "revoked" : "active", text: k.revoked_at ? T("key.revoked") : T("key.active") }),
          el("td", {}, k.revoked_at ? null : el("button", { type: "button", class: "danger small revoke", text: T("revoke"), onclick: () => revoke(k) })))));
      } catch (e) { failWith(e); }
    }
    async function revoke(k) {
      if (!confirm(T("confirm.revoke", { name: k.name }))) return;
      try { await api("DELETE", "/api/v1/api-keys/" + k.id); } catch (e) { failWith(e); }
      load();
    }
    $("#key-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { name: $("#k-name").value.trim() };
      if ($("#k-days").value) body.expires_in_days = Number($("#k-days").value);
      try {
        const created = await api("POST", "/api/v1/api-keys", body);
        // Shown once, in the page only: never stored in the browser.
        $("#new-key-value").textContent = created.key;
        $("#new-key").hidden = false;
        load();
      } catch (e) { failWith(e); }
    });
    $("#copy-key").addEventListener("click", async () => {
      try { await navigator.clipboard.writeText($("#new-key-value").textContent); toast(T("copied")); }
      catch (e) {
        const range = document.createRange();
        range.selectNodeContents($("#new-key-value"));
        const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
        toast(T("copy.manual"));
      }
    });
    load();
  }

  // Platform: tenants and users --------------------------------------------------------------
  function tenantsPage() {
    // The server renders the first listing; after a change the rows come again from the API,
    // with the same columns: metadata and counts only, never a tenant's content.
    const table = $("#tenants");
    const count = (n) => (n === null || n === undefined ? "—" : String(n));
    async function load() {
      try {
        const page = await api("GET", "/api/v1/tenants?limit=" + table.dataset.limit + "&offset=" + table.dataset.offset);
        $("tbody", table).replaceChildren(...page.items.map((t) => el("tr", { "data-slug": t.slug },
          el("td", { class: "mono", text: t.slug }), el("td", { text: t.name }),
          el("td", { class: "members-count", text: count(t.members_count) }),
          el("td", { class: "documents-count", text: count(t.documents_count) }),
          el("td", { text: fmtTime(t.created_at) }),
          el("td", { text: t.role ? T("role." + t.role) : T("tenants.no_role") }),
          el("td", {}, el("a", { href: "/t/" + encodeURIComponent(t.slug) + "/members", text: T("tenants.manage_members") })))));
        $("#tenant-choices").replaceChildren(...page.items.map((t) => el("option", { value: t.slug, text: t.name })));
      } catch (e) { failWith(e); }
    }
    $("#tenant-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", "/api/v1/tenants", { slug: $("#t-slug").value.trim(), name: $("#t-name").value.trim(), join: $("#t-join").checked });
        toast(T("saved"));
        $("#tm-tenant").value = $("#t-slug").value.trim();
        load();
      } catch (e) { failWith(e); }
    });
    $("#tenant-member-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const slug = $("#tm-tenant").value.trim();
      try {
        await api("PUT", "/api/v1/tenants/" + encodeURIComponent(slug) + "/members/" + encodeURIComponent($("#tm-username").value.trim()), { role: $("#tm-role").value });
        toast(T("saved"));
        load();
      } catch (e) { failWith(e); }
    });
  }

  function usersPage() {
    async function load() {
      try {
        const page = await api("GET", "/api/v1/users?limit=200");
        $("#users tbody").replaceChildren(...page.items.map((u) => {
          const input = el("input", { type: "password", autocomplete: "new-password", "aria-label": T("new_password", { name: u.username }) });
          return el("tr", { "data-username": u.username }, el("td", { text: u.username + (u.is_platform_admin ? " ★" : "") }),
            el("td", { text: u.email || "—" }),
            el("td", {}, el("span", { class: u.is_active ? "active" : "revoked", text: u.is_active ? T("user.active") : T("user.disabled") }),
              el("button", { type: "button", class: "small toggle-active" + (u.is_active ? " danger" : ""), text: u.is_active ? T("user.disable") : T("user.enable"),
                onclick: async () => {
                  try { await api("PATCH", "/api/v1/users/" + encodeURIComponent(u.username), { is_active: !u.is_active }); toast(T("saved")); }
                  catch (e) { failWith(e); }
                  load();
                } })),
            el("td", { text: fmtTime(u.created_at) }),
            el("td", {}, input, el("button", { type: "button", class: "small", text: T("reset"), onclick: async () => {
              try { await api("POST", "/api/v1/users/" + encodeURIComponent(u.username) + "/password", { new_password: input.value }); input.value = ""; toast(T("saved")); }
              catch (e) { failWith(e); }
            } })));
        }));
      } catch (e) { failWith(e); }
    }
    $("#user-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const body = { username: $("#u-username").value.trim(), password: $("#u-password").value };
      if ($("#u-email").value.trim()) body.email = $("#u-email").value.trim();
      try { await api("POST", "/api/v1/users", body); toast(T("saved")); $("#user-form").reset(); load(); } catch (e) { failWith(e); }
    });
    load();
  }

  const pages = {
    documents: documentsPage, document: documentPage, search: searchPage, chat: chatPage,
    members: membersPage, audit: auditPage, keys: keysPage, tenants: tenantsPage, users: usersPage,
  };
  const start = pages[document.body.dataset.page];
  if (start) start();
})();
