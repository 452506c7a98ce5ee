// Delivery: events wait in memory and in this tab's own localStorage entry until the gateway answers.
//
// Each tab owns one entry ("bc_q_<pk>_<tab id>": {t: saved at, q: events, a: a pending abandonment}) and holds a
// Web Lock of the same name while it lives, so only a closed tab's entry is ever taken over by another tab: no two
// tabs send the same queue. What is read back from storage is checked, event by event: anything else is dropped.

import { consentPending, endpoint, local, off, project, tabStorage, uuid, warn } from "./config.js";

const MAX_QUEUE = 500;            // events kept; beyond it the oldest go first
const MAX_BATCH_EVENTS = 100;     // the gateway's limit per request
const MAX_BODY_BYTES = 65536;     // the gateway's limit per request, and what Chrome lets keepalive requests carry
const MAX_EVENT_BYTES = 32768;    // the gateway's limit per event: a bigger one can never be sent
const FLUSH_AT = 20;              // events waiting that make a flush at once

const prefix = "bc_q_" + project + "_";
const encoder = new TextEncoder();

let queue = [],                   // events not yet answered, oldest first
  inFlight = new Set(),           // events in a request that has not come back yet
  inFlightBytes = 0,              // what those requests carry (keepalive's budget is shared)
  key,                            // this tab's entry, once its lock is held
  release,                        // lets go of this tab's lock (on pagehide, so the page stays bfcache-able)
  leaving,                        // the page is unloading: what is in flight now belongs to its keepalive request
  dropped = 0,                    // events dropped because the queue was full
  failures = 0, retryAt = 0, holdUntil = 0, timer = 0,
  dirty;                          // a save was asked for with save(1)

// null: pending (data-consent="pending"), true: granted, false: refused.
export let consent = consentPending ? null : true;
// This tab's pending abandonment, {until: due at (ms), e: the event}: saved with its queue (abandon.js).
export let pending;

// What a value weighs in a request body: UTF-8 bytes, as the gateway and keepalive count them.
function size(value) {
  return encoder.encode(JSON.stringify(value)).length;
}

function sending() {
  return !off && consent === true;
}

// Enough of an event to be sent and answered (an id, and room in a request): the gateway judges the rest, event by
// event, so nothing read back from storage can hold the queue up.
function valid(event) {
  return event?.id && size(event) <= MAX_EVENT_BYTES;
}

// A stored entry: its events, and its pending abandonment if that is due (the user did not come back in time).
function read(entryKey) {
  let entry, abandonment;
  try {
    entry = JSON.parse(local.getItem(entryKey));
  } catch (e) {}
  abandonment = entry?.a;
  return [].concat(entry?.q ?? [], abandonment?.until <= Date.now() ? abandonment.e : []);
}

// Writing the queue costs O(queue length), so the events pushed in one task are saved once, at its end (storage
// is never behind between tasks): save(1) asks for that; save() writes now (before a flush sends, on pagehide).
export function save(later) {
  if (later) return dirty || (dirty = 1, queueMicrotask(() => dirty && save()));
  dirty = 0;
  if (!key || !sending()) return;  // nothing touches storage before consent
  let q = queue.filter(e => !(leaving && inFlight.has(e)));
  try {
    q.length || pending ? local.setItem(key, JSON.stringify({ t: Date.now(), q, a: pending })) : local.removeItem(key);
  } catch (e) {}
}

export function setPending(abandonment) {
  pending = abandonment;
  save();
}

function trim() {
  let over = queue.length - MAX_QUEUE;
  if (over > 0) {
    dropped += over;
    queue.splice(0, over);
    warn("queue full: dropped " + dropped);
  }
}

// Take this tab's id (kept across reloads in sessionStorage) and its lock; a duplicated tab that
// inherited a live tab's id gets a fresh one.
export function own(id) {
  function take() {
    key = prefix + id;
    try { tabStorage.setItem("bc_tab", id) } catch (e) {}
    add(read(key));
    adopt();
  }
  if (!navigator.locks) return take();
  navigator.locks.request(prefix + id, { ifAvailable: true }, lock => {
    if (!lock) return own(uuid());
    take();
    return new Promise(r => { release = r });
  });
}

// Move the entries of tabs that are gone (their lock is free) into this tab's queue.
function adopt() {
  if (!key || !navigator.locks || !sending()) return;
  try {
    for (let i = local.length; i--;) {
      let other = local.key(i);
      if (other?.startsWith(prefix) && other != key) navigator.locks.request(other, { ifAvailable: true }, lock => {
        if (!lock) return;
        add(read(other));
        local.removeItem(other);
      });
    }
  } catch (e) {}
}

