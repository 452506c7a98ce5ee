// Messages and what people do with them. No text from the page ever leaves this file: only lengths,
// ratios and similarities computed here.

var MSG = "[data-trace-id]:not([data-feedback-action]):not([data-feedback-draft]):not([data-feedback-role=user])",
  USER = "[data-feedback-role=user]",
  T = {},             // trace id -> state (below)
  TURNS = 0,          // assistant messages seen on this page
  LAST,               // the latest of them
  PROMPT,             // the latest user prompt: {x: normalised text, at: ms}
  PROMPTS = new Set(),// every prompt text seen, so a re-rendered prompt is not a new one
  ATTEMPT = 0,        // attempt number of the message a regenerate click is about to bring
  COPYING,            // a copy action was just clicked: {t, n: callback}
  ABANDONED,
  TODO = new Map(),   // messages and prompts met, in order, not yet handled -> live (added after load)
  SLICE;              // the timer of the next slice of TODO

// State of one trace: el (its message element), h (widget host), k (last token seen), gen (attempt number),
// n (regenerations asked from it), st (was seen streaming), done/shown (ms), w (timer), v (vote 1|0), reason,
// comment, acted (an action was sent), good (a positive action), copied, orig/ratio (draft edits), u (controls).
function state(t) { return T[t] || (T[t] = { t, gen: 1, n: 0 }) }

function token(s) { return (s.k = s.el?.getAttribute("data-feedback-token") || s.k) }

function send(t, type, props) {
  var s = state(t), now = Date.now(), e = Object.assign({}, props, { id: uuid(), type, trace_id: t, ts: now }), k = token(s);
  if (k) e.token = k;
  if (SESSION || !k) e.session_id = SESSION || tabSession();
  if (type != "shown") {
    if (s.shown && !s.acted) e.dwell_ms = now - s.shown;
    s.acted = 1;
  }
  push(e);
}

// An explicit vote. A second call with the same value updates it (reason, comment); a new value replaces it.
function rate(t, v, o) {
  var s = state(t), p = { value: v };
  o = o || {};
  if (s.v !== v) s.reason = s.comment = 0;
  s.v = v;
  if (v) s.good = 1;
  if (o.reason) s.reason = String(o.reason);
  if (o.comment) s.comment = String(o.comment).slice(0, 1000);
  if (s.reason) p.reason = s.reason;
  if (s.comment) p.comment = s.comment;
  send(t, "feedback", p);
  paint(s);
}

// A message element appeared or changed.
function attach(m) {
  var t = m.getAttribute("data-trace-id"), s = t && state(t), old = m.querySelector(":scope>backchannel-feedback");
  if (!s) return;
  if (!s.h) {
    s.gen = ATTEMPT || 1;
    ATTEMPT = 0;
    TURNS++;
    LAST = s;
    s.seen = Date.now();
    s.h = host(s);
  }
  if (old && old._s != s) old.remove();  // the element was reused for another trace
  if (s.el != m) {
    if (s.el?.isConnected && s.el.contains(s.h)) return;  // one widget per trace
    s.el = m;
  }
  if (s.h.parentNode != m) m.append(s.h);
  settle(s);
}

// Streaming ends when data-streaming goes from "true" to anything else; without the attribute,
// after 1 s without a change.
function settle(s) {
  var v = s.el.getAttribute("data-streaming");
  if (s.shown) return;
  clearTimeout(s.w);
  if (v == "true") s.st = 1, s.done = 0;
  else if (s.done || v != null || s.st) finish(s);
  else s.w = setTimeout(finish, 1e3, s);
}

function finish(s) {
  s.done = s.done || Date.now();
  READY.then(() => {
    clearTimeout(s.w);
    if (s.done && CFG) s.w = setTimeout(show, s.done + delay() - Date.now(), s);
  });
}

function show(s) {
  if (s.shown || !s.done || !s.el.isConnected || CFG.require_token && !token(s)) return;
  s.shown = Date.now();
  draw(s);
  send(s.t, "shown");
}

function scan(root, live) {
  var sel = MSG + "," + USER;
  [root, ...root.querySelectorAll(sel)].forEach(e => e.matches(sel) && (TODO.has(e) || TODO.set(e, live)));
}

function watch(records) {
  records.forEach(r => {
    var n = r.target;
    if (r.addedNodes[0]?._s) return;  // attach() put a widget in
    r.addedNodes.forEach(x => x.nodeType == 1 && scan(x, 1));
    (n = (n.nodeType == 1 ? n : n.parentElement)?.closest(MSG)) && (TODO.has(n) || TODO.set(n, 1));
  });
  SLICE || work();
}

// Handle what was met, in slices of at most 8 ms with the page's tasks in between: 200 messages added at once
// make no long task.
function work() {
  var end = performance.now() + 8;
  SLICE = 0;
  for (var [e, live] of TODO) {
    if (performance.now() > end) return SLICE = setTimeout(work);
    TODO.delete(e);
    e.matches(USER) ? prompt(e, live) : attach(e);
  }
}

// Which trace an element belongs to: its draft box, its message, or an action carrying the id itself.
function traceOf(x) {
  x = x && (x.nodeType == 1 ? x : x.parentElement);
  x = x && x.closest("[data-feedback-draft],[data-feedback-action][data-trace-id]," + MSG);
  return x && (x.getAttribute("data-feedback-draft") || x.getAttribute("data-trace-id"));
}

