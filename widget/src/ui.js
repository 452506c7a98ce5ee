// The thumbs: an open shadow root in a <backchannel-feedback> host appended to the message.
// Colours are the system colours of the preferred scheme (color-scheme: light dark follows prefers-color-scheme);
// themes override them with --bc-fg, --bc-bg, --bc-border, --bc-accent, --bc-accent-fg, --bc-radius, --bc-font.

var STYLE =
  // The host reserves the row's height from the moment the message appears, so showing the thumbs moves nothing.
  // !important inside a shadow root beats the page's !important on the host.
  ":host{display:block!important;min-height:32px!important;margin:8px 0 0!important}" +
  ".w{all:initial;color-scheme:light dark;font:13px/1.4 var(--bc-font,system-ui,sans-serif);color:var(--bc-fg,CanvasText)}" +
  ".w,.p{display:flex;flex-wrap:wrap;align-items:center;gap:6px}" +
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
var THUMB = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.3a2 2 0 0 0 2-1.7l1.4-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3"/></svg>';

var SHEET;
function host(s) {
  var h = D.createElement("backchannel-feedback"), root = h.attachShadow({ mode: "open" });
  try {
    SHEET || (SHEET = new CSSStyleSheet()).replaceSync(STYLE);
    root.adoptedStyleSheets = [SHEET];
  } catch (e) {
    root.innerHTML = "<style>" + STYLE + "</style>";
  }
  h._s = s;
  return h;
}

function el(tag, attrs, text) {
  var e = D.createElement(tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (text) e.textContent = text;
  return e;
}

// Build the controls (once per trace; the host and its shadow root follow the trace across re-renders):
// a clone of a tree built on the first call, so the thumb is parsed once, not twice per message.
var TPL;
function draw(s) {
  var L = CFG.labels, t = s.t, w = TPL, up, down, status, panel, reasons, comment, submit;
  if (!w) {
    w = TPL = el("div", { class: "w" });
    w.append(up = el("button", { part: "up", class: "t", "aria-label": L.up }),
      down = el("button", { part: "down", class: "t", "aria-label": L.down }),
      el("span", { role: "status", part: "thanks" }),
      panel = el("div", { class: "p", role: "group", "aria-labelledby": "q", hidden: "" }));
    up.innerHTML = down.innerHTML = THUMB;
    panel.append(el("span", { id: "q" }, L.reason_prompt),
      ...CFG.reasons.map(r => el("button", { part: "reason", value: r.code }, r.label)),
      el("textarea", { part: "comment", maxlength: 1000, "aria-label": L.comment_placeholder, placeholder: L.comment_placeholder }),
      el("button", { part: "submit" }, L.submit));
  }
  w = w.cloneNode(true);
  [up, down, status, panel] = w.children;
  [, ...reasons] = panel.children;
  submit = reasons.pop();
  comment = reasons.pop();
  reasons.forEach(b => b.onclick = () => { rate(t, 0, { reason: b.value }); comment.focus() });
  up.onclick = () => { rate(t, 1); thank(s) };
  down.onclick = () => {
    status.textContent = "";
    if (s.v !== 0) rate(t, 0);
    open(s, 1);
    reasons[0]?.focus();
  };
  submit.onclick = () => {
    var c = comment.value.trim();
    if (c) { rate(t, 0, { comment: c }); comment.value = "" }
    thank(s);
    down.focus();
  };
  comment.onkeydown = e => { if (e.key == "Enter" && (e.ctrlKey || e.metaKey)) submit.click() };
  panel.onkeydown = e => { if (e.key == "Escape") { open(s, 0); down.focus() } };
  s.h.shadowRoot.append(w);
  s.u = { up, down, status, panel, reasons };
  paint(s);
}

function open(s, yes) { s.u.panel.hidden = !yes }

function thank(s) {
  open(s, 0);
  s.u.status.textContent = CFG.labels.thanks;
}

// Show the current vote.
function paint(s) {
  var u = s.u;
  if (!u) return;
  u.up.setAttribute("aria-pressed", s.v === 1);
  u.down.setAttribute("aria-pressed", s.v === 0);
  u.reasons.forEach(b => b.setAttribute("aria-pressed", s.v === 0 && b.value == s.reason));
  if (s.v !== 0) open(s, 0);
}
