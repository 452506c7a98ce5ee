// Delivery: events wait in memory and in this tab's own localStorage entry until the gateway answers.
//
// Each tab owns one entry ("bc_q_<pk>_<tab id>") and holds a Web Lock of the same name while it lives,
// so only a closed tab's entry is ever taken over by another tab: no two tabs send the same queue.

var Q = [],            // events not yet answered, oldest first
  FLY = new Set(),     // events in a request that has not come back yet
  PREFIX = "bc_q_" + PK + "_",
  KEY,                 // this tab's entry, once its lock is held
  RELEASE,             // lets go of this tab's lock (on pagehide, so the page stays bfcache-able)
  LEAVING,             // the page is unloading: what is in flight now belongs to its keepalive request
  FAILS = 0, RETRY_AT = 0, HOLD = 0, TIMER = 0,
  DIRTY;               // a save was asked for with save(1)

function sending() { return !OFF && CONSENT === true }

function read(key) {
  try { return JSON.parse(LS.getItem(key)).q || [] } catch (e) { return [] }
}

// Writing the queue costs O(queue length), so the events pushed in one task are saved once, at its end (storage
// is never behind between tasks): save(1) asks for that; save() writes now (before a flush sends, on pagehide).
function save(later) {
  if (later) return DIRTY || (DIRTY = 1, queueMicrotask(() => DIRTY && save()));
  DIRTY = 0;
  if (!KEY || !sending()) return;  // nothing touches storage before consent
  var q = Q.filter(e => !(LEAVING && FLY.has(e)));
  try { q.length ? LS.setItem(KEY, JSON.stringify({ t: Date.now(), q })) : LS.removeItem(KEY) } catch (e) {}
}

function merge(events) {
  events.forEach(e => e?.id && !Q.some(x => x.id == e.id) && Q.push(e));
  if (Q.length > 500) Q.splice(0, Q.length - 500);
  save();
  schedule();
}

// Take this tab's id (kept across reloads in sessionStorage) and its lock; a duplicated tab that
// inherited a live tab's id gets a fresh one.
function own(id) {
  function take() {
    KEY = PREFIX + id;
    try { SS.setItem("bc_tab", id) } catch (e) {}
    merge(read(KEY));
    adopt();
  }
  if (!N.locks) return take();
  N.locks.request(PREFIX + id, { ifAvailable: true }, lock => {
    if (!lock) return own(uuid());
    take();
    return new Promise(r => { RELEASE = r });
  });
}

// Move the entries of tabs that are gone (their lock is free) into this tab's queue.
function adopt() {
  if (!KEY || !N.locks || !sending()) return;
  try {
    for (var i = LS.length; i--;) {
      var k = LS.key(i);
      if (k?.startsWith(PREFIX) && k != KEY) N.locks.request(k, { ifAvailable: true }, (key => lock => {
        if (!lock) return;
        var q = read(key);
        LS.removeItem(key);
        merge(q);
      })(k));
    }
  } catch (e) {}
}

function push(e) {
  if (OFF || CONSENT === false) return;
  Q.push(e);
  save(1);
  Q.length - FLY.size >= 20 ? flush() : schedule();
}

function schedule() {
  if (!TIMER && Q.length && sending()) TIMER = setTimeout(() => { TIMER = 0; flush() }, Math.max(2e3, RETRY_AT - Date.now()));
}

// Send what is waiting. Normally one request at a time, not before RETRY_AT; when the page hides, everything
// that fits in keepalive's budget goes at once (a last chance: only a server's Retry-After holds it back).
function flush(hide) {
  clearTimeout(TIMER);
  TIMER = 0;
  adopt();
  var sent = [], budget = 6e4;
  if (sending() && (hide ? Date.now() >= HOLD : !FLY.size && Date.now() >= RETRY_AT)) {
    DIRTY && save();
    do {
      var batch = [], size = 0;
      for (var e of Q) {
        if (FLY.has(e)) continue;
        var n = JSON.stringify(e).length + 1;
        if (batch.length == 20 || size + n > 48e3) break;
        batch.push(e);
        size += n;
      }
      if (!batch.length || size > budget) break;
      budget -= size;
      sent.push(post(batch, hide));
    } while (hide);
  }
  schedule();
  return Promise.all(sent).then(() => {});
}

function post(batch, hide) {
  var url = ENDPOINT + "/v1/events?project=" + encodeURIComponent(PK),
    body = JSON.stringify({ project: PK, events: batch });
  batch.forEach(e => FLY.add(e));
  function landed() { batch.forEach(e => FLY.delete(e)) }
  function drop() { Q = Q.filter(e => batch.indexOf(e) < 0); save(1) }
  // A string body goes as text/plain: a "simple" request (no CORS preflight), which keepalive allows.
  return fetch(url, { method: "POST", body, keepalive: true })
    .then(r => {
      landed();
      if (r.ok) {
        FAILS = 0;
        drop();
        return r.json().then(j => {
          var bad = (j.results || []).filter(x => x.status == "rejected");
          bad.length && console.warn("backchannel: rejected", bad);
        }, () => {});
      }
      if (r.status == 429 || r.status >= 500) return backoff(r.headers.get("Retry-After"));
      drop();
      console.warn("backchannel: HTTP " + r.status + ", dropped " + batch.length + " events");
    }, () => { landed(); backoff() })
    .then(() => { Q.length - FLY.size >= 20 && Date.now() >= RETRY_AT ? flush() : schedule() });
}

function backoff(after) {
  var s = after && (isNaN(after) ? (Date.parse(after) - Date.now()) / 1e3 : +after);
  // Retry-After is a floor; otherwise 1 s, 2 s, 4 s ... up to 5 min, each with jitter.
  RETRY_AT = Date.now() + (s > 0 ? s * 1e3 * (1 + Math.random() / 5) : Math.min(3e5, 1e3 * 2 ** FAILS) * (.5 + Math.random() / 2));
  if (s > 0) HOLD = RETRY_AT;
  FAILS++;
}
