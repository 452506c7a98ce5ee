// Assistant messages and user prompts on the page: the thumbs under each answer, rephrased prompts.
// No text from the page ever leaves: only lengths, ratios and similarities computed from it.

import { config, configLoaded, delay } from "./config.js";
import { similarity } from "./text.js";
import { rate, send, state, token } from "./traces.js";
import { draw, host } from "./ui.js";

export const MESSAGE = "[data-trace-id]:not([data-feedback-action]):not([data-feedback-draft]):not([data-feedback-role=user])";
const PROMPT = "[data-feedback-role=user]", EITHER = MESSAGE + "," + PROMPT;

export let turns = 0;         // assistant messages seen on this page
export let last;              // the state of the latest of them
let nextAttempt = 0,          // attempt number of the message a regenerate click is about to bring
  lastPrompt,                 // the latest user prompt: {text_: normalised, at_: ms}
  prompts = new Set(),        // every prompt text seen, so a re-rendered prompt is not a new one
  todo = new Map(),           // messages and prompts met, in order, not yet handled -> live (added after load)
  slice;                      // the timer of the next slice of todo

export function expectAttempt(attempt) {
  nextAttempt = attempt;
}

// A message element appeared or changed.
function attach(element) {
  let trace = element.getAttribute("data-trace-id"), s = trace && state(trace),
    old = element.querySelector(":scope>backchannel-feedback");
  if (!s) return;
  if (!s.host_) {
    s.attempt_ = nextAttempt || 1;
    nextAttempt = 0;
    turns++;
    last = s;
    s.seen_ = Date.now();
    s.host_ = host(s);
  }
  if (old && old.state_ != s) old.remove();  // the element was reused for another trace
  if (s.element_ != element) {
    if (s.element_?.isConnected && s.element_.contains(s.host_)) return;  // one widget per trace
    s.element_ = element;
  }
  if (s.host_.parentNode != element) element.append(s.host_);
  settle(s);
}

// Streaming ends when data-streaming goes from "true" to anything else; without the attribute,
// after 1 s without a change.
function settle(s) {
  let streaming = s.element_.getAttribute("data-streaming");
  if (s.shown_) return;
  clearTimeout(s.wait_);
  if (streaming == "true") s.streamed_ = 1, s.done_ = 0;
  else if (s.done_ || streaming != null || s.streamed_) finish(s);
  else s.wait_ = setTimeout(finish, 1e3, s);
}

function finish(s) {
  s.done_ ||= Date.now();
  configLoaded.then(() => {
    clearTimeout(s.wait_);
    if (s.done_ && config) s.wait_ = setTimeout(show, s.done_ + delay() - Date.now(), s);
  });
}

function show(s) {
  if (s.shown_ || !s.done_ || !s.element_.isConnected || config.require_token && !token(s)) return;
  s.shown_ = Date.now();
  draw(s, rate);
  send(s.trace_, "shown");
}

export function scan(root, live) {
  [root, ...root.querySelectorAll(EITHER)].forEach(e => e.matches(EITHER) && (todo.has(e) || todo.set(e, live)));
}

export function watch(records) {
  records.forEach(record => {
    let target = record.target;
    if (record.addedNodes[0]?.state_) return;  // attach() put a widget in
    record.addedNodes.forEach(x => x.nodeType == 1 && scan(x, 1));
    (target = (target.nodeType == 1 ? target : target.parentElement)?.closest(MESSAGE)) && (todo.has(target) || todo.set(target, 1));
  });
  slice || work();
}

// Handle what was met, in slices of at most 8 ms with the page's tasks in between: 200 messages added at once
// make no long task.
export function work() {
  let end = performance.now() + 8;
  slice = 0;
  for (let [element, live] of todo) {
    if (performance.now() > end) return slice = setTimeout(work);
    todo.delete(element);
    element.matches(PROMPT) ? prompt(element, live) : attach(element);
  }
}

// A new prompt within 60 s of the last answer, similar to the prompt before, on an answer nobody copied.
function prompt(element, live) {
  let text = element.textContent.trim().toLowerCase(), previous = lastPrompt, s = last;
  let score;
  if (!text || prompts.has(text)) return;
  prompts.add(text);
  lastPrompt = { text_: text, at_: Date.now() };
  if (live && previous && s && !s.copied_ && !s.rephrased_ && s.seen_ >= previous.at_ &&
      Date.now() - (s.done_ || s.seen_) <= 6e4 && (score = similarity(previous.text_, text)) >= .5) {
    s.rephrased_ = 1;
    send(s.trace_, "rephrased", { similarity: score });
  }
}
