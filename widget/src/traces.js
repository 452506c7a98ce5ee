// What the widget knows per trace, and the events it sends about it. Keyed by the page's trace ids, so a Map:
// an id such as "__proto__" is just another key.

import { sessionId, tabSession, uuid } from "./config.js";
import { emit } from "./hooks.js";
import { add } from "./queue.js";
import { paint } from "./ui.js";

// trace id -> {trace_, element_ (its message), host_ (the widget's element), token_ (last seen), attempt_ (1, 2, ...
// for regenerated answers), regenerations_ (asked from it), streamed_ (was seen streaming), done_/seen_/shown_ (ms),
// wait_ (timer), vote_ (1|0), reason_, comment_, acted_ (an action was sent), good_ (a positive action), copied_,
// rephrased_, original_/ratio_ (draft edits), paint_ (shows the vote on the controls, once drawn)}
const traces = new Map();

export function state(trace) {
  let s = traces.get(trace);
  if (!s) traces.set(trace, s = { trace_: trace, attempt_: 1, regenerations_: 0 });
  return s;
}

export function token(s) {
  return s.token_ = s.element_?.getAttribute("data-feedback-token") || s.token_;
}

// An event about a trace, not yet sent. dwell_ms: from the thumbs being shown to the first action.
export function makeEvent(s, type, props) {
  let now = Date.now(), event = { ...props, id: uuid(), type, trace_id: s.trace_, ts: now }, t = token(s);
  if (t) event.token = t;
  if (sessionId || !t) event.session_id = sessionId || tabSession();
  if (type != "shown" && s.shown_ && !s.acted_) event.dwell_ms = now - s.shown_;
  return event;
}

export function sendEvent(s, event, props) {
  if (event.type != "shown") s.acted_ = 1;
  add([event]);
  if (event.type != "feedback") emit("signal", { type: event.type, traceId: s.trace_, props: props || {} });
}

export function send(trace, type, props) {
  let s = state(trace);
  sendEvent(s, makeEvent(s, type, props), props);
}

// An explicit vote. A second call with the same value updates it (reason, comment); a new value replaces it.
export function rate(trace, value, options) {
  let s = state(trace), update = s.vote_ === value, props = { value };
  options = options || {};
  if (!update) s.reason_ = s.comment_ = 0;
  s.vote_ = value;
  if (value) s.good_ = 1;
  if (options.reason) s.reason_ = String(options.reason);
  if (options.comment) s.comment_ = String(options.comment).slice(0, 1000);
  if (s.reason_) props.reason = s.reason_;
  if (s.comment_) props.comment = s.comment_;
  send(trace, "feedback", props);
  emit("feedback", { ...props, traceId: trace, value: value ? "up" : "down", update });
  paint(s);
}

// The text becomes the comment of this page's current vote on the trace (an update of that vote); false if none.
export function comment(trace, text) {
  let s = traces.get(trace = String(trace));
  text = String(text ?? "").trim();
  if (s?.vote_ == null || !text) return false;
  rate(trace, s.vote_, { comment: text });
  return true;
}
