// Host events: backchannel.on("feedback" | "signal", listener). Each listener runs in a task of its own, so one that
// throws is reported like any page error and changes nothing here. Payloads:
//   feedback  {traceId, value: "up" | "down", reason?, comment?, update}: every vote (thumbs, rate(), comment());
//             update is false for a new vote, true when a reason or comment was added to the same vote
//   signal    {type, traceId, props}: every other event sent (shown, copied, edited, regenerated, rephrased,
//             accepted, abandoned, track()), props its own fields, e.g. {how: "insert"}

const listeners = new Map();  // event name -> listeners

export function on(name, listener) {
  listeners.set(name, [...listeners.get(name) || [], listener]);
}

export function emit(name, payload) {
  listeners.get(name)?.forEach(listener => setTimeout(listener, 0, payload));
}
