// The public API, window.backchannel:
//   backchannel.rate(traceId, "up" | "down", {reason, comment})
//   backchannel.track(type, traceId, props)     e.g. track("copied", id, {length: 120})
//   backchannel.consent(granted)                 with data-consent="pending": nothing is sent before consent(true)
//   backchannel.flush()                          send what is queued now; returns a Promise
// Every method can also be called as backchannel("rate", traceId, "up"). To call it before the script has
// loaded, put this one-line stub before the script tag; the calls it queues are replayed on load:
//   <script>window.backchannel=window.backchannel||function(){(window.backchannel.q=window.backchannel.q||[]).push(arguments)}</script>

var STUB = W.backchannel;

function api(method) {
  var f = api[method];
  return f && f.apply(api, [].slice.call(arguments, 1));
}
api.v = 1;
api.rate = (t, vote, o) => {
  (vote = { up: 1, down: 0 }[vote]) != null && rate(String(t), vote, o);
};
api.track = (type, t, props) => { send(String(t), String(type), props) };
api.consent = granted => {
  if (OFF) return;
  CONSENT = !!granted;
  if (granted) return save(), adopt(), flush();
  Q = [];
  try { LS.removeItem(KEY) } catch (e) {}
};
api.flush = () => flush();
W.backchannel = api;

function hidden(e) {
  abandon();
  save();
  flush(1);
  if (e.type == "pagehide") {
    // Online, what the keepalive requests carry is theirs now (the next page must not send it again);
    // offline, it stays queued. Letting go of the lock lets another tab take what is left.
    if (N.onLine && "keepalive" in Request.prototype) LEAVING = 1, save();
    RELEASE && RELEASE();
  }
}

if (!OFF) {
  own(tabValue("bc_tab"));
  new MutationObserver(watch).observe(D.documentElement, {
    childList: 1, subtree: 1, characterData: 1, attributeFilter: ["data-trace-id", "data-streaming", "data-feedback-token"]
  });
  scan(D.documentElement, 0);
  work();
  [["copy", onCopy], ["click", onAction], ["submit", onSubmit], ["focusin", onDraft], ["beforeinput", onDraft],
    ["input", onDraft], ["focusout", onDraft]].forEach(a => D.addEventListener(a[0], a[1], true));
  D.addEventListener("visibilitychange", e => { D.visibilityState == "hidden" && hidden(e) });
  addEventListener("pagehide", hidden);
  addEventListener("pageshow", e => {
    // Back from the bfcache: storage is the truth again (another tab may have taken the queue).
    if (!e.persisted) return;
    LEAVING = 0;
    Q = Q.filter(x => FLY.has(x));
    KEY = 0;
    own(tabValue("bc_tab"));
  });
}

(STUB?.q || []).forEach(args => api.apply(null, args));
