// redcall ui: draws each page from the JSON API (see docs/ui.md). Plain DOM, no framework, no build step.
// Text from Redis is only ever set as text (textContent), never as HTML.
"use strict";

const P = document.body.dataset;
const READ_ONLY = P.readOnly === "true";
const REFRESH_MS = 2000;
const main = document.getElementById("main");

// ---- DOM helpers -------------------------------------------------------------------------------------------
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
// Replaces an element's children; null, undefined and false children are left out (the DOM would show "null").
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
const enc = encodeURIComponent;
const fmt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function ms(v) {
  if (v === null || v === undefined) return "–";
  if (v < 1000) return `${v} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(1)} s`;
  if (v < 3600000) return `${Math.floor(v / 60000)} min ${Math.floor(v / 1000) % 60} s`;
  if (v < 86400000) return `${Math.floor(v / 3600000)} h ${Math.floor(v / 60000) % 60} min`;
  return `${Math.floor(v / 86400000)} d ${Math.floor(v / 3600000) % 24} h`;
}
const ago = (t) => (t ? `${ms(Math.max(0, Date.now() - t))} ago` : "–");
const json = (v) => JSON.stringify(v, null, 2);
function card(label, value, cls) {
  return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: `value ${cls || ""}` }, value));
}
function message(text, isError) {
  let box = document.getElementById("message");
  if (!box) {
    box = h("div", { id: "message" });
    main.prepend(box);
  }
  box.className = isError ? "message error" : "message";
  box.textContent = text;
}

// Runs `step` again REFRESH_MS after each run has finished (so runs never pile up when one is slow), until it
// returns true.
function every(step) {
  const next = () => setTimeout(async () => {
    let stop = false;
    try { stop = await step(); } catch (e) { message(e.message, true); }
    if (stop !== true) next();
  }, REFRESH_MS);
  next();
}

