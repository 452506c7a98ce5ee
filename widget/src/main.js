// The public API, window.backchannel:
//   backchannel.rate(traceId, "up" | "down", {reason, comment})
//   backchannel.track(type, traceId, props)     e.g. track("copied", id, {length: 120})
//   backchannel.comment(traceId, text)          the text becomes the comment of this page's vote on the trace
//   backchannel.on("feedback" | "signal", fn)   host events (hooks.js: what each payload holds)
//   backchannel.consent(granted)                with data-consent="pending": nothing is sent before consent(true)
//   backchannel.flush()                         send what is queued now; returns a Promise
// Every method can also be called as backchannel("rate", traceId, "up"). To call it before the script has
// loaded, put this one-line stub before the script tag; the calls it queues are replayed on load:
//   <script>window.backchannel=window.backchannel||function(){(window.backchannel.q=window.backchannel.q||[]).push(arguments)}</script>

import { left, returned } from "./abandon.js";
import { onAction, onCopy, onDraft, onSubmit } from "./actions.js";
import { loadConfig, off, project, tabValue, warn } from "./config.js";
import { on } from "./hooks.js";
import { scan, watch, work } from "./messages.js";
import { flush, own, pageHidden, pageRestored, setConsent } from "./queue.js";
import { comment, rate, send } from "./traces.js";

const stub = window.backchannel;

// Loaded twice (a second tag, an SPA re-injecting it): the first copy keeps the page.
if (!stub?.v) start();

function start() {
  let methods = {
    rate(trace, vote, options) {
      vote = vote == "up" ? 1 : vote == "down" ? 0 : null;
      vote != null && rate(String(trace), vote, options);
    },
    track(type, trace, props) {
      send(String(trace), String(type), props);
    },
    comment,
    on,
    consent: setConsent,
    flush: () => flush(),
  };
  // backchannel("rate", ...) calls only these methods, whatever the name given ("constructor", "__proto__").
  let api = (method, ...args) => Object.hasOwn(methods, method) ? methods[method](...args) : undefined;
  window.backchannel = Object.assign(api, methods, { v: 1 });

  if (!project) warn("no data-project");
  if (!off) {
    loadConfig();
    own(tabValue("bc_tab"));
    new MutationObserver(watch).observe(document.documentElement, {
      childList: 1, subtree: 1, characterData: 1, attributeFilter: ["data-trace-id", "data-streaming", "data-feedback-token"],
    });
    scan(document.documentElement, 0);
    work();
    [["copy", onCopy], ["click", onAction], ["submit", onSubmit], ["focusin", onDraft], ["beforeinput", onDraft],
      ["input", onDraft], ["focusout", onDraft]].forEach(([type, listener]) => document.addEventListener(type, listener, true));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState != "hidden") return returned();
      left();
      pageHidden();
    });
    addEventListener("pagehide", () => {
      left(1);
      pageHidden(1);
    });
    addEventListener("pageshow", e => { e.persisted && pageRestored(tabValue("bc_tab")) });
  }

  (stub?.q || []).forEach(args => api(...args));
}

