// Chat tools: rename, delete and search conversations; copy an answer; stop a running answer;
// Enter sends (Shift+Enter breaks the line); thumbs up or down with an optional comment on each
// answer. The chat page (app.js, chatPage) calls window.cairnChatTools once, before it draws
// anything, and then the returned hooks as it draws. Text reaches the page through
// textContent only, like everywhere else.
"use strict";

(function () {
  const C = window.cairn;
  if (!C || document.body.dataset.page !== "chat") return;
  const { api, el, toast, T, tenantApi, failWith, $ } = C;

  window.cairnChatTools = function (chat) {
    const form = $("#chat-form");
    const question = $("#question");
    const search = $("#session-search");

    // Enter sends, Shift+Enter breaks the line; Enter that ends an input method's composition
    // (Chinese, Japanese) only ends it.
    question.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
      ev.preventDefault();
      if (!$("#ask").disabled) form.requestSubmit();
    });

    let searchTimer = null;
    search.addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => chat.loadSessions(), 250);
    });
    search.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(searchTimer); chat.loadSessions(); }
    });

    // Conversations -------------------------------------------------------------------------
    function rename(item, s) {
      const open = item.querySelector("button.link");
      const input = el("input", { type: "text", class: "rename-input", maxlength: "200", "aria-label": T("chat.rename_label") });
      input.value = s.title;
      let done = false;
      const finish = async (save) => {
        if (done) return;
        done = true;
        const title = input.value.trim();
        if (save && title && title !== s.title) {
          try { await api("PATCH", tenantApi("/chat/sessions/" + s.id), { title }); toast(T("chat.renamed")); }
          catch (e) { failWith(e); }
        }
        chat.loadSessions();
      };
      input.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); finish(true); }
        else if (ev.key === "Escape") { ev.preventDefault(); finish(false); }
      });
      input.addEventListener("blur", () => finish(false));
      open.replaceWith(input);
      input.focus();
      input.select();
    }

    async function remove(s) {
      if (!confirm(T("chat.confirm_delete", { title: s.title || T("untitled") }))) return;
      try {
        await api("DELETE", tenantApi("/chat/sessions/" + s.id));
        toast(T("chat.deleted"));
      } catch (e) { failWith(e); }
      if (chat.current() === s.id) chat.newChat(); else chat.loadSessions();
    }

    // Answers -------------------------------------------------------------------------------
    function copyButton(text) {
      const button = el("button", { type: "button", class: "small secondary copy-answer", text: T("chat.copy") });
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = T("chat.copied");
          button.dataset.state = "copied";
          clearTimeout(button.timer);
          button.timer = setTimeout(() => { button.textContent = T("chat.copy"); delete button.dataset.state; }, 3000);
        } catch (e) {
          toast(T("copy.manual"));
          const range = document.createRange();
          range.selectNodeContents(button.closest(".msg").querySelector(".answer-text"));
          const selection = window.getSelection();
          selection.removeAllRanges();
          selection.addRange(range);
        }
      });
      return button;
    }

    function feedbackBox(message) {
      const path = tenantApi("/chat/messages/" + message.id + "/feedback");
      let current = message.feedback || null;
      // Words, not emoji: a server's browser may have no emoji font.
      const up = el("button", { type: "button", class: "small secondary rate rate-up", text: "▲ " + T("feedback.up") });
      const down = el("button", { type: "button", class: "small secondary rate rate-down", text: "▼ " + T("feedback.down") });
      const state = el("span", { class: "feedback-state muted", role: "status" });
      const comment = el("textarea", { class: "feedback-text", rows: "2", maxlength: "2000", "aria-label": T("feedback.comment") });
      const save = el("button", { type: "submit", class: "small", text: T("feedback.save") });
      const commentForm = el("form", { class: "feedback-comment" },
        el("label", {}, T("feedback.comment"), comment), save);
      const box = el("div", { class: "feedback" }, up, down, state, commentForm);

      function show() {
        const rating = current ? current.rating : "";
        box.dataset.rating = rating;
        up.setAttribute("aria-pressed", String(rating === "up"));
        down.setAttribute("aria-pressed", String(rating === "down"));
        state.textContent = rating ? T("feedback.rated_" + rating) + (current.comment ? " — " + current.comment : "") : "";
        commentForm.hidden = !rating;
        if (!rating) comment.value = "";
      }

      async function rate(rating, text) {
        try {
          if (current && current.rating === rating && text === undefined) {
            await api("DELETE", path);
            current = null;
            toast(T("feedback.removed"));
          } else {
            const body = { rating };
            const kept = text !== undefined ? text : (current && current.comment) || "";
            if (kept) body.comment = kept;
            current = await api("PUT", path, body);
            toast(T("feedback.saved"));
          }
          comment.value = current && current.comment ? current.comment : "";
          show();
        } catch (e) { failWith(e); }
      }
      up.addEventListener("click", () => rate("up"));
      down.addEventListener("click", () => rate("down"));
      commentForm.addEventListener("submit", (ev) => {
        ev.preventDefault();
        if (current) rate(current.rating, comment.value.trim());
      });
      comment.value = current && current.comment ? current.comment : "";
      show();
      return box;
    }

    return {
      query: () => search.value.trim(),
      session(item, s) {
        item.append(
          el("button", { type: "button", class: "small secondary rename", "aria-label": T("chat.rename_of", { title: s.title }), text: T("chat.rename"), onclick: () => rename(item, s) }),
          el("button", { type: "button", class: "small danger delete", "aria-label": T("chat.delete_of", { title: s.title }), text: T("chat.delete"), onclick: () => remove(s) }));
      },
      answer(wrap, text, message) {
        const tools = el("div", { class: "answer-tools" }, copyButton(text));
        if (message.id) tools.append(feedbackBox(message));
        wrap.append(tools);
      },
      // A Stop button while the answer streams; the returned function takes it away.
      streaming(controller) {
        const stop = el("button", { type: "button", id: "stop", class: "danger", text: T("chat.stop") });
        stop.addEventListener("click", () => controller.abort());
        $("#ask").after(stop);
        return () => stop.remove();
      },
    };
  };
})();
