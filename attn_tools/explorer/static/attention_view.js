// attn_tools attention view (anywidget ES module). Everything it needs ships in the Python
// package: no CDN, no network request. Python sends plain lists (tokens, one matrix per panel);
// this file only draws them and reports hover/controls back through the model.

const LABEL_FONT_PX = 12;

function parseRGB(css) {
  const m = /rgba?\(([^)]+)\)/.exec(css || "");
  if (!m) return null;
  const [r, g, b, a] = m[1].split(",").map((x) => parseFloat(x));
  if (a === 0) return null; // transparent: no colour of its own
  return [r, g, b];
}

// The theme as rendered: the root's computed colours (its CSS reads --jp-layout-color0 /
// --jp-ui-font-color1 with prefers-color-scheme fallbacks), so canvas and page always agree.
function theme(root) {
  const style = getComputedStyle(root);
  const bg = parseRGB(style.backgroundColor) || [255, 255, 255];
  const fg = parseRGB(style.color) || [31, 31, 31];
  const lum = (0.2126 * bg[0] + 0.7152 * bg[1] + 0.0722 * bg[2]) / 255;
  return {
    dark: lum < 0.5,
    bg: `rgb(${bg.join(",")})`,
    fg: `rgb(${fg.join(",")})`,
    bgRGB: bg,
    font: style.fontFamily || "sans-serif",
  };
}

