// whyserve demo page: plain browser JavaScript, no build step, nothing from the internet.
// Everything goes through the demo server (same origin): /api/explain/<model> is forwarded to
// the inference server as it is; the rest (models, methods, class names, photos, colormap, the
// pixels the model sees) the demo answers from whyserve itself.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], colormap: null, photo: null, view: null, heatmap: null, answers: 0 };

async function api(path, options) {
  const response = await fetch(path, options);
  const type = response.headers.get("Content-Type") || "";
  const body = type.startsWith("application/json") ? await response.json() : await response.blob();
  if (!response.ok) throw new ServerError(response.status, body);
  return body;
}

class ServerError extends Error {
  constructor(status, body) {
    const detail = (body && body.error) || { message: (body && body.message) || `the server answered ${status}` };
    super(detail.message);
    this.status = status;
    this.valid = detail.valid || [];
  }
}

function showError(error) {
  const box = $("error");
  if (!error) { box.hidden = true; box.textContent = ""; return; }
  const status = error.status ? `HTTP ${error.status}: ` : "";
  const valid = error.valid && error.valid.length ? `\nvalid: ${error.valid.join(", ")}` : "";
  box.textContent = status + error.message + valid;
  box.hidden = false;
}

function busy(text) {
  $("status").textContent = text || "ready";
  $("status").classList.toggle("busy", Boolean(text));
  $("explain").disabled = $("compare-button").disabled = Boolean(text);
}

const model = () => state.models.find((m) => m.name === $("model").value);
const takesContrast = () => Boolean(model() && model().contrast_methods.includes($("method").value));

// -- setup -------------------------------------------------------------------------------

async function init() {
  bindControls();
  try {
    state.colormap = await api("/api/colormap");
    drawColorbar();
    const photos = await api("/api/photos");
    for (const name of photos) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.dataset.photo = name;
      button.addEventListener("click", () => choosePhotoByName(name));
      $("photos").append(button);
    }
    state.models = await api("/api/models");
    for (const m of state.models) $("model").append(new Option(m.name, m.name));
    await chooseModel();
    busy("");
  } catch (error) {
    busy("");
    showError(error);
  }
}

function bindControls() {
  $("model").addEventListener("change", () => chooseModel().catch(showError));
  $("method").addEventListener("change", updateContrast);
  $("file").addEventListener("change", () => $("file").files[0] && choosePhoto($("file").files[0], $("file").files[0].name));
  $("explain").addEventListener("click", () => explain());
  $("compare-button").addEventListener("click", () => compare());
  $("opacity").addEventListener("input", () => { draw($("canvas"), state.view, state.heatmap); redrawCompare(); });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) choosePhoto(file, file.name);
  });
  for (const id of ["target", "contrast"]) {
    $(id).addEventListener("keydown", (event) => { if (event.key === "Enter") explain(); });
  }
}

async function chooseModel() {
  const m = model();
  $("method").replaceChildren(...(m ? m.methods : []).map((name) => Object.assign(new Option(name, name), { title: m.help[name] || "" })));
  if (m && m.problem) showError(new Error(m.problem));
  updateContrast();
  $("classes").replaceChildren();
  if (!m) return;
  const classes = await api(`/api/classes/${encodeURIComponent(m.name)}`).catch(() => []);
  $("classes").replaceChildren(...classes.map((name) => new Option("", name)));
  if (state.photo) await explain();
}

function updateContrast() {
  const on = takesContrast();
  $("contrast").disabled = !on;
  const method = $("method").value || "this method";
  const omitted = on && model().omitted_contrast[method];  // from whyserve's method registry
  $("contrast-hint").textContent = on ? `(empty: ${omitted || "none"})` : `(not for ${method})`;
}

async function choosePhotoByName(name) {
  try {
    choosePhoto(await api(`/api/photos/${encodeURIComponent(name)}`), name);
  } catch (error) {
    showError(error);
  }
}

function choosePhoto(blob, name) {
  state.photo = { blob, name };
  $("compare-section").hidden = true;
  explain();
}

// -- one explanation ------------------------------------------------------------------------

function requestForm(method) {
  const form = new FormData();
  form.append("image", state.photo.blob, state.photo.name || "photo");
  form.append("method", method);
  form.append("topk", "5");
  if ($("target").value.trim()) form.append("target", $("target").value.trim());
  const contrast = $("contrast").value.trim();
  if (contrast && model().contrast_methods.includes(method)) form.append("contrast", contrast);
  form.append("outputs", method === "bcos" ? "heatmap,bcos_color" : "heatmap");
  return form;
}

async function ask(method) {
  const name = encodeURIComponent(model().name);
  const started = performance.now();
  const answer = await api(`/api/explain/${name}`, { method: "POST", body: requestForm(method) });
  answer.roundTripMs = performance.now() - started;
  return answer;
}

async function explain() {
  if (!state.photo || !model()) return;
  const result = $("result");
  result.dataset.state = "busy";
  busy("asking the server…");
  try {
    const name = encodeURIComponent(model().name);
    const [answer, view] = await Promise.all([
      ask($("method").value),
      api(`/api/view/${name}`, { method: "POST", body: state.photo.blob }).then(loadImage).catch(() => null),
    ]);
    showError(null);
    await showAnswer(answer, view);
    result.dataset.state = "done";
  } catch (error) {
    showError(error);
    result.dataset.state = "error";
  } finally {
    result.dataset.answers = String(++state.answers);
    busy("");
  }
}

