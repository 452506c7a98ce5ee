// The thumbs: an open shadow root in a <backchannel-feedback> host appended to the message.
// Colours are the system colours of the preferred scheme (color-scheme: light dark follows prefers-color-scheme);
// themes override them with --bc-fg, --bc-bg, --bc-border, --bc-accent, --bc-accent-fg, --bc-radius, --bc-font.

import { config } from "./config.js";

const STYLE =
  // The host reserves the row's height from the moment the message appears, so showing the thumbs moves nothing.
  // !important inside a shadow root beats the page's !important on the host.
  ":host{display:block!important;min-height:32px!important;margin:8px 0 0!important}" +
  ".w{all:initial;color-scheme:light dark;font:13px/1.4 var(--bc-font,system-ui,sans-serif);color:var(--bc-fg,CanvasText)}" +
  ".w,.p{display:flex;flex-flow:wrap;align-items:center;gap:6px}" +
  "button,textarea{all:unset;box-sizing:border-box;background:var(--bc-bg,Canvas);border:1px solid var(--bc-border,GrayText);border-radius:var(--bc-radius,8px);padding:4px 10px;cursor:pointer}" +
  ".t{display:inline-flex;width:32px;height:32px;padding:7px}" +
  "svg{width:16px;fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round}" +
  "[part=down] svg{rotate:180deg}" +
  "[aria-pressed=true]{background:var(--bc-accent,CanvasText);color:var(--bc-accent-fg,Canvas)}" +
  ":focus-visible{outline:2px solid var(--bc-accent,CanvasText);outline-offset:2px}" +
  // Text that is not on a control gets the widget's own background, so it stays legible on any page.
  ".p{flex-basis:100%}[hidden]{display:none}" +
  ".p,[role=status]:not(:empty){background:var(--bc-bg,Canvas);border-radius:var(--bc-radius,8px);padding:6px}" +
  "textarea{flex-basis:100%;min-height:4em;cursor:text;resize:vertical;white-space:pre-wrap}";

// Feather's thumbs-up (MIT); thumbs-down is the same, turned over.
const THUMB = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.3a2 2 0 0 0 2-1.7l1.4-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3"/></svg>';

export function host(s) {
  let element = document.createElement("backchannel-feedback"), root = element.attachShadow({ mode: "open" });
  root.innerHTML = "<style>" + STYLE;  // the browser parses one text once, however many roots share it
  element.state_ = s;
  return element;
}

function element(tag, attributes, text) {
  let e = document.createElement(tag);
  for (let name in attributes) e.setAttribute(name, attributes[name]);
  if (text) e.textContent = text;
  return e;
}

// Build the controls (once per trace; the host and its shadow root follow the trace across re-renders).
// rate(trace, value, options) records a vote.
export function draw(s, rate) {
  let labels = config.labels, trace = s.trace_;
  let up, down, status, panel, comment, submit, reasons, controls = element("div", { class: "w" });
  controls.append(up = element("button", { part: "up", class: "t", "aria-label": labels.up }),
    down = element("button", { part: "down", class: "t", "aria-label": labels.down }),
    status = element("span", { role: "status", part: "thanks" }),
    panel = element("div", { class: "p", role: "group", "aria-labelledby": "q", hidden: "" }));
  up.innerHTML = down.innerHTML = THUMB;
  panel.append(element("span", { id: "q" }, labels.reason_prompt),
    ...reasons = config.reasons.map(r => element("button", { part: "reason", value: r.code }, r.label)),
    comment = element("textarea", { part: "comment", maxlength: 1000, "aria-label": labels.comment_placeholder, placeholder: labels.comment_placeholder }),
    submit = element("button", { part: "submit" }, labels.submit));
  function open(yes) {
    panel.hidden = !yes;
  }
  function thank() {
    open(0);
    status.textContent = labels.thanks;
  }
  // Show the current vote.
  s.paint_ = () => {
    up.setAttribute("aria-pressed", s.vote_ === 1);
    down.setAttribute("aria-pressed", s.vote_ === 0);
    reasons.forEach(b => b.setAttribute("aria-pressed", s.vote_ === 0 && b.value == s.reason_));
    if (s.vote_ !== 0) open(0);
  };
  reasons.forEach(b => b.onclick = () => { rate(trace, 0, { reason: b.value }); comment.focus() });
  up.onclick = () => { rate(trace, 1); thank() };
  down.onclick = () => {
    status.textContent = "";
    if (s.vote_ !== 0) rate(trace, 0);
    open(1);
    reasons[0]?.focus();
  };
  submit.onclick = () => {
    let text = comment.value.trim();
    if (text) { rate(trace, 0, { comment: text }); comment.value = "" }
    thank();
    down.focus();
  };
  comment.onkeydown = e => { if (e.key == "Enter" && (e.ctrlKey || e.metaKey)) submit.click() };
  panel.onkeydown = e => { if (e.key == "Escape") { open(0); down.focus() } };
  s.host_.shadowRoot.append(controls);
  s.paint_();
}

// Show the current vote, once the controls are drawn.
export function paint(s) {
  s.paint_?.();
}