// Weight → colour, square-root scale (diffuse heads stay visible), from the background colour
// to a saturated blue (light theme) or amber (dark theme).
function colorFor(w, th) {
  const t = Math.sqrt(Math.min(1, Math.max(0, w)));
  const hi = th.dark ? [255, 183, 77] : [13, 71, 161];
  const c = th.bgRGB.map((b, i) => Math.round(b + (hi[i] - b) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.appendChild(c);
  return node;
}

class Panel {
  constructor(container, readout, root) {
    this.root = root;
    this.readout = readout;
    this.title = el("div", { class: "attn-panel-title" });
    this.canvas = el("canvas", { class: "attn-canvas" });
    this.scroll = el("div", { class: "attn-scroll" }, [this.canvas]);
    this.node = el("div", { class: "attn-panel" }, [this.title, this.scroll]);
    container.appendChild(this.node);
    this.hover = null;
    this.canvas.addEventListener("mousemove", (e) => this.onMove(e));
    this.canvas.addEventListener("mouseleave", () => this.setHover(null));
    this.scroll.addEventListener("scroll", () => this.paint(), { passive: true });
  }

  // Layout in CSS pixels: labels measured, never dropped; cells at least as tall as a label.
  layout(data, zoom) {
    const ctx = this.canvas.getContext("2d");
    const th = theme(this.root);
    const fontPx = LABEL_FONT_PX * Math.max(0.75, Math.min(zoom, 2));
    ctx.font = `${fontPx}px ${th.font}`;
    const widths = data.tokens.map((t) => ctx.measureText(t).width);
    const longest = Math.max(10, ...widths);
    const cell = Math.max(Math.round(fontPx + 6), 8) * zoom;
    // column labels are rotated 90° so each gets a full cell width however long it is
    return { th, fontPx, cell, left: longest + 10, top: longest + 10, n: data.tokens.length };
  }

  draw(data, zoom) {
    this.data = data;
    const L = (this.L = this.layout(data, zoom));
    const dpr = window.devicePixelRatio || 1;
    const w = L.left + L.n * L.cell + 8;
    const h = L.top + L.n * L.cell + 8;
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    this.dpr = dpr;
    // the geometry, for tests and for anyone scripting the page
    Object.assign(this.canvas.dataset, { left: L.left, top: L.top, cell: L.cell, n: L.n, dpr });
    this.title.textContent = data.title;
    this.paint();
  }

  paint() {
    const { data, L } = this;
    if (!data) return;
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const th = L.th;
    ctx.fillStyle = th.bg;
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const m = data.matrix;
    for (let q = 0; q < L.n; q++) {
      for (let k = 0; k < L.n; k++) {
        ctx.fillStyle = colorFor(m[q][k], th);
        ctx.fillRect(L.left + k * L.cell, L.top + q * L.cell, L.cell, L.cell);
      }
    }
    const hv = this.hover;
    if (hv) {
      ctx.fillStyle = th.dark ? "rgba(255,255,255,0.16)" : "rgba(0,0,0,0.10)";
      if (hv.q !== null) ctx.fillRect(L.left, L.top + hv.q * L.cell, L.n * L.cell, L.cell);
      if (hv.k !== null) ctx.fillRect(L.left + hv.k * L.cell, L.top, L.cell, L.n * L.cell);
      if (hv.q !== null && hv.k !== null) {
        ctx.strokeStyle = th.fg;
        ctx.lineWidth = 2;
        ctx.strokeRect(L.left + hv.k * L.cell + 1, L.top + hv.q * L.cell + 1, L.cell - 2, L.cell - 2);
      }
    }
    // labels are frozen at the scroll box's visible top and left edges, so a long sentence
    // keeps its row and column labels in view while the cells scroll
    const sx = this.scroll.scrollLeft;
    const sy = this.scroll.scrollTop;
    ctx.textBaseline = "middle";
    ctx.fillStyle = th.bg;
    ctx.fillRect(sx, L.top, L.left, L.n * L.cell + 8);
    for (let i = 0; i < L.n; i++) {
      ctx.fillStyle = th.fg;
      ctx.font = `${hv && hv.q === i ? "bold " : ""}${L.fontPx}px ${th.font}`;
      ctx.textAlign = "right";
      ctx.fillText(data.tokens[i], sx + L.left - 6, L.top + (i + 0.5) * L.cell);
    }
    ctx.fillStyle = th.bg;
    ctx.fillRect(L.left, sy, L.n * L.cell + 8, L.top);
    for (let i = 0; i < L.n; i++) {
      ctx.save();
      ctx.translate(L.left + (i + 0.5) * L.cell, sy + L.top - 6);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillStyle = th.fg;
      ctx.font = `${hv && hv.k === i ? "bold " : ""}${L.fontPx}px ${th.font}`;
      ctx.fillText(data.tokens[i], 0, 0);
      ctx.restore();
    }
    ctx.fillStyle = th.bg;
    ctx.fillRect(sx, sy, L.left, L.top);
  }

  onMove(e) {
    const { L } = this;
    if (!L) return;
    const r = this.canvas.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const col = Math.floor((x - L.left) / L.cell);
    const row = Math.floor((y - L.top) / L.cell);
    const inCols = col >= 0 && col < L.n;
    const inRows = row >= 0 && row < L.n;
    const onRowLabels = x < this.scroll.scrollLeft + L.left; // the frozen label bands
    const onColLabels = y < this.scroll.scrollTop + L.top;
    if (onRowLabels && onColLabels) this.setHover(null);
    else if (onRowLabels) this.setHover(inRows ? { q: row, k: null } : null); // a query label
    else if (onColLabels) this.setHover(inCols ? { q: null, k: col } : null); // a key label
    else if (inCols && inRows) this.setHover({ q: row, k: col });
    else this.setHover(null);
  }

  setHover(hv) {
    this.hover = hv;
    this.paint();
    const out = this.readout;
    const t = this.data ? this.data.tokens : [];
    out.removeAttribute("data-q");
    out.removeAttribute("data-k");
    out.removeAttribute("data-value");
    if (!hv) {
      out.textContent = "Hover a cell: row = query (attends from), column = key (attended to).";
      return;
    }
    if (hv.q !== null && hv.k !== null) {
      const w = this.data.matrix[hv.q][hv.k];
      out.setAttribute("data-q", hv.q);
      out.setAttribute("data-k", hv.k);
      out.setAttribute("data-value", w.toFixed(3));
      out.textContent = `${this.data.title}: "${t[hv.q]}" (${hv.q}) → "${t[hv.k]}" (${hv.k}) = ${w.toFixed(3)}`;
    } else if (hv.q !== null) {
      const row = this.data.matrix[hv.q];
      const top = row.indexOf(Math.max(...row));
      out.textContent = `query "${t[hv.q]}" (${hv.q}) attends most to "${t[top]}" (${row[top].toFixed(3)})`;
    } else {
      const col = this.data.matrix.map((r) => r[hv.k]);
      const sum = col.reduce((a, b) => a + b, 0);
      out.textContent = `key "${t[hv.k]}" (${hv.k}) receives ${sum.toFixed(3)} in total over ${col.length} queries`;
    }
  }
}

function numberInput(model, name, maxName, labelText) {
  const input = el("input", { type: "number", min: 0, step: 1, class: `attn-${name}` });
  const sync = () => {
    input.max = model.get(maxName) - 1;
    input.value = model.get(name);
  };
  input.addEventListener("change", () => {
    const v = Math.max(0, Math.min(model.get(maxName) - 1, parseInt(input.value, 10) || 0));
    model.set(name, v);
    model.save_changes();
  });
  model.on(`change:${name}`, sync);
  model.on(`change:${maxName}`, sync);
  sync();
  return el("label", { text: `${labelText} ` }, [input]);
}

function render({ model, el: host }) {
  const root = el("div", { class: "attn-iv attn-attention-view" });
  const sentence = el("select", { class: "attn-sentence-select" });
  const tokenBtn = el("button", { text: "tokens", class: "attn-level-token", type: "button" });
  const wordBtn = el("button", { text: "words", class: "attn-level-word", type: "button" });
  const zoomOut = el("button", { text: "−", title: "smaller", class: "attn-zoom-out", type: "button" });
  const zoomIn = el("button", { text: "+", title: "larger", class: "attn-zoom-in", type: "button" });
  const controls = el("div", { class: "attn-controls" }, [
    numberInput(model, "layer", "n_layers", "layer"),
    numberInput(model, "head", "n_heads", "head"),
    el("label", { text: "sentence " }, [sentence]),
    el("span", {}, [tokenBtn, wordBtn]),
    el("span", {}, [zoomOut, zoomIn]),
  ]);
  const panelsBox = el("div", { class: "attn-panels" });
  const readout = el("div", { class: "attn-readout", role: "status" });
  const note = el("div", { class: "attn-note" });
  const busy = el("div", { class: "attn-busy", text: "working…" });
  root.append(controls, panelsBox, readout, note, busy);
  host.appendChild(root);

  let zoom = 1;
  let panels = [];

  const drawAll = () => {
    const data = model.get("panels") || [];
    while (panels.length < data.length) panels.push(new Panel(panelsBox, readout, root));
    while (panels.length > data.length) panels.pop().node.remove();
    data.forEach((d, i) => panels[i].draw(d, zoom));
    panels.forEach((p) => p.setHover(null));
  };
  const syncSentences = () => {
    sentence.replaceChildren(
      ...model.get("sentences").map((s, i) => el("option", { value: i, text: s })),
    );
    sentence.value = model.get("sentence");
  };
  const syncLevel = () => {
    tokenBtn.setAttribute("aria-pressed", model.get("level") === "token");
    wordBtn.setAttribute("aria-pressed", model.get("level") === "word");
  };
  const syncBusy = () => root.classList.toggle("attn-is-busy", !!model.get("busy"));
  const syncNote = () => {
    note.textContent = model.get("note") || "";
  };

  sentence.addEventListener("change", () => {
    model.set("sentence", parseInt(sentence.value, 10));
    model.save_changes();
  });
  for (const [btn, level] of [[tokenBtn, "token"], [wordBtn, "word"]]) {
    btn.addEventListener("click", () => {
      model.set("level", level);
      model.save_changes();
    });
  }
  zoomIn.addEventListener("click", () => { zoom = Math.min(3, zoom * 1.25); drawAll(); });
  zoomOut.addEventListener("click", () => { zoom = Math.max(0.5, zoom / 1.25); drawAll(); });

  model.on("change:panels", drawAll);
  model.on("change:sentences", syncSentences);
  model.on("change:sentence", syncSentences);
  model.on("change:level", syncLevel);
  model.on("change:busy", syncBusy);
  model.on("change:note", syncNote);

  // Redraw when the theme changes: JupyterLab swaps stylesheets and body attributes, the OS
  // flips prefers-color-scheme; the canvas reads colours at paint time.
  let last = "";
  const themeCheck = () => {
    const th = theme(root);
    const key = th.bg + th.fg;
    if (key !== last) {
      last = key;
      drawAll();
    }
  };
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  if (media && media.addEventListener) media.addEventListener("change", themeCheck);
  const observer = new MutationObserver(themeCheck);
  observer.observe(document.body, { attributes: true });
  observer.observe(document.head, { childList: true, subtree: true });
  // device pixel ratio changes (browser zoom, moving to another screen) need a sharper canvas
  const onResize = () => drawAll();
  window.addEventListener("resize", onResize);

  syncSentences();
  syncLevel();
  syncBusy();
  syncNote();
  requestAnimationFrame(() => themeCheck());
  drawAll();
  return () => {
    observer.disconnect();
    window.removeEventListener("resize", onResize);
    if (media && media.removeEventListener) media.removeEventListener("change", themeCheck);
  };
}

export default { render };
