// What people do with an answer: copy it, act on it (data-feedback-action), edit a draft made from it.

import { expectAttempt, MESSAGE } from "./messages.js";
import { editRatio } from "./text.js";
import { send, state } from "./traces.js";

let copying;  // a copy action was just clicked: the callback that reports the length copied

// Which trace an element belongs to: its draft box, its message, or an action carrying the id itself.
function traceOf(node) {
  node = node && (node.nodeType == 1 ? node : node.parentElement);
  node = node?.closest("[data-feedback-draft],[data-feedback-action][data-trace-id]," + MESSAGE);
  return node && (node.getAttribute("data-feedback-draft") || node.getAttribute("data-trace-id"));
}

function copied(trace, length) {
  let s = state(trace);
  if (!length) return;
  s.copied_ = s.good_ = 1;
  send(trace, "copied", { length });
}

export function onCopy(e) {
  let selection = getSelection();
  let node = e.target, length, trace;
  if (node.setSelectionRange) length = node.selectionEnd - node.selectionStart;
  else length = selection ? String(selection).length : 0, node = selection?.rangeCount && selection.getRangeAt(0).commonAncestorContainer;
  if (copying) return copying(length);  // the copy action's own copy (e.g. via execCommand)
  (trace = traceOf(node)) && copied(trace, length);
}

// Clicks on data-feedback-action buttons, before the app's own handlers (capture).
export function onAction(e) {
  let button = e.target.closest?.("[data-feedback-action]"), action = button?.getAttribute("data-feedback-action"),
    trace = button && traceOf(button), clipboard = navigator.clipboard;
  let s, write, done;
  if (!trace) return;
  s = state(trace);
  if (action == "regenerate") {
    let attempt = s.attempt_ + ++s.regenerations_;
    expectAttempt(attempt);
    send(trace, "regenerated", { attempt });
  }
  if (action == "accept" || action == "insert") {
    s.good_ = 1;
    send(trace, "accepted", { how: action });
  }
  if (action == "copy") {
    // The length is what the app copies, seen through the copy event or clipboard.writeText (never kept);
    // failing both, the length of the message's text (controls included: a rough fallback).
    copying = done = length => {
      if (copying != done) return;
      copying = 0;
      if (write) delete clipboard.writeText;
      copied(trace, length);
    };
    if (clipboard?.writeText && !Object.hasOwn(clipboard, "writeText")) {
      write = clipboard.writeText;
      clipboard.writeText = (...args) => (done(String(args[0]).length), write.apply(clipboard, args));
    }
    setTimeout(() => done(s.element_.innerText.length), 500);
  }
}

// Drafts: the original is the textarea's default value, or the text when first focused.
function draftValue(draft) {
  return draft.value ?? draft.innerText;
}

function edited(s, draft) {
  let ratio = editRatio(s.original_, draftValue(draft));
  if (ratio === s.ratio_) return;
  s.ratio_ = ratio;
  s.good_ = 1;
  send(s.trace_, "edited", { edit_ratio: ratio });
}

export function onDraft(e) {
  let draft = e.target.closest?.("[data-feedback-draft]"), s = draft && state(draft.getAttribute("data-feedback-draft"));
  if (!s) return;
  s.original_ ??= draft.defaultValue || draftValue(draft);
  if (e.type == "input" ? s.ratio_ == null : e.type == "focusout" && s.ratio_ != null) edited(s, draft);
}

export function onSubmit(e) {
  e.target.querySelectorAll("[data-feedback-draft]").forEach(draft => {
    let s = state(draft.getAttribute("data-feedback-draft"));
    s.ratio_ != null && edited(s, draft);
  });
}
