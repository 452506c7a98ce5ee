// Quill demo chat: sends prompts to /api/chat, streams the answer in, and marks messages up per
// the Backchannel widget contract (data-trace-id, data-feedback-token, data-streaming,
// data-feedback-role="user", data-feedback-action, data-feedback-draft). The widget does the rest,
// and tells the page about each vote (backchannel.on("feedback")): after a thumbs-down Quill asks
// what it could have done better, and the reply becomes that vote's comment (backchannel.comment).
(function () {
  "use strict";

  var app = document.getElementById("app");
  var conversation = document.getElementById("conversation");
  var emptyState = document.getElementById("empty-state");
  var form = document.getElementById("composer");
  var promptBox = document.getElementById("prompt");
  var templateSelect = document.getElementById("template");
  var sendButton = document.getElementById("send");

  // ?speed=N streams N times faster, ?speed=max without pauses (for tests).
  var speed = new URLSearchParams(location.search).get("speed");
  var chatUrl = "/api/chat" + (speed ? "?speed=" + encodeURIComponent(speed) : "");
  var pinnedModel = app.getAttribute("data-pinned-model");  // ?model=: this variant, not the session's
  var busy = false;
  var followUp = null;  // {traceId} while Quill waits for the answer to "What could I have done better?"

  var ICONS = {
    copy: '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="9" y="9" width="11" height="11" rx="2"/><path d="M5 15V6a2 2 0 0 1 2-2h9"/></svg>',
    regenerate: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M20 11a8 8 0 1 0-2.3 5.7"/><path d="M20 4v7h-7"/></svg>'
  };

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    if (text != null) node.textContent = text;
    return node;
  }

  function setBusy(value) {
    busy = value;
    sendButton.disabled = value;
    form.setAttribute("aria-busy", String(value));
    conversation.querySelectorAll('[data-feedback-action="regenerate"]').forEach(function (button) {
      button.disabled = value;
    });
  }

  function scrollToEnd() {
    conversation.scrollTop = conversation.scrollHeight;
  }

  // A prompt is marked data-feedback-role="user" (the widget compares prompts to spot rephrasing); a reply to
  // Quill's follow-up question is not a prompt.
  function addUserMessage(text, isPrompt) {
    var row = el("div", { "class": "message user", "data-testid": "user-message" });
    var bubble = el("div", { "class": "bubble" }, text);
    if (isPrompt !== false) bubble.setAttribute("data-feedback-role", "user");
    row.appendChild(bubble);
    conversation.appendChild(row);
  }

  function addTyping() {
    var typing = el("div", { "class": "message assistant typing", role: "status", "data-testid": "typing" });
    typing.appendChild(el("div", { "class": "avatar", "aria-hidden": "true" }, "Q"));
    typing.appendChild(el("span", { "class": "visually-hidden" }, "Quill is typing"));
    var dots = el("div", { "class": "dots" });
    for (var i = 0; i < 3; i++) dots.appendChild(el("span"));
    typing.appendChild(dots);
    conversation.appendChild(typing);
    return typing;
  }

  function actionButton(action, label) {
    var button = el("button", {
      type: "button", "class": "action", "data-feedback-action": action, "data-testid": action + "-button"
    });
    button.innerHTML = ICONS[action];
    button.appendChild(el("span", null, label));
    button.disabled = true;
    return button;
  }

  // The message element is built with every contract attribute set before it enters the DOM,
  // so the widget sees a complete, still-streaming message.
  function buildAssistantMessage(start, turn) {
    var message = el("article", {
      "class": "message assistant",
      "data-testid": "assistant-message",
      "data-trace-id": start.trace_id,
      "data-streaming": "true",
      "data-model": start.model,
      "data-template": start.template,
      "data-attempt": String(start.attempt)
    });
    if (start.feedback_token) message.setAttribute("data-feedback-token", start.feedback_token);
    message.appendChild(el("div", { "class": "avatar", "aria-hidden": "true" }, "Q"));
    var body = el("div", { "class": "message-body" });
    var content = el("div", { "class": "content", "data-testid": "assistant-text" });
    var actions = el("div", { "class": "actions" });
    var copy = actionButton("copy", "Copy");
    var regenerate = actionButton("regenerate", "Regenerate");
    copy.addEventListener("click", function () { copyAnswer(copy, content.textContent); });
    regenerate.addEventListener("click", function () {
      if (busy) return;
      turn.attempts += 1;
      turn.parent = turn.parent || start.trace_id;  // every regeneration answers the first answer's prompt
      generate(turn);
    });
    actions.appendChild(copy);
    actions.appendChild(regenerate);
    var meta = start.model + (start.attempt > 1 ? " · attempt " + start.attempt : "");
    actions.appendChild(el("span", { "class": "meta", "data-testid": "message-meta" }, meta));
    body.appendChild(content);
    body.appendChild(actions);
    message.appendChild(body);
    return { message: message, body: body, content: content, actions: actions };
  }

  function buildDraft(traceId, text) {
    var draft = el("form", { "class": "draft", "data-testid": "draft-form" });
    var id = "draft-" + traceId;
    draft.appendChild(el("label", { "for": id }, "Your draft — edit it, then send"));
    // textContent sets the default value too, so the widget can compare edits against the original.
    var rows = String(Math.min(16, text.split("\n").length + 1));
    var box = el("textarea", { id: id, rows: rows, "data-feedback-draft": traceId, "data-testid": "draft-box" }, text);
    draft.appendChild(box);
    var footer = el("div", { "class": "draft-footer" });
    var status = el("span", { "class": "draft-status", role: "status", "data-testid": "draft-status" });
    var send = el("button", { type: "submit", "class": "primary small", "data-testid": "draft-send" }, "Send draft");
    footer.appendChild(status);
    footer.appendChild(send);
    draft.appendChild(footer);
    draft.addEventListener("submit", function (event) {
      event.preventDefault();
      box.readOnly = true;
      send.disabled = true;
      status.textContent = "Sent";
    });
    return draft;
  }

  function copyAnswer(button, text) {
    var label = button.querySelector("span");
    function done(ok) {
      label.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(function () { label.textContent = "Copy"; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(legacyCopy(text)); });
    } else {
      done(legacyCopy(text));
    }
  }

  function legacyCopy(text) {
    // Outside any message, so the widget does not also count it as a selection copy.
    var scratch = el("textarea", { readonly: "", "aria-hidden": "true", "class": "copy-scratch" });
    scratch.value = text;
    document.body.appendChild(scratch);
    scratch.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    scratch.remove();
    return ok;
  }

  async function* serverEvents(response) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var read = await reader.read();
      if (read.done) return;
      buffer += decoder.decode(read.value, { stream: true });
      var cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        var block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        var event = "message", data = "";
        block.split("\n").forEach(function (line) {
          if (line.indexOf("event:") === 0) event = line.slice(6).trim();
          else if (line.indexOf("data:") === 0) data += line.slice(5).trim();
        });
        yield { event: event, data: data ? JSON.parse(data) : null };
      }
    }
  }

  function showError(text) {
    conversation.appendChild(el("div", { "class": "error", role: "alert", "data-testid": "error" }, text));
    scrollToEnd();
  }

  async function generate(turn) {
    setBusy(true);
    var typing = addTyping();
    scrollToEnd();
    var parts = null;
    var finished = false;
    try {
      var response = await fetch(chatUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ prompt: turn.prompt, template: turn.template, attempt: turn.attempts,
                               model: pinnedModel || undefined, parent_trace_id: turn.parent })
      });
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      for await (var message of serverEvents(response)) {
        if (message.event === "start") {
          parts = buildAssistantMessage(message.data, turn);
          typing.replaceWith(parts.message);
        } else if (message.event === "delta" && parts) {
          parts.content.textContent += message.data.text;
          scrollToEnd();
        } else if (message.event === "done" && parts) {
          finished = true;
        }
      }
      if (!finished) throw new Error("the answer was cut off");
    } catch (error) {
      showError("Something went wrong (" + error.message + "). Try again.");
    } finally {
      typing.remove();
      if (parts) {
        if (finished && turn.template === "draft") {
          parts.body.insertBefore(buildDraft(parts.message.getAttribute("data-trace-id"), parts.content.textContent), parts.actions);
        }
        parts.actions.querySelectorAll("button").forEach(function (button) { button.disabled = false; });
        parts.message.setAttribute("data-streaming", "false");
      }
      setBusy(false);
      scrollToEnd();
    }
  }

  function addQuillNote(text, testid) {
    var row = el("div", { "class": "message assistant follow-up", "data-testid": testid });
    row.appendChild(el("div", { "class": "avatar", "aria-hidden": "true" }, "Q"));
    row.appendChild(el("div", { "class": "bubble" }, text));
    conversation.appendChild(row);
  }

  function askFollowUp(traceId) {
    endFollowUp();
    addQuillNote("What could I have done better?", "follow-up");
    followUp = { traceId: traceId };
    form.setAttribute("data-follow-up", traceId);
    promptBox.placeholder = "Tell Quill what could be better…";
    scrollToEnd();
    // The widget has just opened its reasons under the answer: on a small screen, keep them in view.
    var widget = conversation.querySelector('article[data-trace-id="' + CSS.escape(traceId) + '"] backchannel-feedback');
    if (widget) requestAnimationFrame(function () { widget.scrollIntoView({ block: "nearest" }); });
  }

  function endFollowUp() {
    followUp = null;
    form.removeAttribute("data-follow-up");
    promptBox.placeholder = "Message Quill…";
  }

  function answerFollowUp(text) {
    var traceId = followUp.traceId;
    endFollowUp();
    addUserMessage(text, false);
    backchannel("comment", traceId, text);
    addQuillNote("Thanks, that helps. I've passed it on to the team.", "follow-up-thanks");
    scrollToEnd();
  }

  // value: 0 / 1, or "down" / "up"; update: the same vote again with a reason or comment added.
  backchannel("on", "feedback", function (vote) {
    var down = vote.value === 0 || vote.value === "down";
    var asked = followUp && followUp.traceId === vote.traceId;
    if (!down || vote.comment) {
      if (asked) endFollowUp();  // voted up instead, or answered in the widget's own comment box
    } else if (!vote.update && !asked) {
      askFollowUp(vote.traceId);
    }
  });

  function send(prompt, template) {
    if (busy || !prompt.trim()) return;
    if (emptyState) emptyState.hidden = true;
    addUserMessage(prompt);
    generate({ prompt: prompt, template: template, attempts: 1 });
  }

  function autosize() {
    promptBox.style.height = "auto";
    promptBox.style.height = Math.min(promptBox.scrollHeight, 200) + "px";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var prompt = promptBox.value;
    if (!prompt.trim() || (busy && !followUp)) return;
    promptBox.value = "";
    autosize();
    if (followUp) answerFollowUp(prompt.trim());
    else send(prompt, templateSelect.value);
  });

  promptBox.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  promptBox.addEventListener("input", autosize);

  document.querySelectorAll(".suggestion").forEach(function (button) {
    button.addEventListener("click", function () {
      templateSelect.value = button.getAttribute("data-template");
      promptBox.value = button.getAttribute("data-prompt");
      autosize();
      promptBox.focus();
    });
  });

  document.getElementById("new-chat").addEventListener("click", function () {
    if (busy) return;
    endFollowUp();
    conversation.querySelectorAll(".message, .error").forEach(function (node) { node.remove(); });
    emptyState.hidden = false;
    promptBox.focus();
  });
})();
