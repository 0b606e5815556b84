// attn_tools best-fit grid (anywidget ES module): one button per head, coloured by the pattern it
// fits best (the colours of viz.plot_best_fit_grid), layer 0 at the bottom. A click sets the
// model's layer/head, which Python links to the attention view. No network, no dependencies.

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("data-") || k === "style" || k === "title" || k === "aria-label") node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.appendChild(c);
  return node;
}

function fill(colors) {
  if (colors.length <= 1) return colors[0] || "#ffffff";
  // ties: a diagonal split (two) or equal bands (more), as the static grid does
  const step = 100 / colors.length;
  const stops = colors.map((c, i) => `${c} ${i * step}% ${(i + 1) * step}%`);
  return `linear-gradient(135deg, ${stops.join(", ")})`;
}

function render({ model, el: host }) {
  const root = el("div", { class: "attn-iv attn-head-grid" });
  const title = el("div", { class: "attn-panel-title" });
  const grid = el("div", { class: "attn-grid", role: "grid" });
  const legend = el("ul", { class: "attn-legend" });
  const caption = el("div", { class: "attn-note" });
  root.append(title, el("div", { class: "attn-grid-wrap" }, [grid, legend]), caption);
  host.appendChild(root);
  let cells = new Map();

  const build = () => {
    const nL = model.get("n_layers");
    const nH = model.get("n_heads");
    grid.style.gridTemplateColumns = `auto repeat(${nH}, minmax(22px, 1fr))`;
    grid.replaceChildren();
    cells = new Map();
    const byKey = new Map(model.get("cells").map((c) => [`${c.layer}-${c.head}`, c]));
    for (let layer = nL - 1; layer >= 0; layer--) {
      grid.appendChild(el("div", { class: "attn-axis", text: String(layer) }));
      for (let head = 0; head < nH; head++) {
        const c = byKey.get(`${layer}-${head}`) || { labels: [], colors: ["#ffffff"], text: "#000", score: null };
        const label = c.labels.length ? c.labels.join(" = ") : "no pattern";
        const score = c.score === null ? "" : ` (${c.score.toFixed(3)})`;
        const b = el("button", {
          class: "attn-cell",
          type: "button",
          "data-layer": layer,
          "data-head": head,
          "data-label": label,
          title: `layer ${layer}, head ${head}: ${label}${score}`,
          "aria-label": `layer ${layer}, head ${head}: ${label}`,
        });
        // "no pattern" is the page's own background, so a dark theme shows no white panel
        b.style.background = c.labels.length ? fill(c.colors) : "var(--attn-bg)";
        b.style.color = c.labels.length ? c.text : "var(--attn-fg)";
        b.addEventListener("click", () => {
          model.set("layer", layer);
          model.set("head", head);
          model.save_changes();
        });
        cells.set(`${layer}-${head}`, b);
        grid.appendChild(b);
      }
    }
    grid.appendChild(el("div", { class: "attn-axis", text: "" }));
    for (let head = 0; head < nH; head++) grid.appendChild(el("div", { class: "attn-axis", text: String(head) }));
    legend.replaceChildren(
      ...model.get("legend").map((item) =>
        el("li", {}, [
          el("span", {
            class: "attn-swatch",
            style: `background:${item.none ? "var(--attn-bg)" : item.color}`,
          }),
          el("span", { text: `${item.label} (${item.count})` }),
        ]),
      ),
    );
    title.textContent = model.get("title");
    caption.textContent = model.get("caption");
    select();
  };
  const select = () => {
    for (const b of cells.values()) b.classList.remove("attn-selected");
    const b = cells.get(`${model.get("layer")}-${model.get("head")}`);
    if (b) b.classList.add("attn-selected");
  };
  for (const name of ["cells", "legend", "n_layers", "n_heads", "title", "caption"]) model.on(`change:${name}`, build);
  model.on("change:layer", select);
  model.on("change:head", select);
  build();
}

export default { render };
