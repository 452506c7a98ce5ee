// Settings: the script tag's data-* attributes, then the project's config from the gateway.
//
// Internal properties end in "_" (state.vote_, controls.panel_): the build renames them, and nothing else.

export const script = document.currentScript || document.querySelector("script[data-project]");

export function warn(message) {
  console.warn("backchannel: " + message);
}

export function attr(name) {
  return script?.getAttribute("data-" + name);
}

function number(value) {
  return value && !isNaN(value) ? +value : undefined;
}

export let local, tabStorage;
try {
  local = localStorage;
  tabStorage = sessionStorage;
} catch (e) {}

export const project = attr("project");
export const endpoint = (attr("endpoint") || new URL(script?.src || location.href, location.href).origin).replace(/\/+$/, "");
export const sessionId = attr("session-id");
export const consentPending = attr("consent") == "pending";
const respectDnt = attr("respect-dnt");
// Off entirely: no project key, or the visitor asked not to be tracked and the site honours it.
export const off = !project || respectDnt != null && respectDnt != "false" &&
  !!(navigator.globalPrivacyControl || navigator.doNotTrack == "1");
// How long a hidden page may stay hidden before its unanswered single turn counts as abandoned (30 min).
export const abandonAfter = number(attr("abandon-after-ms")) ?? 18e5;

// The project's config: {require_token, delay_ms, reasons: [{code, label}], labels: {up, down, reason_prompt,
// comment_placeholder, submit, thanks}}. Nothing is drawn before it arrives; when it cannot be fetched the
// gateway is not taking events either, and the page stays as it was.
export let config, configLoaded;

export function loadConfig() {
  configLoaded = fetch(endpoint + "/v1/projects/" + encodeURIComponent(project) + "/config")
    .then(r => r.ok && r.json())
    .then(c => { config = c }, () => {});
}

export function delay() {
  return number(attr("delay-ms")) ?? config.delay_ms ?? 2e3;
}

// A UUIDv7: the millisecond clock first, then 74 random bits. Time-ordered ids land at the end of the gateway's
// unique index instead of all over it, which keeps its commits small. (getRandomValues, unlike randomUUID, also
// works outside secure contexts.)
export function uuid() {
  let time = Date.now().toString(16).padStart(12, 0), random = crypto.getRandomValues(new Uint8Array(18));
  let i = 0;
  return (time.slice(0, 8) + "-" + time.slice(8) + "-7xxx-yxxx-xxxxxxxxxxxx")
    .replace(/[xy]/g, c => (c > "x" ? random[i++] & 3 | 8 : random[i++] & 15).toString(16));
}

// A random id kept in sessionStorage: survives reloads of this tab, not shared with other tabs.
export function tabValue(key) {
  let value;
  try {
    value = tabStorage.getItem(key) || (tabStorage.setItem(key, value = uuid()), value);
  } catch (e) {}
  return value || uuid();
}

let tabSessionId;
export function tabSession() {
  return tabSessionId ||= tabValue("bc_session");
}
