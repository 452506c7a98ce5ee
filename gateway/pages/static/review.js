// The reviewer page: claim an item, show its trace, label or skip it from the keyboard, claim the next.
// Every text of a trace is set as textContent: a model's output may contain markup, and it is shown, never run.
(function () {
  "use strict";

  var root, api, kind, form, status, itemSection, traceBox, heading, note, formError, skipButton;
  var current = null; // the claimed item: {item_id, ...}
  var busy = false;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function post(path, body) {
    return fetch(api + path, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})
    });
  }

  function messagesOf(input) {
    if (input === null || input === undefined) return [];
    if (typeof input === "string") return [{role: "user", content: input}];
    return input;
  }

  function definitions(pairs) {
    var list = el("dl", "facts");
    pairs.forEach(function (pair) {
      if (pair[1] === null || pair[1] === undefined || pair[1] === "") return;
      var row = el("div");
      row.appendChild(el("dt", "", pair[0]));
      row.appendChild(el("dd", "", pair[1]));
      list.appendChild(row);
    });
    return list;
  }

  function conversation(input) {
    var box = el("section", "conversation");
    box.setAttribute("aria-label", "Conversation");
    messagesOf(input).forEach(function (message) {
      var turn = el("div", "turn role-" + message.role);
      turn.appendChild(el("p", "role", message.role));
      turn.appendChild(el("p", "text", message.content));
      box.appendChild(turn);
    });
    return box;
  }

  function signals(trace) {
    var names = Object.keys(trace.signals || {}).sort();
    var box = el("div", "signals");
    box.appendChild(el("h4", "", "Signals"));
    if (!names.length) { box.appendChild(el("p", "hint", "No implicit signals.")); return box; }
    var list = el("ul");
    names.forEach(function (name) {
      var n = trace.signals[name];
      list.appendChild(el("li", "", name + ": " + n + (n === 1 ? " session" : " sessions")));
    });
    box.appendChild(list);
    return box;
  }

  function votes(trace) {
    var box = el("div", "votes");
    box.appendChild(el("h4", "", "User feedback"));
    if (!trace.rating || !trace.rating.length) { box.appendChild(el("p", "hint", "No vote.")); return box; }
    var list = el("ul");
    trace.rating.forEach(function (vote) {
      var item = el("li");
      item.appendChild(el("strong", "", vote.value === 1 ? "Thumbs up" : "Thumbs down"));
      if (vote.reason) item.appendChild(el("span", "", " · reason: " + vote.reason));
      if (vote.comment) item.appendChild(el("q", "comment", vote.comment));
      list.appendChild(item);
    });
    box.appendChild(list);
    return box;
  }

  function judge(trace) {
    var box = el("div", "judge");
    box.appendChild(el("h4", "", "Judge's suggestion"));
    var found = trace.judge;
    if (!found || !found.labels || !found.labels.length) {
      box.appendChild(el("p", "hint", "None."));
    } else {
      box.appendChild(el("p", "", found.labels.join(", ") + " (confidence " + Math.round(found.confidence * 100) + "%)"));
    }
    return box;
  }

  function response(trace, title) {
    var box = el("section", "response");
    box.setAttribute("aria-label", title);
    box.appendChild(el("h3", "", title));
    box.appendChild(el("p", "output", trace.output === null ? "(no output)" : trace.output));
    box.appendChild(definitions([["Model", trace.model], ["Template", trace.template],
      ["Template version", trace.template_version], ["Trace", trace.trace_id]]));
    box.appendChild(signals(trace));
    box.appendChild(votes(trace));
    box.appendChild(judge(trace));
    return box;
  }

  function show(item) {
    current = item;
    traceBox.textContent = "";
    if (kind === "pairwise") {
      heading.textContent = "Which answer is better?";
      traceBox.appendChild(conversation(item.a.input));
      var sides = el("div", "side-by-side");
      sides.appendChild(response(item.a, "Response A"));
      sides.appendChild(response(item.b, "Response B"));
      traceBox.appendChild(sides);
    } else {
      heading.textContent = "Item " + item.item_id;
      traceBox.appendChild(conversation(item.trace.input));
      traceBox.appendChild(response(item.trace, "Output"));
    }
    form.reset();
    formError.textContent = "";
    itemSection.hidden = false;
    form.hidden = false;
    status.textContent = "Lease held until " + new Date(item.lease_expires_at).toLocaleTimeString() + ".";
    heading.focus();
  }

  function nothingLeft() {
    current = null;
    itemSection.hidden = true;
    form.hidden = true;
    status.textContent = "Nothing left in this queue for you. Thank you!";
  }

  function failed(response) {
    return response.json().then(function (problem) {
      return problem.detail || problem.title;
    }, function () { return "The server answered " + response.status + "."; });
  }

  function next() {
    busy = true;
    status.textContent = "Loading the next item…";
    return post("/claim").then(function (response) {
      if (response.status === 204) return nothingLeft();
      if (!response.ok) return failed(response).then(function (why) { status.textContent = why; });
      return response.json().then(show);
    }, function () {
      status.textContent = "The server could not be reached; reload the page to try again.";
    }).then(function () { busy = false; });
  }

  function finish(path, body) {
    if (!current || busy) return;
    busy = true;
    post("/items/" + current.item_id + path, body).then(function (response) {
      if (response.ok || response.status === 409 || response.status === 410) {
        // Taken from us (409/410): nothing to finish here, the next item is what the reviewer wants.
        return next();
      }
      return failed(response).then(function (why) { formError.textContent = why; busy = false; });
    }, function () {
      formError.textContent = "The server could not be reached; try again.";
      busy = false;
    });
  }

  function complete() {
    var labels = Array.prototype.map.call(form.querySelectorAll('input[name="labels"]:checked'),
      function (box) { return box.value; });
    var body = {labels: labels, note: note.value.trim() || null};
    if (kind === "pairwise") {
      var chosen = form.querySelector('input[name="preferred"]:checked');
      if (!chosen) {
        formError.textContent = "Choose A, B or Tie first (keys a, b, t).";
        return;
      }
      body.preferred = chosen.value;
    }
    finish("/label", body);
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || form.hidden) return;
    var target = event.target;
    if (target === note) {
      if (event.key === "Escape") { note.blur(); heading.focus(); }
      return; // Enter in the note submits the form by itself
    }
    if (target.tagName === "BUTTON" || target.tagName === "A") return; // their own Enter
    var box = form.querySelector('input[data-key="' + event.key.toLowerCase() + '"]');
    if (event.key === "Enter") {
      event.preventDefault();
      complete();
    } else if (event.key === "n") {
      event.preventDefault();
      note.focus();
    } else if (event.key === "s") {
      event.preventDefault();
      finish("/skip", {});
    } else if (box && (box.type === "checkbox" || kind === "pairwise")) {
      event.preventDefault();
      box.checked = box.type === "radio" ? true : !box.checked;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("review");
    if (!root) return;
    api = root.getAttribute("data-api");
    kind = root.getAttribute("data-kind");
    form = document.getElementById("label-form");
    status = document.getElementById("status");
    itemSection = document.getElementById("item");
    traceBox = document.getElementById("trace");
    heading = document.getElementById("item-heading");
    note = document.getElementById("note");
    formError = document.getElementById("form-error");
    skipButton = document.getElementById("skip");
    form.addEventListener("submit", function (event) { event.preventDefault(); complete(); });
    skipButton.addEventListener("click", function () { finish("/skip", {}); });
    document.addEventListener("keydown", onKey);
    next();
  });
})();
