// "abandoned": exactly one assistant turn, no positive action on it (thumbs-up, copy, edit, accept), and the page
// closed (pagehide), or hidden and not come back to within abandonAfter (30 min). While the page is merely hidden
// the abandonment waits in this tab's storage entry (queue.js): a tab the browser discards without a pagehide leaves
// it there for the next page of the site, which sends it if its time has come and drops it otherwise (queue.js, read).

import { abandonAfter } from "./config.js";
import { last, turns } from "./messages.js";
import { pageHidden, pending, setPending } from "./queue.js";
import { makeEvent, sendEvent } from "./traces.js";

let timer, sent;

function abandoned() {
  return !sent && turns == 1 && !last.good_;
}

function give() {
  if (abandoned()) {
    sent = 1;
    sendEvent(last, pending?.e || makeEvent(last, "abandoned"));
  }
  cancel();
}

function cancel() {
  clearTimeout(timer);
  pending && setPending();
}

// The page was hidden (closing: it is going away).
export function left(closing) {
  if (closing) return give();
  if (!pending && abandoned()) {
    setPending({ until: Date.now() + abandonAfter, e: makeEvent(last, "abandoned") });
    timer = setTimeout(() => { give(); pageHidden() }, abandonAfter);  // still hidden: send it now
  }
}

// The page is visible again: the user came back, unless the time has passed already.
export function returned() {
  Date.now() >= pending?.until ? give() : cancel();
}
