// hyvl explore: the Poincare disk of an index on a canvas, with search, cones and walks.
// Hand-written, no library: the page must open offline (an export is one HTML file) and it
// draws only dots, thumbnails, labels and lines. Served, it asks the server's JSON API; in an
// export (window.HYVL_DATA set) the same questions are answered from the embedded data.
"use strict";
(function () {
  const DATA = window.HYVL_DATA;
  const $ = (id) => document.getElementById(id);
  const canvas = $("disk");
  const ctx = canvas.getContext("2d");
  const LIMIT = 4000; // points drawn per view (level of detail: the server picks which)
  const S = {
    meta: null, pts: null, inView: 0,
    view: { scale: 1, cx: 0, cy: 0 },
    colourBy: "kind", hover: null, selected: null, query: null, cone: new Set(),
    thumbs: new Map(),
  };

  // ------------------------------------------------------------------ data
  async function api(path, params, body) {
    if (DATA) return local(path, params || {});
    const url = path + "?" + new URLSearchParams(params || {});
    const r = await fetch(url, body ? { method: "POST", body } : {});
    const j = await r.json();
    if (!r.ok) throw new Error(j.error || r.statusText);
    return j;
  }

  function local(path, params) {
    if (path === "/api/meta") return DATA.meta;
    if (path === "/api/points") return inBox(DATA.points, params.box, +params.limit);
    if (path === "/api/item") {
      const it = DATA.items[params.row];
      if (!it) throw new Error("item " + params.row + " is not in this export");
      return it;
    }
    if (path === "/api/query") return localQuery(params.text || "");
    throw new Error("an export answers no " + path);
  }

  function inBox(p, box, limit) {
    const [x0, y0, x1, y1] = box.split(",").map(Number);
    const keep = [];
    for (let i = 0; i < p.rows.length; i++) {
      if (p.x[i] >= x0 && p.x[i] <= x1 && p.y[i] >= y0 && p.y[i] <= y1) keep.push(i);
    }
    const out = { in_view: keep.length };
    for (const key of Object.keys(p)) out[key] = keep.slice(0, limit).map((i) => p[key][i]);
    return out;
  }

  // An export has no model: a typed text picks the exported item with that label (else the
  // first whose label contains it) and shows that item's precomputed answers.
  function localQuery(text) {
    const t = text.trim().toLowerCase();
    if (!t) throw new Error("type the label of an item to find it");
    const labels = DATA.points.label.map((s) => s.toLowerCase());
    let i = labels.indexOf(t);
    if (i < 0) i = labels.findIndex((s) => s.includes(t));
    if (i < 0) throw new Error("no exported item is labelled " + JSON.stringify(text));
    const it = DATA.items[DATA.points.rows[i]];
    return {
      query: it.label, kind: it.kind, d0: it.d0, x: it.x, y: it.y, results: it.neighbours,
      cone: it.descendants.map((d) => d.row), cone_count: it.descendants_count, path: it.path,
    };
  }

  function thumb(row) {
    if (S.thumbs.has(row)) return S.thumbs.get(row);
    let src = null;
    if (!DATA) src = "/api/thumb?row=" + row;
    else if (DATA.thumbs[row]) src = DATA.thumbs[row];
    let img = null;
    if (src) {
      img = new Image();
      img.onload = () => draw();
      img.src = src;
    }
    S.thumbs.set(row, img);
    return img;
  }

  // ------------------------------------------------------------------ view
  function radius() { return 0.47 * Math.min(canvas.width, canvas.height) * S.view.scale; }
  function toScreen(x, y) {
    const R = radius();
    return [canvas.width / 2 + (x - S.view.cx) * R, canvas.height / 2 - (y - S.view.cy) * R];
  }
  function toWorld(sx, sy) {
    const R = radius();
    return [(sx - canvas.width / 2) / R + S.view.cx, -(sy - canvas.height / 2) / R + S.view.cy];
  }
  function box() {
    const [x0, y1] = toWorld(0, 0);
    const [x1, y0] = toWorld(canvas.width, canvas.height);
    return [x0, y0, x1, y1].map((v) => v.toFixed(5)).join(",");
  }

  let pending = null;
  function refetch() {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const p = await api("/api/points", { box: box(), limit: LIMIT });
      S.pts = p;
      S.inView = p.in_view;
      draw();
    }, 120);
  }

  function style(kind, cls) {
    const m = S.meta;
    if (S.colourBy === "class" && m.classes.length) {
      if (cls < 0) return { colour: "#bbbbbb", marker: "o" };
      return m.class_styles[cls];
    }
    return { colour: m.kind_colours[kind], marker: "o" };
  }

  // matplotlib's marker codes (hyvl.viz.MARKERS), so the page and the PNGs agree
  function marker(x, y, r, code) {
    ctx.beginPath();
    if (code === "s") ctx.rect(x - r, y - r, 2 * r, 2 * r);
    else if (code === "^" || code === "v") {
      const s = code === "^" ? -1 : 1;
      ctx.moveTo(x, y + s * r * 1.2); ctx.lineTo(x + r * 1.1, y - s * r * 0.8);
      ctx.lineTo(x - r * 1.1, y - s * r * 0.8); ctx.closePath();
    } else if (code === "D") {
      ctx.moveTo(x, y - r * 1.2); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r * 1.2);
      ctx.lineTo(x - r, y); ctx.closePath();
    } else if (code === "P" || code === "X") {
      const a = code === "X" ? Math.PI / 4 : 0;
      for (let k = 0; k < 4; k++) {
        const t = a + (k * Math.PI) / 2;
        ctx.moveTo(x, y);
        ctx.lineTo(x + 1.3 * r * Math.cos(t), y + 1.3 * r * Math.sin(t));
      }
      ctx.lineWidth = r * 0.8; ctx.stroke(); ctx.lineWidth = 1;
      return;
    } else if (code === "h") {
      for (let k = 0; k < 6; k++) {
        const t = (k * Math.PI) / 3 + Math.PI / 6;
        ctx[k ? "lineTo" : "moveTo"](x + r * 1.1 * Math.cos(t), y + r * 1.1 * Math.sin(t));
      }
      ctx.closePath();
    } else ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
  }

  function circle(r, dash) {
    const [x, y] = toScreen(0, 0);
    ctx.setLineDash(dash || []);
    ctx.beginPath();
    ctx.arc(x, y, r * radius(), 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);
  }

  function drawPath(path, colour) {
    if (!path) return;
    ctx.strokeStyle = colour; ctx.fillStyle = colour; ctx.lineWidth = 2;
    ctx.beginPath();
    path.forEach((s, i) => { const [x, y] = toScreen(s.x, s.y); ctx[i ? "lineTo" : "moveTo"](x, y); });
    ctx.stroke();
    ctx.lineWidth = 1;
    let last = null;
    ctx.font = "12px system-ui, sans-serif";
    for (const s of path) {
      const [x, y] = toScreen(s.x, s.y);
      marker(x, y, 2.5, "o");
      if (s.label && s.label !== last) ctx.fillText(s.label, x + 5, y - 4);
      last = s.label || last;
    }
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(canvas.clientWidth * dpr), h = Math.round(canvas.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.clearRect(0, 0, w, h);
    if (!S.meta) return;
    ctx.strokeStyle = "#222"; circle(1);
    ctx.strokeStyle = "#aaa"; ctx.fillStyle = "#666"; ctx.font = "11px system-ui, sans-serif";
    for (const ring of S.meta.rings) {
      circle(ring.r, [4, 4]);
      const [x, y] = toScreen(0, ring.r);
      ctx.fillText("d=" + ring.d, x + 3, y - 3);
    }
    const [ox, oy] = toScreen(0, 0);
    ctx.fillStyle = "#222"; ctx.fillRect(ox - 5, oy - 0.5, 10, 1); ctx.fillRect(ox - 0.5, oy - 5, 1, 10);
    const p = S.pts;
    if (!p) return;
    let images = 0, texts = 0;
    for (let i = 0; i < p.rows.length; i++) (p.kind[i] === 1 ? texts++ : images++);
    const thumbs = images <= 250, labels = texts <= 150;
    const size = thumbs ? Math.min(48, Math.max(18, 6 * Math.sqrt(S.view.scale))) : 0;
    for (let i = 0; i < p.rows.length; i++) {
      const [x, y] = toScreen(p.x[i], p.y[i]);
      if (x < -50 || y < -50 || x > w + 50 || y > h + 50) continue;
      const st = style(p.kind[i], p.cls[i]);
      ctx.fillStyle = st.colour; ctx.strokeStyle = st.colour;
      const img = thumbs && p.thumb[i] ? thumb(p.rows[i]) : null;
      if (img && img.complete && img.naturalWidth) {
        ctx.drawImage(img, x - size / 2, y - size / 2, size, size);
        ctx.lineWidth = 2; ctx.strokeRect(x - size / 2, y - size / 2, size, size); ctx.lineWidth = 1;
      } else marker(x, y, 3, st.marker);
      if (labels && p.kind[i] === 1) { ctx.fillStyle = "#222"; ctx.fillText(p.label[i], x + 5, y + 4); }
      if (S.cone.has(p.rows[i])) {
        ctx.strokeStyle = "#000"; ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.stroke();
      }
    }
    const q = S.query;
    if (q) {
      drawPath(q.path, "#222");
      ctx.font = "bold 12px system-ui, sans-serif";
      q.results.forEach((r, i) => {
        const [x, y] = toScreen(r.x, r.y);
        ctx.strokeStyle = "#000"; ctx.lineWidth = 2.5;
        ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.stroke(); ctx.lineWidth = 1;
        ctx.fillStyle = "#000"; ctx.fillText(String(i + 1), x + 10, y - 8);
      });
      const [x, y] = toScreen(q.x, q.y);
      ctx.fillStyle = "#000"; marker(x, y, 6, "D");
    }
    if (S.selected) {
      drawPath(S.selected.path, "#CC79A7");
      const [x, y] = toScreen(S.selected.x, S.selected.y);
      ctx.strokeStyle = "#CC79A7"; ctx.lineWidth = 3;
      ctx.beginPath(); ctx.arc(x, y, 11, 0, 2 * Math.PI); ctx.stroke(); ctx.lineWidth = 1;
    }
    $("status").textContent = `showing ${p.rows.length} of ${S.inView} items in view ` +
      `(${S.meta.items} in the index${S.meta.exported ? ", " + S.meta.exported + " exported" : ""})`;
  }

  function legend() {
    const m = S.meta;
    const rows = S.colourBy === "class" && m.classes.length
      ? m.classes.map((c, i) => [m.class_styles[i].colour, c + " (" + m.class_styles[i].marker + ")"])
      : m.kinds.map((k, i) => [m.kind_colours[i], k.replace("_", " ")]).filter(([, k]) => m.counts[k.replace(" ", "_")]);
    $("legend").innerHTML = rows.map(([c, t]) =>
      `<div><span class="swatch" style="background:${c}"></span>${esc(t)}</div>`).join("") +
      "<div>dashed rings: distance d to the origin</div>";
  }

  // ------------------------------------------------------------------ panel
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  function list(id, items, ordered) {
    const tag = ordered ? "ol" : "ul";
    if (!items.length) return `<p class="hint" id="${id}">none</p>`;
    return `<${tag} id="${id}">` + items.map((r) =>
      `<li data-row="${r.row}">${esc(r.label)} <span class="d">${r.kind}` +
      (r.distance !== undefined ? `, ${r.distance.toFixed(3)}` : `, d0 ${r.d0.toFixed(3)}`) +
      `</span></li>`).join("") + `</${tag}>`;
  }
  function walk(path) {
    const seen = [];
    for (const s of path) if (s.label && s.label !== (seen[seen.length - 1] || {}).label) seen.push(s);
    if (!seen.length) return '<p class="hint" id="path">no text\'s cone holds the walk</p>';
    return '<ol id="path">' + seen.map((s) =>
      `<li data-row="${s.text}">${esc(s.label)} <span class="d">at d0 ${s.dist0.toFixed(3)}</span></li>`).join("") + "</ol>";
  }

  function showQuery(q) {
    $("panel").innerHTML = `<h2 id="query-title">${esc(q.query)}</h2>` +
      `<p class="d">${q.kind} query, ${q.d0.toFixed(3)} from the origin</p>` +
      "<h3>nearest (distance)</h3>" + list("results", q.results, true) +
      "<h3>walk to the origin: the texts met</h3>" + walk(q.path) +
      `<h3>inside its cone</h3><p class="d" id="cone">${q.cone_count} items (ringed)</p>`;
  }

  function showItem(it) {
    $("panel").innerHTML = `<h2 id="item-title">${esc(it.label)}</h2>` +
      `<p class="d">${it.kind}, ${it.d0.toFixed(3)} from the origin<br>${esc(it.item)}</p>` +
      (it.caption ? `<p id="caption">${esc(it.caption)}</p>` : "") +
      (it.kind === "image" && (!DATA || DATA.thumbs[it.row]) ? `<img alt="" src="${DATA ? DATA.thumbs[it.row] : "/api/thumb?row=" + it.row}">` : "") +
      "<h3>neighbours</h3>" + list("neighbours", it.neighbours, true) +
      `<h3>ancestors: cones holding it (${it.ancestors_count})</h3>` + list("ancestors", it.ancestors) +
      `<h3>descendants: inside its cone (${it.descendants_count})</h3>` + list("descendants", it.descendants) +
      "<h3>walk to the origin</h3>" + walk(it.path);
  }

  function fail(err) {
    $("panel").innerHTML = `<p class="error" id="error">${esc(err.message || err)}</p>`;
  }

  async function select(row) {
    try {
      S.selected = await api("/api/item", { row });
      showItem(S.selected);
      document.body.dataset.selected = row;
      draw();
    } catch (err) { fail(err); }
  }

  async function search(ev) {
    ev.preventDefault();
    const kind = $("kind").value, file = $("upload").files[0];
    try {
      if (file && DATA) throw new Error("an export cannot embed an image: serve it with hyvl explore");
      if (file && !S.meta.can_embed_image) throw new Error("no model to embed an image: start hyvl explore with --checkpoint");
      const q = file ? await api("/api/query", { kind }, file) : await api("/api/query", { text: $("q").value, kind });
      S.query = q; S.selected = null; S.cone = new Set(q.cone);
      showQuery(q);
      document.body.dataset.queried = (+(document.body.dataset.queried || 0) + 1).toString();
      draw();
    } catch (err) { fail(err); }
  }

  // ------------------------------------------------------------------ input
  function nearest(sx, sy) {
    let best = null, bd = 64;
    const p = S.pts;
    if (!p) return null;
    for (let i = 0; i < p.rows.length; i++) {
      const [x, y] = toScreen(p.x[i], p.y[i]);
      const d = (x - sx) ** 2 + (y - sy) ** 2;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  function pos(ev) {
    const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
    return [(ev.clientX - r.left) * dpr, (ev.clientY - r.top) * dpr];
  }
  let drag = null;
  canvas.addEventListener("mousedown", (ev) => { drag = { at: pos(ev), view: { ...S.view }, moved: false }; });
  window.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const d = drag; drag = null; canvas.classList.remove("dragging");
    if (d.moved) { refetch(); return; }
    const [sx, sy] = pos(ev), i = nearest(sx, sy);
    if (i !== null) select(S.pts.rows[i]);
  });
  canvas.addEventListener("mousemove", (ev) => {
    const [sx, sy] = pos(ev);
    if (drag) {
      const dx = sx - drag.at[0], dy = sy - drag.at[1];
      if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
      const R = radius();
      S.view.cx = drag.view.cx - dx / R; S.view.cy = drag.view.cy + dy / R;
      draw();
      return;
    }
    const i = nearest(sx, sy), tip = $("tip");
    if (i === null) { tip.hidden = true; return; }
    const p = S.pts, kind = S.meta.kinds[p.kind[i]].replace("_", " ");
    const img = p.thumb[i] && (!DATA || DATA.thumbs[p.rows[i]]) ? `<img alt="" src="${DATA ? DATA.thumbs[p.rows[i]] : "/api/thumb?row=" + p.rows[i]}">` : "";
    tip.innerHTML = img + `${esc(p.label[i])}<br><span>${kind}, d = ${p.d0[i].toFixed(3)} from the origin</span>`;
    tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { $("tip").hidden = true; });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const [sx, sy] = pos(ev), [wx, wy] = toWorld(sx, sy);
    S.view.scale = Math.min(2000, Math.max(0.5, S.view.scale * Math.exp(-ev.deltaY * 0.0015)));
    const [nx, ny] = toWorld(sx, sy); // keep the point under the cursor in place
    S.view.cx += wx - nx; S.view.cy += wy - ny;
    draw(); refetch();
  }, { passive: false });
  $("panel").addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-row]");
    if (li && li.dataset.row !== "null") select(+li.dataset.row);
  });
  $("search").addEventListener("submit", search);
  $("colour").addEventListener("change", () => { S.colourBy = $("colour").value; legend(); draw(); });
  window.addEventListener("resize", () => { draw(); refetch(); });

  // for scripts and tests: where a disk point is on the page, in CSS pixels
  window.hyvl = {
    state: S,
    pagePoint(x, y) {
      const r = canvas.getBoundingClientRect(), dpr = window.devicePixelRatio || 1;
      const [sx, sy] = toScreen(x, y);
      return [r.left + sx / dpr, r.top + sy / dpr];
    },
  };

  (async function start() {
    try {
      S.meta = await api("/api/meta");
      // the first view fits the items, not the whole (mostly empty) disk
      S.view.scale = Math.min(50, Math.max(1, 0.95 / Math.max(S.meta.max_radius || 1, 1e-3)));
      if (!S.meta.can_embed_image) $("upload").disabled = true;
      legend();
      draw();
      const p = await api("/api/points", { box: box(), limit: LIMIT });
      S.pts = p; S.inView = p.in_view;
      draw();
      document.body.dataset.ready = "1";
    } catch (err) { fail(err); }
  })();
})();
