// Leviathan console: follows the event stream and adds each new event to the page's live
// lists, without reloading. Text is set with textContent only: event fields are untrusted.
"use strict";

(function () {
  const body = document.body;
  const base = body.dataset.base || "";

  function cell(row, content) {
    const td = document.createElement("td");
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    row.appendChild(td);
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function matches(list, event) {
    const f = list.dataset;
    return (!f.filterType || f.filterType === event.event_type) &&
      (!f.filterTarget || f.filterTarget === event.target_id) &&
      (!f.filterAttempt || f.filterAttempt === event.attempt_id);
  }

  function row(event) {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    tr.dataset.seq = String(event.seq);
    cell(tr, link(base + "/events/" + event.seq, "#" + event.seq));
    const time = document.createElement("time");
    time.dateTime = event.timestamp;
    time.title = event.timestamp;
    time.textContent = "just now";
    cell(tr, time);
    cell(tr, event.event_type);
    cell(tr, event.target_id || "");
    cell(tr, event.attempt_id
      ? link(base + "/attempts/" + encodeURIComponent(event.attempt_id), event.attempt_id) : "");
    const hash = document.createElement("code");
    hash.textContent = event.hash.slice(0, 12);
    cell(tr, hash);
    return tr;
  }

  function append(event) {
    for (const list of document.querySelectorAll("tbody[data-tail]")) {
      if (!matches(list, event) || list.querySelector('tr[data-seq="' + event.seq + '"]')) continue;
      list.insertBefore(row(event), list.firstChild);
      while (list.rows.length > 200) list.deleteRow(list.rows.length - 1);
    }
    if (event.attempt_id) {
      for (const el of document.querySelectorAll("[data-last-event]")) {
        if (el.dataset.lastEvent === event.attempt_id) el.textContent = event.event_type + " · just now";
      }
    }
  }

  function follow() {
    const status = document.getElementById("live-status");
    const url = body.dataset.live + "?after=" + encodeURIComponent(body.dataset.after || "0");
    const source = new EventSource(url);
    source.onopen = function () { if (status) status.textContent = "live"; };
    source.onerror = function () { if (status) status.textContent = "reconnecting…"; };
    source.onmessage = function (message) {
      const event = JSON.parse(message.data);
      body.dataset.after = String(event.seq);
      append(event);
    };
  }

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
  if (body.dataset.live) follow();
})();
