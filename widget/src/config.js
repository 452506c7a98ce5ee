// Settings: the script tag's data-* attributes, then the project's config from the gateway.
// These files are fragments of ONE function body; widget/bundle.py joins them in order inside an IIFE.

var W = window, D = document, N = navigator, LS, SS;
// Loaded twice (a second tag, an SPA re-injecting it): the first copy keeps the page.
if (W.backchannel?.v) return;
try { LS = localStorage; SS = sessionStorage } catch (e) {}

var SCRIPT = D.currentScript || D.querySelector("script[data-project]");
function attr(name) { return SCRIPT?.getAttribute("data-" + name) }

var PK = attr("project"),
  ENDPOINT = (attr("endpoint") || new URL(SCRIPT?.src || location.href, location.href).origin).replace(/\/+$/, ""),
  SESSION = attr("session-id"),
  DNT = attr("respect-dnt"),
  // null: pending (data-consent="pending"), true: granted, false: refused.
  CONSENT = attr("consent") == "pending" ? null : true,
  // Off entirely: no project key, or the visitor asked not to be tracked and the site honours it.
  OFF = !PK || DNT != null && DNT != "false" && !!(N.globalPrivacyControl || N.doNotTrack == "1");

if (!PK) console.warn("backchannel: no data-project");

// The project's config: {require_token, delay_ms, reasons: [{code, label}], labels: {up, down, reason_prompt,
// comment_placeholder, submit, thanks}}. Nothing is drawn before it arrives; when it cannot be fetched the
// gateway is not taking events either, and the page stays as it was.
var CFG, READY = OFF || fetch(ENDPOINT + "/v1/projects/" + encodeURIComponent(PK) + "/config")
  .then(r => r.ok && r.json())
  .then(c => { CFG = c }, () => {});

function delay() {
  var d = attr("delay-ms");
  return d && !isNaN(d) ? +d : CFG.delay_ms ?? 2e3;
}

// A UUIDv7: the millisecond clock first, then 74 random bits. Time-ordered ids land at the end of the gateway's
// unique index instead of all over it, which keeps its commits small. (getRandomValues, unlike randomUUID, also
// works outside secure contexts.)
function uuid() {
  var t = Date.now().toString(16).padStart(12, 0), r = crypto.getRandomValues(new Uint8Array(18)), i = 0;
  return (t.slice(0, 8) + "-" + t.slice(8) + "-7xxx-yxxx-xxxxxxxxxxxx").replace(/[xy]/g, c => (c > "x" ? r[i++] & 3 | 8 : r[i++] & 15).toString(16));
}

// A random id kept in sessionStorage: survives reloads of this tab, not shared with other tabs.
function tabValue(key) {
  var v;
  try { v = SS.getItem(key) || (SS.setItem(key, v = uuid()), v) } catch (e) {}
  return v || uuid();
}

var TAB_SESSION;
function tabSession() { return TAB_SESSION || (TAB_SESSION = tabValue("bc_session")) }