async function showAnswer(answer, view) {
  const e = answer.explanation;
  state.view = view;
  state.heatmap = e && e.heatmap ? await loadImage(pngBlob(e.heatmap.data)) : null;
  $("question").textContent = e ? `${e.method}: ${question(e)}` : "prediction only";
  draw($("canvas"), state.view, state.heatmap);
  showPredictions(answer.predictions);
  showColourImage(e && e.bcos_color ? await loadImage(pngBlob(e.bcos_color.data)) : null);
  const timing = e ? Object.entries(e.timing_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`) : [];
  if (e && e.backend) timing.push(`backend ${e.backend}`);
  timing.push(`round trip ${answer.roundTripMs.toFixed(0)} ms`);
  $("timings").textContent = timing.join(" · ");
}

function question(e) {
  const name = (c) => (c.label !== undefined ? c.label : c.value !== undefined ? c.value : c.index);
  if (!e.target) return "";
  if (!e.contrast) return `why ${name(e.target)}?`;
  const same = e.contrast.index !== undefined && e.contrast.index === e.target.index;
  if (same) return `why not ${name(e.target)} with 100% confidence?`;
  return `why ${name(e.target)}, rather than ${name(e.contrast)}?`;
}

function showPredictions(predictions) {
  $("predictions").replaceChildren(...predictions.map((p) => {
    const li = document.createElement("li");
    const label = Object.assign(document.createElement("span"), { className: "label", textContent: p.label });
    label.title = `class ${p.index}`;
    // a regression model's prediction is its value (in [0, 1] for flowers_quality), not a probability
    const score = p.value !== undefined ? p.value : p.probability;
    const shown = p.value !== undefined ? p.value.toFixed(3) : `${(100 * p.probability).toFixed(1)}%`;
    const prob = Object.assign(document.createElement("span"), { className: "prob", textContent: shown });
    const bar = Object.assign(document.createElement("span"), { className: "bar" });
    const fill = document.createElement("span");
    fill.style.width = `${Math.min(100, Math.max(0.5, 100 * score))}%`;
    bar.append(fill);
    li.append(label, prob, bar);
    return li;
  }));
}

function showColourImage(picture) {
  $("bcos-figure").hidden = !picture;
  if (!picture) return;
  const canvas = $("bcos"), g = canvas.getContext("2d");
  g.fillStyle = "#000";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.imageSmoothingEnabled = false;
  g.drawImage(picture, 0, 0, canvas.width, canvas.height);
}

// -- drawing --------------------------------------------------------------------------------

const pngBlob = (base64) => new Blob([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], { type: "image/png" });

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => { URL.revokeObjectURL(image.src); resolve(image); };
    image.onerror = () => reject(new Error("the browser cannot show this image"));
    image.src = URL.createObjectURL(blob);
  });
}

// The heatmap (grey PNG, values in [0, 1]) in the server's colormap, over the pixels the model saw.
function draw(canvas, view, heatmap) {
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  if (view) g.drawImage(view, 0, 0, canvas.width, canvas.height);
  if (!heatmap || !state.colormap) return;
  const layer = document.createElement("canvas");
  layer.width = heatmap.width;
  layer.height = heatmap.height;
  const lg = layer.getContext("2d");
  lg.drawImage(heatmap, 0, 0);
  const pixels = lg.getImageData(0, 0, layer.width, layer.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const [r, gg, b] = state.colormap[pixels.data[i]];
    pixels.data[i] = r; pixels.data[i + 1] = gg; pixels.data[i + 2] = b; pixels.data[i + 3] = 255;
  }
  lg.putImageData(pixels, 0, 0);
  g.globalAlpha = view ? Number($("opacity").value) / 100 : 1;
  g.drawImage(layer, 0, 0, canvas.width, canvas.height);
  g.globalAlpha = 1;
}

function drawColorbar() {
  const stops = [0, 64, 128, 192, 255].map((i) => `rgb(${state.colormap[i].join(",")}) ${(100 * i) / 255}%`);
  $("colorbar").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
}

// -- several methods side by side -------------------------------------------------------------

async function compare() {
  if (!state.photo || !model()) return showError(new Error("choose a photo first"));
  const grid = $("compare");
  $("compare-section").hidden = false;
  grid.replaceChildren();
  grid.dataset.state = "busy";
  const name = encodeURIComponent(model().name);
  const view = await api(`/api/view/${name}`, { method: "POST", body: state.photo.blob }).then(loadImage).catch(() => null);
  for (const method of model().methods) {
    busy(`comparing: ${method}…`);
    grid.append(await compareCell(method, view));
  }
  grid.dataset.state = "done";
  busy("");
}

async function compareCell(method, view) {
  const figure = document.createElement("figure");
  figure.dataset.method = method;
  const caption = document.createElement("figcaption");
  caption.append(Object.assign(document.createElement("span"), { className: "method", textContent: method }));
  try {
    const answer = await ask(method);
    const e = answer.explanation;
    const canvas = Object.assign(document.createElement("canvas"), { width: 224, height: 224 });
    canvas.heatmapImage = await loadImage(pngBlob(e.heatmap.data));
    canvas.viewImage = view;
    draw(canvas, view, canvas.heatmapImage);
    figure.append(canvas);
    const took = Object.entries(e.timing_ms).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(", ");
    caption.append(question(e), Object.assign(document.createElement("small"), { textContent: took }));
  } catch (error) {
    caption.append(Object.assign(document.createElement("p"), { className: "error", textContent: error.message }));
  }
  figure.append(caption);
  return figure;
}

function redrawCompare() {
  for (const canvas of $("compare").querySelectorAll("canvas")) draw(canvas, canvas.viewImage, canvas.heatmapImage);
}

init();
