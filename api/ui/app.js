// capsule's page: clusters → sources → backups, read from the API beside
// it. Plain JavaScript, no libraries, nothing fetched from elsewhere.
"use strict";

(function () {
  const REFRESH_MS = 15000;
  const PAGE = 500;        // backups per API call
  const MAX_BACKUPS = 5000; // per cluster, to keep the page light
  const TIMELINE = 60;      // newest backups drawn per source
  // The format of a PostgreSQL base backup (engines/postgres FormatBase):
  // a source that has one may be restored to a point in time.
  const BASE_FORMAT = "pg_basebackup-tar.v1";

  const main = document.getElementById("main");
  const updated = document.getElementById("updated");
  const refreshButton = document.getElementById("refresh");
  const SVG = "http://www.w3.org/2000/svg";

  // el builds an element: el("td", {class: "x", title: "y"}, child, "text", ...).
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null) e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : String(c));
    return e;
  }

  class APIError extends Error {
    constructor(status, body) {
      super((body && body.message) || "HTTP " + status);
      this.status = status;
      this.code = body && body.code;
    }
  }

  async function get(path) {
    const res = await fetch(path, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) throw new APIError(res.status, body);
    return body;
  }

  async function backupsOf(cluster) {
    const out = [];
    let cursor = "";
    do {
      let url = "v1/clusters/" + encodeURIComponent(cluster) + "/backups?limit=" + PAGE;
      if (cursor) url += "&cursor=" + encodeURIComponent(cursor);
      const page = await get(url);
      out.push(...page.backups);
      cursor = page.nextCursor || "";
    } while (cursor && out.length < MAX_BACKUPS);
    return { backups: out, truncated: !!cursor };
  }

  function bytes(n) {
    if (n === undefined || n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
  }

  function duration(ms) {
    if (!(ms >= 0)) return "–";
    const s = ms / 1000;
    if (s < 1) return Math.round(ms) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + "m " + Math.round(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.round((s % 3600) / 60) + "m";
  }

  function age(iso) {
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (!(s >= 0)) return "just now";
    if (s < 60) return Math.round(s) + "s ago";
    if (s < 3600) return Math.round(s / 60) + "m ago";
    if (s < 86400) return Math.round(s / 3600) + "h ago";
    return Math.round(s / 86400) + "d ago";
  }

  function tookMs(x) {
    return Date.parse(x.finishedAt) - Date.parse(x.startedAt);
  }

  function statusBadge(status) {
    return el("span", { class: "badge status-" + status, "data-status": status }, status);
  }

  // What a verification proved. Only "restored" says a restore was done
  // and checked; each state has its own symbol and words, not only a
  // color.
  const VERIFIED = {
    restored: { text: "✓ restored", title: "restored into scratch space and checked" },
    checksum: { text: "≈ checksum only", title: "the stored bytes were read and match their checksums; nothing was restored" },
    failed: { text: "✗ failed", title: "the verification failed" },
    never: { text: "– never verified", title: "no verification is recorded" },
  };

  // verifiedState mirrors the API's state, for a record without one.
  function verifiedState(v) {
    if (!v) return "never";
    if (!v.ok || v.state === "failed") return "failed";
    if (v.state === "restored" || v.state === "checksum") return v.state;
    const checks = v.checks || [];
    if (checks.length === 0 || checks.some((c) => (c.detail || "").startsWith("checksum only"))) return "checksum";
    return "restored";
  }

  function verificationCell(v) {
    const state = verifiedState(v);
    const kind = VERIFIED[state];
    let title = kind.title;
    if (v) title += " (" + new Date(v.verifiedAt).toLocaleString() + ")" + (v.error ? ": " + v.error : "");
    return el("td", { class: "verify", "data-verified": state, title },
      el("span", { class: "badge verify-" + state }, kind.text),
      v ? " " : null, v ? el("span", { class: "muted" }, age(v.verifiedAt)) : null);
  }

  // failureCard shows a source's newest failed, canceled or rejected
  // backup: the first line of its error (text, never markup) and when.
  function failureCard(src) {
    const f = src.lastFailure;
    if (!f) return null;
    const newest = src.newestSuccessful;
    const current = !newest || Date.parse(f.finishedAt) > Date.parse(newest.finishedAt);
    const what = { failed: "failed", canceled: "was canceled", rejected: "was rejected" }[f.status] || f.status;
    const since = src.failuresSinceSuccess > 1 ? " · " + src.failuresSinceSuccess + (newest ? " since the last success" : " so far") : "";
    return el("div", { class: "failure" + (current ? "" : " resolved"), "data-failure-id": f.id, "data-status": f.status, "data-current": String(current) },
      el("div", { class: "failure-head" },
        el("strong", {}, (current ? "✗ Last backup " : "Earlier backup ") + what), " ",
        el("span", { title: new Date(f.finishedAt).toLocaleString() }, age(f.finishedAt)),
        el("span", { class: "muted" }, " · " + f.id + since + (current ? "" : " · a backup succeeded since"))),
      el("div", { class: "failure-error" }, f.error || "(no error recorded)"));
  }

  // timeline draws a source's newest backups, oldest on the left: bars are
  // the bytes backed up, the line is how long each backup took.
  function timeline(backups) {
    const pts = backups.slice(0, TIMELINE).map((b) => b.index).reverse();
    const W = 720, H = 130, L = 56, R = 56, T = 12, B = 22;
    const w = W - L - R, h = H - T - B;
    const root = svg("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "sizes and durations of the newest backups" });
    if (pts.length === 0) return root;
    const maxBytes = Math.max(1, ...pts.map((x) => x.bytes || 0));
    const maxMs = Math.max(1, ...pts.map(tookMs));
    const t0 = Date.parse(pts[0].finishedAt), t1 = Date.parse(pts[pts.length - 1].finishedAt);
    const span = Math.max(1, t1 - t0);
    const slot = w / Math.max(pts.length, 1);
    const barW = Math.max(2, Math.min(24, slot * 0.6));
    const xOf = (x, i) => pts.length === 1 ? L + w / 2 : L + barW / 2 + ((Date.parse(x.finishedAt) - t0) / span) * (w - barW);
    root.append(
      svg("line", { x1: L, y1: T + h, x2: L + w, y2: T + h, class: "axis" }),
      svg("text", { x: L - 6, y: T + 8, class: "label size", "text-anchor": "end" }, bytes(maxBytes)),
      svg("text", { x: L - 6, y: T + h, class: "label size", "text-anchor": "end" }, "0"),
      svg("text", { x: L + w + 6, y: T + 8, class: "label took" }, duration(maxMs)),
      svg("text", { x: L + w + 6, y: T + h, class: "label took" }, "0"),
      svg("text", { x: L, y: H - 6, class: "label" }, new Date(t0).toLocaleString()),
      svg("text", { x: L + w, y: H - 6, class: "label", "text-anchor": "end" }, new Date(t1).toLocaleString()),
    );
    const line = [];
    pts.forEach((x, i) => {
      const cx = xOf(x, i);
      const bh = Math.max(1, (x.bytes / maxBytes) * h);
      const bar = svg("rect", { x: cx - barW / 2, y: T + h - bh, width: barW, height: bh, class: "bar status-" + x.status, "data-backup-id": x.backupId },
        svg("title", {}, `${x.backupId}\n${bytes(x.bytes)} (${bytes(x.storedBytes)} stored), took ${duration(tookMs(x))}\n${new Date(x.finishedAt).toLocaleString()}`));
      root.append(bar);
      line.push([cx, T + h - (tookMs(x) / maxMs) * h]);
    });
    if (line.length > 1) {
      root.append(svg("polyline", { points: line.map((p) => p.join(",")).join(" "), class: "took-line" }));
    }
    for (const [cx, cy] of line) root.append(svg("circle", { cx, cy, r: 3, class: "took-dot" }));
    return root;
  }

  // A backup no key the server trusts signed: workers refuse to restore,
  // verify or delete it.
  function untrustedBadge(sig) {
    if (!sig || sig.state !== "untrusted") return null;
    return el("span", { class: "badge bad untrusted", title: "untrusted: " + (sig.reason || "no trusted signature") }, "untrusted");
  }

  // pitrWindow reads a source's recoverable window: the window, or null
  // with why when no point-in-time restore is possible (404).
  async function pitrWindow(cluster, source) {
    try {
      return { window: await get("v1/clusters/" + encodeURIComponent(cluster) + "/pitr?source=" + encodeURIComponent(source)) };
    } catch (err) {
      if (err.status === 404) return { window: null, why: err.message };
      throw err;
    }
  }

  function when(iso) {
    return new Date(iso).toLocaleString() + " (" + age(iso) + ")";
  }

  // pitrCard shows the stretch of time a point-in-time restore reaches.
  function pitrCard(p) {
    if (!p) return null;
    const w = p.window;
    if (!w) {
      return el("div", { class: "pitr none", "data-pitr": "none" },
        el("strong", {}, "Point in time: "), "no restore possible yet", el("div", { class: "muted" }, p.why || ""));
    }
    return el("div", { class: "pitr", "data-pitr": "window", "data-earliest": w.earliest, "data-latest": w.latest,
      "data-earliest-lsn": w.earliestLSN, "data-latest-lsn": w.latestLSN },
    el("strong", {}, "Point in time: "), "recoverable from ",
    el("time", { class: "earliest", datetime: w.earliest, title: "LSN " + w.earliestLSN }, when(w.earliest)),
    " to ",
    el("time", { class: "latest", datetime: w.latest, title: "LSN " + w.latestLSN }, when(w.latest)),
    el("div", { class: "muted" }, "LSN " + w.earliestLSN + " – " + w.latestLSN + " on timeline " + w.timeline + " · " +
      w.baseBackups + (w.baseBackups === 1 ? " base backup" : " base backups") + " · " +
      w.walObjects + " WAL objects (" + bytes(w.walBytes) + " stored)"));
  }

  function sourceView(cluster, src, backups, pitr) {
    const newest = src.newestSuccessful;
    const rows = backups.map((b) => {
      const x = b.index;
      return el("tr", { "data-backup-id": x.backupId, "data-status": x.status },
        el("td", { class: "id" }, x.backupId),
        el("td", {}, statusBadge(x.status), untrustedBadge(b.signature)),
        el("td", { title: new Date(x.finishedAt).toLocaleString() }, age(x.finishedAt)),
        el("td", { class: "num" }, duration(tookMs(x))),
        el("td", { class: "num", title: x.bytes + " bytes" }, bytes(x.bytes)),
        el("td", { class: "num", title: x.storedBytes + " bytes" }, bytes(x.storedBytes)),
        verificationCell(b.verification));
    });
    const history = backups.length === 0 ? [el("p", { class: "muted no-backups" }, "No committed backup.")] : [
      el("div", { class: "legend muted" }, el("span", { class: "key bar-key" }), "size ", el("span", { class: "key line-key" }), "duration"),
      timeline(backups),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["Backup", "Status", "Finished", "Took", "Size", "Stored", "Verification"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows))];
    return el("article", { class: "source", "data-cluster": cluster, "data-source": src.name },
      el("h3", {}, src.name, src.engine ? " " : null, src.engine ? el("span", { class: "badge engine" }, src.engine) : null),
      el("p", { class: "muted" }, src.backups + (src.backups === 1 ? " backup" : " backups"),
        newest ? " · newest successful " + age(newest.finishedAt) + " (" + bytes(newest.bytes) + ")" : " · no successful backup"),
      pitrCard(pitr),
      failureCard(src),
      ...history);
  }

  async function clusterView(c) {
    const { backups, truncated } = c.backups > 0 ? await backupsOf(c.name) : { backups: [], truncated: false };
    const bySource = new Map();
    for (const b of backups) {
      if (!bySource.has(b.index.source)) bySource.set(b.index.source, []);
      bySource.get(b.index.source).push(b);
    }
    // Sources with a base backup: their recoverable windows.
    const pitr = new Map();
    await Promise.all([...bySource].filter(([, bs]) => bs.some((b) => b.index.format === BASE_FORMAT))
      .map(async ([name]) => { pitr.set(name, await pitrWindow(c.name, name)); }));
    return el("section", { class: "cluster", "data-cluster": c.name },
      el("h2", {}, c.name, " ", el("span", { class: "muted count" }, c.backups + (c.backups === 1 ? " backup" : " backups"))),
      truncated ? el("p", { class: "muted" }, `showing the newest ${backups.length}`) : null,
      ...c.sources.map((s) => sourceView(c.name, s, bySource.get(s.name) || [], pitr.get(s.name))));
  }

  let busy = false;
  async function load() {
    if (busy) return;
    busy = true;
    refreshButton.disabled = true;
    try {
      const list = await get("v1/clusters");
      const views = await Promise.all(list.clusters.map(clusterView));
      const body = views.length ? views : [el("p", { class: "empty muted" }, "No backups in this bucket yet.")];
      main.replaceChildren(...body);
      main.dataset.loaded = "true";
      updated.textContent = "read " + new Date(list.asOf).toLocaleTimeString();
    } catch (err) {
      main.querySelectorAll(".error").forEach((e) => e.remove());
      main.prepend(el("div", { class: "error", role: "alert" }, "Could not load: " + err.message + (err.code ? " (" + err.code + ")" : "")));
      const loading = document.getElementById("loading");
      if (loading) loading.remove();
    } finally {
      busy = false;
      refreshButton.disabled = false;
    }
  }

  refreshButton.addEventListener("click", load);
  load();
  setInterval(load, REFRESH_MS);
})();