// New events, or events read back from storage (anything there may be garbage): an event that can never be sent
// is dropped with a warning; one already queued is not queued twice.
export function add(events) {
  let kept = events.filter(valid);
  if (off || consent === false) return;
  if (kept.length < events.length) warn("dropped " + (events.length - kept.length) + " unsendable events (over 32 KiB)");
  kept.forEach(e => queue.some(x => x.id == e.id) || queue.push(e));
  trim();
  save(1);
  queue.length - inFlight.size >= FLUSH_AT ? flush() : schedule();
}

function schedule() {
  if (!timer && queue.length && sending()) timer = setTimeout(() => { timer = 0; flush() }, Math.max(2e3, retryAt - Date.now()));
}

// Send what is waiting. Normally one request at a time, not before retryAt; when the page hides, everything
// that fits in keepalive's budget goes at once (a last chance: only a server's Retry-After holds it back).
// Batches are measured in UTF-8 bytes, as the gateway and keepalive count them.
export function flush(hide) {
  let sent = [];
  let budget = MAX_BODY_BYTES - inFlightBytes;
  clearTimeout(timer);
  timer = 0;
  adopt();
  if (sending() && (hide ? Date.now() >= holdUntil : !inFlight.size && Date.now() >= retryAt)) {
    dirty && save();
    do {
      let batch = [];
      let bytes = size({ project, events: [] });
      for (let event of queue) {
        if (inFlight.has(event)) continue;
        let n = size(event) + 1;
        if (batch.length == MAX_BATCH_EVENTS || bytes + n > MAX_BODY_BYTES) break;
        batch.push(event);
        bytes += n;
      }
      if (!batch.length || bytes > budget) break;
      budget -= bytes;
      sent.push(post(batch, bytes));
    } while (hide);
  }
  schedule();
  return Promise.all(sent).then(() => {});
}

function post(batch, bytes) {
  let url = endpoint + "/v1/events?project=" + encodeURIComponent(project),
    body = JSON.stringify({ project, events: batch });
  function landed() {
    batch.forEach(e => inFlight.delete(e));
    inFlightBytes -= bytes;
  }
  function drop() {
    queue = queue.filter(e => !batch.includes(e));
    save(1);
  }
  batch.forEach(e => inFlight.add(e));
  inFlightBytes += bytes;
  // A string body goes as text/plain: a "simple" request (no CORS preflight), which keepalive allows.
  return fetch(url, { method: "POST", body, keepalive: true })
    .then(r => {
      landed();
      if (r.ok) {
        failures = 0;
        drop();
        return r.json().then(answer => {
          let rejected = (answer.results || []).filter(x => x.status == "rejected");
          rejected.length && console.warn("backchannel: rejected", rejected);
        }, () => {});
      }
      if (r.status == 429 || r.status >= 500) return backoff(r.headers.get("Retry-After"));
      drop();
      warn("HTTP " + r.status + ", dropped " + batch.length + " events");
    }, () => { landed(); backoff() })
    .then(() => { queue.length - inFlight.size >= FLUSH_AT && Date.now() >= retryAt ? flush() : schedule() });
}

function backoff(after) {
  let seconds = after && (isNaN(after) ? (Date.parse(after) - Date.now()) / 1e3 : +after);
  // Retry-After is a floor; otherwise 1 s, 2 s, 4 s ... up to 5 min, each with jitter.
  retryAt = Date.now() + (seconds > 0 ? seconds * 1e3 * (1 + Math.random() / 5) : Math.min(3e5, 1e3 * 2 ** failures) * (.5 + Math.random() / 2));
  if (seconds > 0) holdUntil = retryAt;
  failures++;
}

export function setConsent(granted) {
  if (off) return;
  consent = !!granted;
  if (granted) return save(), adopt(), flush();
  queue = [];
  pending = null;
  try { local.removeItem(key) } catch (e) {}
}

// The page hides (or is closed: pagehide): everything goes now, in keepalive requests.
export function pageHidden(closing) {
  save();
  flush(1);
  if (closing) {
    // Online, what the keepalive requests carry is theirs now (the next page must not send it again);
    // offline, it stays queued. Letting go of the lock lets another tab take what is left.
    if (navigator.onLine && "keepalive" in Request.prototype) leaving = 1, save();
    release?.();
  }
}

// Back from the bfcache: storage is the truth again (another tab may have taken the queue).
export function pageRestored(id) {
  leaving = 0;
  queue = queue.filter(e => inFlight.has(e));
  key = 0;
  own(id);
}