function copied(t, n) {
  var s = state(t);
  if (!n) return;
  s.copied = s.good = 1;
  send(t, "copied", { length: n });
}

function onCopy(e) {
  var x = e.target, sel = getSelection(), n, t;
  if (x.setSelectionRange) n = x.selectionEnd - x.selectionStart;
  else n = sel ? String(sel).length : 0, x = sel && sel.rangeCount && sel.getRangeAt(0).commonAncestorContainer;
  if (COPYING) return COPYING.n(n);  // the copy action's own copy (e.g. via execCommand)
  (t = traceOf(x)) && copied(t, n);
}

// Clicks on data-feedback-action buttons, before the app's own handlers (capture).
function onAction(e) {
  var a = e.target.closest?.("[data-feedback-action]"),
    k = a && a.getAttribute("data-feedback-action"), t = a && traceOf(a), s, c = N.clipboard, write, done;
  if (!t) return;
  s = state(t);
  if (k == "regenerate") send(t, "regenerated", { attempt: ATTEMPT = s.gen + ++s.n });
  if (k == "copy") {
    // The length is what the app copies, seen through the copy event or clipboard.writeText (never kept);
    // failing both, the length of the message's text (controls included: a rough fallback).
    done = n => {
      if (COPYING) {
        COPYING = 0;
        if (write) delete c.writeText;
        copied(t, n);
      }
    };
    COPYING = { n: done };
    if (c && c.writeText && !c.hasOwnProperty("writeText")) {
      write = c.writeText;
      c.writeText = (...a) => (done(String(a[0]).length), write.apply(c, a));
    }
    setTimeout(() => done(s.el.innerText.length), 500);
  }
}

// Drafts: the original is the textarea's default value, or the text when first focused.
function draftValue(d) { return d.value ?? d.innerText }

function onDraft(e) {
  var d = e.target.closest?.("[data-feedback-draft]"), s = d && state(d.getAttribute("data-feedback-draft"));
  if (!s) return;
  if (s.orig == null) s.orig = d.defaultValue || draftValue(d);
  if (e.type == "input" ? s.ratio == null : e.type == "focusout" && s.ratio != null) edited(s, d);
}

function edited(s, d) {
  var r = editRatio(s.orig, draftValue(d));
  if (r === s.ratio) return;
  s.ratio = r;
  s.good = 1;
  send(s.t, "edited", { edit_ratio: r });
}

function onSubmit(e) {
  e.target.querySelectorAll("[data-feedback-draft]").forEach(d => {
    var s = state(d.getAttribute("data-feedback-draft"));
    s.ratio != null && edited(s, d);
  });
}

// Character edit distance / the longer length, after trimming the common prefix and suffix.
function editRatio(a, b) {
  var i = 0, j = a.length, k = b.length, m = Math.max(j, k), p, q, x, y;
  if (!m) return 0;
  while (i < j && i < k && a[i] == b[i]) i++;
  while (j > i && k > i && a[j - 1] == b[k - 1]) j--, k--;
  a = a.slice(i, j);
  b = b.slice(i, k);
  x = Math.max(a.length, b.length);
  if (a.length * b.length < 1e6) {
    for (p = [], y = 0; y <= b.length; y++) p[y] = y;
    for (i = 1; i <= a.length; i++) {
      for (q = [i], y = 1; y <= b.length; y++) q[y] = Math.min(p[y] + 1, q[y - 1] + 1, p[y - 1] + (a[i - 1] != b[y - 1]));
      p = q;
    }
    x = p[b.length];
  }
  return Math.round(x / m * 1e3) / 1e3;
}

// A new prompt within 60 s of the last answer, similar to the prompt before, on an answer nobody copied.
function prompt(e, live) {
  var x = e.textContent.trim().toLowerCase(), p = PROMPT, s = LAST, sim;
  if (!x || PROMPTS.has(x)) return;
  PROMPTS.add(x);
  PROMPT = { x, at: Date.now() };
  if (live && p && s && !s.copied && !s.rephrased && s.seen >= p.at && Date.now() - (s.done || s.seen) <= 6e4 &&
      (sim = similarity(p.x, x)) >= .5) {
    s.rephrased = 1;
    send(s.t, "rephrased", { similarity: sim });
  }
}

// Jaccard similarity of the word 1- and 2-shingles.
function shingles(x) {
  var w = x.split(/[^\p{L}\p{N}]+/u).filter(Boolean), set = new Set(w);
  for (var i = 1; i < w.length; i++) set.add(w[i - 1] + " " + w[i]);
  return set;
}

function similarity(a, b) {
  var n = 0;
  a = shingles(a);
  b = shingles(b);
  a.forEach(x => n += b.has(x));
  return Math.round(n / (a.size + b.size - n) * 1e3) / 1e3 || 0;
}

// Left after exactly one answer without a thumbs-up, a copy or an edit.
function abandon() {
  if (!ABANDONED && TURNS == 1 && !LAST.good) {
    ABANDONED = 1;
    send(LAST.t, "abandoned");
  }
}