// ---- API -------------------------------------------------------------------------------------------------
async function api(path, options) {
  const res = await fetch(`/api${path}`, options);
  let body = null;
  try { body = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const err = new Error((body && body.error && body.error.message) || `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return body;
}
function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Redcall-Csrf": P.csrf },
    body: JSON.stringify(body),
  });
}

// A confirmation dialog: resolves true on Confirm, false on Cancel.
function confirmAction(text) {
  const modal = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  modal.hidden = false;
  return new Promise((resolve) => {
    const done = (answer) => {
      modal.hidden = true;
      ok.removeEventListener("click", yes);
      cancel.removeEventListener("click", no);
      resolve(answer);
    };
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const yes = () => done(true);
    const no = () => done(false);
    ok.addEventListener("click", yes);
    cancel.addEventListener("click", no);
  });
}

// Starts an action as a background job and shows its progress until it ends; resolves with its result.
async function runJob(path, body, label) {
  const bar = document.getElementById("progress");
  const meter = document.getElementById("progress-bar");
  const count = document.getElementById("progress-count");
  document.getElementById("progress-label").textContent = label;
  bar.hidden = false;
  meter.removeAttribute("value");
  try {
    let job = await post(path, Object.assign({}, body, { background: true }));
    while (!job.finished) {
      if (job.total > 0) {
        meter.max = job.total;
        meter.value = job.done;
      }
      count.textContent = `${fmt(job.done)} / ${fmt(job.total)}`;
      await new Promise((r) => setTimeout(r, 200));
      job = await api(`/jobs/${job.id}`);
    }
    if (job.error) throw new Error(job.error.message);
    return job.result;
  } finally {
    bar.hidden = true;
  }
}

// A dead letter's partition ("" for a service of one partition): its ids are unique within a partition only.
const partitionOf = (e) => (e.partition === null || e.partition === undefined ? "" : String(e.partition));

// The results of one action run per partition, as one.
function combine(results) {
  if (results.length === 1) return results[0];
  const all = { purged: 0, not_found: [], not_found_count: 0,
    report: { replayed_count: 0, skipped_count: 0, skipped_by_reason: {}, not_matching: 0, replayed: [], skipped: [] } };
  for (const r of results) {
    all.purged += r.purged || 0;
    all.not_found.push(...(r.not_found || []));
    all.not_found_count += r.not_found_count || 0;
    if (!r.report) continue;
    all.report.replayed_count += r.report.replayed_count;
    all.report.skipped_count += r.report.skipped_count;
    all.report.not_matching += r.report.not_matching;
    all.report.replayed.push(...r.report.replayed);
    all.report.skipped.push(...r.report.skipped);
    for (const [k, v] of Object.entries(r.report.skipped_by_reason)) all.report.skipped_by_reason[k] = (all.report.skipped_by_reason[k] || 0) + v;
  }
  return all;
}

function describeReplay(result, dry) {
  const r = result.report;
  const parts = [`${dry ? "would replay" : "replayed"} ${fmt(r.replayed_count)}`];
  if (r.skipped_count) {
    const why = r.skipped_by_reason || {};
    parts.push(`${dry ? "would skip" : "skipped"} ${fmt(r.skipped_count)} (${Object.entries(why).map(([k, v]) => `${k}: ${fmt(v)}`).join(", ")})`);
  }
  if (r.not_matching) parts.push(`${r.not_matching} for other function keys`);
  return parts.join(", ");
}

// ---- charts ----------------------------------------------------------------------------------------------
function sparkline(points, key, cls, unit) {
  const W = 120, H = 28;
  const values = points.map((p) => p[key]);
  const known = values.filter((v) => v !== null && v !== undefined);
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", `spark ${cls}`);
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const max = Math.max(1e-9, ...known);
  const step = values.length > 1 ? W / (values.length - 1) : W;
  const pts = [];
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    pts.push(`${(i * step).toFixed(1)},${(H - 2 - (v / max) * (H - 4)).toFixed(1)}`);
  });
  const line = document.createElementNS(svgNS, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(line);
  const last = known.length ? known[known.length - 1] : null;
  const title = document.createElementNS(svgNS, "title");
  title.textContent = `last ${points.length} samples; max ${max.toFixed(2)} ${unit}`;
  svg.append(title);
  return h("span", { class: "spark-cell" }, svg, h("span", { class: "muted" }, last === null ? "–" : `${last.toFixed(last < 10 ? 2 : 1)} ${unit}`));
}

// ---- pages -----------------------------------------------------------------------------------------------
async function overview() {
  const table = h("table", { id: "services" },
    h("thead", {}, h("tr", {},
      h("th", {}, "service"), h("th", { class: "num" }, "stream"), h("th", { class: "num" }, "pending"),
      h("th", { class: "num" }, "lag"), h("th", { class: "num" }, "oldest pending"), h("th", { class: "num" }, "dead letters"),
      h("th", { class: "num" }, "responders"), h("th", {}, "requests/s"), h("th", {}, "latency"))),
    h("tbody", {}));
  put(main, h("h1", {}, "Services"), table, h("p", { class: "muted", id: "updated" }));
  async function refresh() {
    try {
      const data = await api("/services");
      const rows = data.services.map((s) => s.error ? h("tr", { "data-service": s.service, class: "failed" },
        h("td", {}, h("a", { href: `/services/${enc(s.service)}` }, s.service)),
        h("td", { colspan: 8, class: "error" }, `cannot read its numbers: ${s.error}`)) : h("tr", { "data-service": s.service },
        h("td", {}, h("a", { href: `/services/${enc(s.service)}` }, s.service)),
        h("td", { class: "num stream" }, fmt(s.stream_length)),
        h("td", { class: "num pending" }, fmt(s.pending)),
        h("td", { class: "num lag" }, fmt(s.lag)),
        h("td", { class: "num oldest" }, ms(s.oldest_pending_age_ms)),
        h("td", { class: `num dead ${s.dead_letters ? "bad" : ""}` },
          h("a", { href: `/services/${enc(s.service)}#dead-letters` }, fmt(s.dead_letters))),
        h("td", { class: `num responders ${s.responders ? "good" : "bad"}` }, fmt(s.responders)),
        h("td", {}, sparkline(s.series, "requests_per_s", "rps", "/s")),
        h("td", {}, sparkline(s.series, "latency_ms", "lat", "ms"))));
      if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 9, class: "muted" }, `no services in namespace ${data.namespace}`)));
      table.tBodies[0].replaceChildren(...rows);
      document.getElementById("updated").textContent = `sampled ${new Date(data.sampled_ms).toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (e) {
      message(`cannot read the services: ${e.message}`, true);
    }
  }
  await refresh();
  every(refresh);
}

async function servicePage() {
  const service = P.service;
  const summary = h("div", { id: "summary" });
  const groups = h("div", { id: "groups" });
  const responders = h("div", { id: "responders" });
  const pending = h("div", { id: "pending" });
  const dead = h("div", { id: "dead-letters" });
  put(main,
    h("h1", {}, "Service ", h("span", { id: "service-name" }, service)),
    h("p", {}, h("a", { href: "/" }, "← all services"), " · ",
      h("a", { href: `/services/${enc(service)}/replay`, id: "range-replay-link" }, "replay a range of requests")),
    summary, h("h2", {}, "Live responders"), responders, h("h2", {}, "Groups and consumers"), groups,
    h("h2", {}, "Pending entries"), pending, h("h2", {}, "Dead letters"), dead);

  let groupNames = [];
  async function refresh() {
    let data;
    try {
      data = await api(`/services/${enc(service)}`);
    } catch (e) {
      message(e.message, true);
      return false;
    }
    const s = data.stats;
    const oldest = Math.max(-1, ...s.groups.map((g) => (g.oldest_pending ? g.oldest_pending.age_ms : -1)));
    put(summary, h("div", { class: "cards" },
      card("stream", fmt(s.stream_length)), card("delayed", fmt(s.delayed)),
      card("pending", fmt(s.groups.reduce((a, g) => a + g.pending, 0))),
      card("lag", s.groups.length ? fmt(s.groups.reduce((a, g) => a + (g.lag || 0), 0)) : "–"),
      card("oldest pending", oldest < 0 ? "–" : ms(oldest)),
      card("dead letters", fmt(s.dead_letters), s.dead_letters ? "bad" : ""),
      card("live responders", fmt(data.responders.length), data.responders.length ? "good" : "bad"),
      h("div", { class: "card" }, h("div", { class: "label" }, "requests/s"), sparkline(data.series, "requests_per_s", "rps", "/s")),
      h("div", { class: "card" }, h("div", { class: "label" }, "latency"), sparkline(data.series, "latency_ms", "lat", "ms"))));
    put(responders, data.responders.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["consumer", "host", "pid", "functions", "up", "seen", "in flight", "handled", "failed", "mean ms"].map((t) => h("th", {}, t)))),
      h("tbody", {}, data.responders.map((r) => h("tr", {},
        h("td", {}, r.consumer), h("td", {}, r.host), h("td", {}, r.pid), h("td", {}, r.functions.join(", ")),
        h("td", {}, ms(Date.now() - r.started_ms)), h("td", {}, ago(r.last_seen_ms)), h("td", { class: "num" }, fmt(r.in_flight)),
        h("td", { class: "num" }, fmt(r.handled)), h("td", { class: "num" }, fmt(r.failed)), h("td", { class: "num" }, r.mean_handler_ms.toFixed(2))))))
      : h("p", { class: "muted" }, "no live responder"));
    put(groups, s.groups.length ? h("table", {},
      h("thead", {}, h("tr", {}, ["group", "consumer", "state", "pending", "idle", "lag", "last delivered"].map((t) => h("th", {}, t)))),
      h("tbody", {}, s.groups.flatMap((g) => [
        h("tr", {}, h("td", {}, h("b", {}, g.name)), h("td", { class: "muted" }, `${g.consumers.length} consumers`), h("td", {}),
          h("td", { class: "num" }, fmt(g.pending)), h("td", {}), h("td", { class: "num" }, fmt(g.lag)), h("td", {}, g.last_delivered_id)),
        ...g.consumers.map((c) => h("tr", {}, h("td", {}), h("td", {}, c.name),
          h("td", {}, h("span", { class: `badge ${c.live ? "live" : "gone"}` }, c.live ? "live" : "gone")),
          h("td", { class: "num" }, fmt(c.pending)), h("td", {}, ms(c.idle_ms)), h("td", {}), h("td", {}))),
      ])))
      : h("p", { class: "muted" }, "no consumer group yet (no responder has started)"));
    const names = s.groups.map((g) => g.name);
    if (names.join() !== groupNames.join()) {
      groupNames = names;
      showPending(null);
    }
    return true;
  }

  // Pending entries of one group, a page at a time.
  const pendingGroup = h("select", { id: "pending-group", onchange: () => showPending(null) });
  async function showPending(after) {
    const current = pendingGroup.value || groupNames[0];
    put(pendingGroup, ...groupNames.map((g) => h("option", { value: g, selected: g === current }, g)));
    if (!groupNames.length) {
      put(pending, h("p", { class: "muted" }, "no group"));
      return;
    }
    const q = new URLSearchParams({ group: current, limit: 50 });
    if (after) q.set("after", after);
    let data;
    try {
      data = await api(`/services/${enc(service)}/pending?${q}`);
    } catch (e) {
      put(pending, h("p", { class: "message error" }, `cannot read the pending entries: ${e.message}`));
      return;
    }
    put(pending,
      h("div", { class: "toolbar" }, "group ", pendingGroup,
        after ? h("button", { onclick: () => showPending(null) }, "first page") : null,
        data.next_after ? h("button", { id: "pending-next", onclick: () => showPending(data.next_after) }, "next page") : null),
      data.entries.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["entry", "request", "held by", "idle", "deliveries"].map((t) => h("th", {}, t)))),
        h("tbody", {}, data.entries.map((e) => h("tr", {}, h("td", {}, e.entry_id),
          h("td", {}, e.request_id ? h("a", { href: `/requests/${enc(service)}/${enc(e.request_id)}` }, e.request_id) : "–"),
          h("td", {}, e.consumer), h("td", {}, ms(e.idle_ms)), h("td", { class: "num" }, fmt(e.deliveries))))))
        : h("p", { class: "muted" }, "nothing pending"));
  }

  // Dead letters, filtered, a page at a time; replay and purge the selected or all that match.
  const func = h("input", { id: "dl-func", placeholder: "function key" });
  const reason = h("input", { id: "dl-reason", placeholder: "reason", list: "dl-reasons" });
  const reasons = h("datalist", { id: "dl-reasons" },
    ["unknown_function", "max_deliveries_exceeded", "malformed_request", "invalid_params", "payload_too_large", "expired"].map((r) => h("option", { value: r })));
  const list = h("div", { id: "dl-list" });
  let cursors = [null];
  const filterBody = () => {
    const b = { all: true };
    if (func.value) b.func = func.value;
    if (reason.value) b.reason = reason.value;
    return b;
  };
  // The selected dead letters, as one action body per partition (ids repeat across partitions).
  const selected = () => {
    const byPartition = new Map();
    for (const c of list.querySelectorAll("input.dl-select:checked")) {
      const p = c.dataset.partition;
      if (!byPartition.has(p)) byPartition.set(p, []);
      byPartition.get(p).push(c.value);
    }
    return [...byPartition].map(([p, ids]) => (p === "" ? { ids } : { ids, partition: Number(p) }));
  };
  const count = (bodies) => bodies.reduce((n, b) => n + b.ids.length, 0);
  async function showDead() {
    const after = cursors[cursors.length - 1];
    const q = new URLSearchParams({ limit: 50 });
    if (func.value) q.set("func", func.value);
    if (reason.value) q.set("reason", reason.value);
    if (after) q.set("after", after);
    let data;
    try {
      data = await api(`/services/${enc(service)}/dead-letters?${q}`);
    } catch (e) {
      message(e.message, true);
      return;
    }
    const all = h("input", { type: "checkbox", id: "dl-select-all", "aria-label": "select all on this page",
      onchange: (ev) => list.querySelectorAll("input.dl-select").forEach((c) => { c.checked = ev.target.checked; }) });
    put(list,
      h("p", { class: "muted" }, `${fmt(data.total)} dead letter${data.total === 1 ? "" : "s"} in all; page ${cursors.length}, ${data.entries.length} shown`),
      data.entries.length ? h("table", { id: "dead-letter-table" },
        h("thead", {}, h("tr", {}, READ_ONLY ? null : h("th", {}, all),
          ["dead letter", "request", "function", "reason", "deliveries", "dead for", "error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, data.entries.map((e) => h("tr", { "data-dead-id": e.dead_id },
          READ_ONLY ? null : h("td", {}, h("input", { type: "checkbox", class: "dl-select", value: e.dead_id, "data-partition": partitionOf(e), "aria-label": `select ${e.dead_id}` })),
          h("td", {}, h("a", { class: "dl-link", href: `/services/${enc(service)}/dead-letters/${enc(e.dead_id)}${partitionOf(e) === "" ? "" : `?partition=${partitionOf(e)}`}` }, e.dead_id)),
          h("td", {}, e.request_id ? h("a", { href: `/requests/${enc(service)}/${enc(e.request_id)}` }, e.request_id) : "–"),
          h("td", {}, e.func_key || "–"), h("td", {}, e.reason), h("td", { class: "num" }, fmt(e.deliveries)),
          h("td", {}, e.dead_at_ms ? ms(Date.now() - e.dead_at_ms) : "–"),
          h("td", {}, (e.error || "").split("\n")[0].slice(0, 120))))))
        : h("p", { class: "muted", id: "dl-empty" }, "no dead letters match"),
      h("div", { class: "toolbar" },
        cursors.length > 1 ? h("button", { id: "dl-prev", onclick: () => { cursors.pop(); showDead(); } }, "previous page") : null,
        data.next_after ? h("button", { id: "dl-next", onclick: () => { cursors.push(data.next_after); showDead(); } }, "next page") : null));
  }
  async function act(kind, bodies, what) {
    const verb = kind === "replay" ? "Replay" : "Purge";
    const warn = kind === "purge" ? " They are removed for good." : " Their handlers run again under the same request ids.";
    if (!(await confirmAction(`${verb} ${what}?${warn}`))) return;
    try {
      const results = [];
      for (const body of bodies) results.push(await runJob(`/services/${enc(service)}/dead-letters/${kind}`, body, `${verb.toLowerCase()}ing ${what}`));
      const result = combine(results);
      message(kind === "replay" ? describeReplay(result, false) : `purged ${fmt(result.purged)} dead letters${result.not_found_count ? `; not found: ${fmt(result.not_found_count)} (${result.not_found.slice(0, 20).join(", ")}${result.not_found_count > 20 ? ", …" : ""})` : ""}`);
    } catch (e) {
      message(`${verb} failed: ${e.message}`, true);
    }
    cursors = [null];
    await Promise.all([showDead(), refresh()]);
  }
  const filterText = () => [func.value && `function ${func.value}`, reason.value && `reason ${reason.value}`].filter(Boolean).join(", ") || "no filter";
  put(dead,
    h("form", { class: "toolbar", id: "dl-filter", onsubmit: (ev) => { ev.preventDefault(); cursors = [null]; showDead(); } },
      "filter ", func, reason, reasons, h("button", { type: "submit", id: "dl-apply" }, "apply")),
    READ_ONLY ? null : h("div", { class: "toolbar" },
      h("button", { id: "dl-replay-selected", class: "primary", onclick: () => { const b = selected(), n = count(b); if (n) act("replay", b, `${n} selected dead letter${n > 1 ? "s" : ""}`); else message("select dead letters first", true); } }, "replay selected"),
      h("button", { id: "dl-purge-selected", onclick: () => { const b = selected(), n = count(b); if (n) act("purge", b, `${n} selected dead letter${n > 1 ? "s" : ""}`); else message("select dead letters first", true); } }, "purge selected"),
      h("button", { id: "dl-replay-all", onclick: () => act("replay", [filterBody()], `every dead letter that matches (${filterText()})`) }, "replay all matching"),
      h("button", { id: "dl-purge-all", class: "danger", onclick: () => act("purge", [filterBody()], `every dead letter that matches (${filterText()})`) }, "purge all matching")),
    list);

  if (await refresh()) {
    await showDead();
    if (location.hash === "#dead-letters") dead.scrollIntoView();
  }
  every(async () => { await refresh(); });
}

function fields(pairs) {
  return h("dl", { class: "fields" }, pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null ? "–" : v)]));
}

async function deadLetterPage() {
  const service = P.service, id = P.id;
  // Which partition's dead letter this is, for a partitioned service (ids repeat across partitions).
  const partition = new URLSearchParams(location.search).get("partition");
  const inPartition = partition !== null && /^[0-9]+$/.test(partition) ? { partition: Number(partition) } : {};
  let e;
  try {
    e = await api(`/services/${enc(service)}/dead-letters/${enc(id)}${inPartition.partition === undefined ? "" : `?partition=${inPartition.partition}`}`);
  } catch (err) {
    put(main, h("h1", {}, `Dead letter ${id}`), h("p", { class: "message error", id: "message" }, err.message),
      h("p", {}, h("a", { href: `/services/${enc(service)}#dead-letters` }, "← dead letters of ", service)));
    return;
  }
  const req = e.request || {};
  put(main,
    h("h1", {}, "Dead letter ", h("span", { id: "dead-id" }, e.dead_id)),
    h("p", {}, h("a", { href: `/services/${enc(service)}#dead-letters` }, "← dead letters of ", service)),
    fields([
      ["request", e.request_id ? h("a", { id: "request-link", href: `/requests/${enc(service)}/${enc(e.request_id)}` }, e.request_id) : null],
      ["function", e.func_key], ["reason", h("b", { id: "reason" }, e.reason)], ["deliveries", e.deliveries],
      ["group", e.group], ["stream entry", e.entry_id],
      ["dead since", e.dead_at_ms ? `${new Date(e.dead_at_ms).toISOString()} (${ago(e.dead_at_ms)})` : null],
      ["created", req.created_ms ? new Date(req.created_ms).toISOString() : undefined],
      ["deadline", req.deadline_ms ? new Date(req.deadline_ms).toISOString() : undefined],
      ["replayed before", req.replay ? `${req.replay.count} time(s), latest from ${req.replay.from}` : undefined],
    ]),
    h("h2", {}, "Last error"), h("pre", { class: "error", id: "last-error" }, e.error || "(none recorded)"),
    h("h2", {}, "Params"), h("pre", { id: "params" }, req.undecodable ? `cannot decode the envelope: ${req.undecodable}` : json(req.params)),
    READ_ONLY ? null : h("div", { class: "toolbar" },
      h("button", { id: "replay", class: "primary", onclick: () => act("replay") }, "replay"),
      h("button", { id: "purge", class: "danger", onclick: () => act("purge") }, "purge")));
  async function act(kind) {
    const text = kind === "replay"
      ? `Replay dead letter ${e.dead_id}? Request ${e.request_id} runs again under the same id.`
      : `Purge dead letter ${e.dead_id}? It is removed for good.`;
    if (!(await confirmAction(text))) return;
    try {
      const result = await runJob(`/services/${enc(service)}/dead-letters/${kind}`, Object.assign({ ids: [e.dead_id] }, inPartition), kind);
      if (kind === "replay") {
        const r = result.report;
        if (r.replayed.length) {
          message(`replayed: request ${e.request_id} is queued again`);
          main.querySelectorAll(".toolbar button").forEach((b) => { b.disabled = true; });
        } else {
          message(`not replayed: ${r.skipped.map((s) => s.reason).join(", ")}`, true);
        }
      } else {
        message(result.purged ? "purged" : "it was already gone", !result.purged);
        main.querySelectorAll(".toolbar button").forEach((b) => { b.disabled = true; });
      }
    } catch (err) {
      message(`${kind} failed: ${err.message}`, true);
    }
  }
}

const SETTLED = new Set(["answered", "dead_lettered", "expired", "cancelled", "acknowledged"]);
async function requestPage() {
  const service = P.service, id = P.id;
  async function draw() {
    let s;
    try {
      s = await api(`/requests/${enc(service)}/${enc(id)}`);
    } catch (err) {
      put(main, h("h1", {}, `Request ${id}`), h("p", { class: "message error", id: "message" }, err.message));
      return true;
    }
    const st = s.state, req = s.request || {};
    let detail = "";
    if (st.kind === "pending") detail = ` — held by ${st.consumer} (group ${st.group}), idle ${ms(st.idle_ms)}, delivered ${st.deliveries}×`;
    if (st.kind === "queued") detail = st.group ? ` — not yet delivered to group ${st.group}` : " — no consumer group yet";
    if (st.kind === "answered") detail = st.answer.status === "ok" ? " — ok" : ` — error [${st.answer.code}] ${st.answer.message}`;
    if (st.kind === "dead_lettered") detail = ` (${st.reason})`;
    if (st.kind === "scheduled") detail = ` — due ${new Date(st.due_ms).toISOString()}`;
    const reply = s.reply;
    put(main,
      h("h1", {}, "Request ", h("span", { id: "request-id" }, s.id)),
      h("p", {}, h("a", { href: `/services/${enc(service)}` }, "← service ", service)),
      h("p", {}, "state ", h("b", { id: "state", class: st.kind === "answered" && st.answer.status === "ok" ? "good" : (SETTLED.has(st.kind) ? "bad" : "") }, st.kind), detail,
        st.kind === "dead_lettered" && st.dead_letter_entry_id
          ? h("span", {}, " · ", h("a", { href: `/services/${enc(service)}/dead-letters/${enc(st.dead_letter_entry_id)}` }, "its dead letter")) : null),
      fields([
        ["function", req.func_key], ["params size", req.params_size !== undefined ? `${req.params_size} bytes` : undefined],
        ["created", req.created_ms ? `${new Date(req.created_ms).toISOString()} (${ago(req.created_ms)})` : undefined],
        ["deadline", req.deadline_ms ? new Date(req.deadline_ms).toISOString() : undefined],
        ["replayed", req.replay ? `${req.replay.count} time(s), latest from ${req.replay.source} ${req.replay.from}` : "never"],
        ["trace", req.trace_id || undefined], ["stream entry", s.entry_id || undefined],
        ["last progress", s.last_progress ? `${JSON.stringify(s.last_progress.data)} (${ago(s.last_progress.ts_ms)})` : undefined],
      ]),
      h("h2", {}, "Params"), h("pre", { id: "params" }, json(req.params)),
      s.last_error ? [h("h2", {}, "Last error"), h("pre", { class: "error", id: "last-error" }, s.last_error)] : null,
      h("h2", {}, "Reply"),
      reply ? h("pre", { id: "reply", class: reply.status === "ok" ? "" : "error" },
        reply.status === "ok" ? json(reply.data) : `${reply.status} [${reply.code || ""}] ${reply.message || ""}`)
        : h("p", { class: "muted", id: "reply" }, "no reply stored"),
      h("p", { class: "muted" }, SETTLED.has(st.kind) ? "" : `refreshing every ${REFRESH_MS / 1000} s until it settles`));
    return SETTLED.has(st.kind);
  }
  if (!(await draw())) every(draw);
}

async function rangeReplayPage() {
  const service = P.service;
  const from = h("input", { id: "range-from", value: "-", size: 24 });
  const to = h("input", { id: "range-to", value: "+", size: 24 });
  const func = h("input", { id: "range-func", placeholder: "all function keys" });
  const timeout = h("input", { id: "range-timeout", type: "number", min: 1, value: 600, size: 6 });
  const report = h("div", { id: "report" });
  const replay = h("button", { id: "range-replay", class: "danger", disabled: true }, "replay");
  let dried = null;
  const body = () => {
    const b = { from: from.value.trim(), to: to.value.trim(), timeout_secs: Number(timeout.value) };
    if (func.value.trim()) b.func = func.value.trim();
    return b;
  };
  [from, to, func, timeout].forEach((i) => i.addEventListener("input", () => { replay.disabled = true; dried = null; }));
  function show(result, dry) {
    const r = result.report;
    put(report, h("p", { class: "message", id: "message" }, describeReplay(result, dry)),
      r.truncated ? h("p", { class: "muted" }, "the lists below show the first entries only") : null,
      r.replayed.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "entry"), h("th", {}, "request"), h("th", {}, "new entry"))),
        h("tbody", {}, r.replayed.slice(0, 200).map((x) => h("tr", {}, h("td", {}, x.from),
          h("td", {}, h("a", { href: `/requests/${enc(service)}/${enc(x.request_id)}` }, x.request_id)), h("td", {}, x.entry_id || "–"))))) : null,
      r.skipped.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "skipped entry"), h("th", {}, "request"), h("th", {}, "why"))),
        h("tbody", {}, r.skipped.slice(0, 200).map((x) => h("tr", {}, h("td", {}, x.from), h("td", {}, x.request_id || "–"), h("td", {}, x.reason))))) : null);
  }
  const dry = h("button", { id: "range-dry-run", class: "primary", onclick: async () => {
    try {
      const b = body();
      const result = await runJob(`/services/${enc(service)}/replay-range`, Object.assign({ dry_run: true }, b), "dry run");
      show(result, true);
      dried = JSON.stringify(b);
      replay.disabled = READ_ONLY || result.report.replayed_count === 0;
    } catch (e) {
      put(report, h("p", { class: "message error", id: "message" }, e.message));
    }
  } }, "dry run");
  replay.addEventListener("click", async () => {
    const b = body();
    if (JSON.stringify(b) !== dried) return;
    if (!(await confirmAction(`Replay the requests from ${b.from} to ${b.to}${b.func ? ` for ${b.func}` : ""}? Their handlers run again under the same request ids.`))) return;
    try {
      show(await runJob(`/services/${enc(service)}/replay-range`, b, "replaying"), false);
    } catch (e) {
      put(report, h("p", { class: "message error", id: "message" }, e.message));
    }
    replay.disabled = true;
  });
  put(main, h("h1", {}, "Replay a range of ", service),
    h("p", {}, h("a", { href: `/services/${enc(service)}` }, "← service ", service)),
    h("p", { class: "muted" }, "Entry ids (<ms>-<seq>), a millisecond timestamp, or - and + for the ends. Requests still in flight are skipped. A dry run comes first: it shows what would be replayed; then Replay runs the same range."),
    h("div", { class: "toolbar" }, "from ", from, " to ", to, " function ", func, " timeout (s) ", timeout),
    h("div", { class: "toolbar" }, dry, READ_ONLY ? h("span", { class: "muted" }, "read-only: dry runs only") : replay), report);
}

// ---- start -----------------------------------------------------------------------------------------------
document.querySelector(".read-only-badge").hidden = !READ_ONLY;
document.getElementById("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const s = document.getElementById("lookup-service").value.trim();
  const id = document.getElementById("lookup-id").value.trim();
  if (s && id) location.href = `/requests/${enc(s)}/${enc(id)}`;
});
const PAGES = { overview, service: servicePage, dead_letter: deadLetterPage, request: requestPage, range_replay: rangeReplayPage };
(PAGES[P.page] || overview)().catch((e) => message(e.message, true));
