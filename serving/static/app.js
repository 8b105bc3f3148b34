// The page talks to the same REST API as any client: GET v1/models and
// /metadata for the model card, :predict and :explain with {"b64": PNG}
// (and :explain's method for the attribution methods the card lists).
"use strict";

const METHOD_TITLES = {
  saliency: "Saliency", smoothgrad: "SmoothGrad", integrated_gradients: "Integrated Gradients", grad_cam: "Grad-CAM",
};

const $ = (id) => document.getElementById(id);
const state = { model: null, card: null, limits: null, bitmap: null, png: null, probabilities: null };

async function call(method, path, body) {
  const options = { method };
  if (body !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let payload;
  try {
    payload = await response.json();
  } catch {
    payload = { error: `HTTP ${response.status} with a body that is not JSON` };
  }
  if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  return payload;
}

// Every handler reports its failure on the error line instead of failing silently.
function guarded(handler) {
  return async (...args) => {
    $("error").textContent = "";
    try {
      await handler(...args);
    } catch (error) {
      $("error").textContent = `Error: ${error.message}`;
    } finally {
      $("status").textContent = "";
      $("explain").disabled = state.png === null;
    }
  };
}

function modelPath() {
  return `v1/models/${encodeURIComponent(state.model)}/versions/${state.card.version}`;
}

function inputSize() {
  const [, height, width, channels] = state.card.input.shape;
  return { height, width, channels };
}

async function init() {
  const listing = await call("GET", "v1/models");
  state.limits = listing.limits;
  const models = listing.models.filter((m) => m.default_version !== null);
  for (const m of models) $("model").add(new Option(m.name, m.name));
  if (!models.length) throw new Error("the server has no loaded model");
  await selectModel(models[0].name);
}

async function selectModel(name) {
  const meta = await call("GET", `v1/models/${encodeURIComponent(name)}/metadata`);
  state.model = name;
  state.card = meta.metadata.card;
  const { height, width, channels } = inputSize();
  for (const id of ["input", "explanation", "heatmap"]) {
    $(id).width = width;
    $(id).height = height;
  }
  $("model-info").textContent =
    `version ${state.card.version} · ${width}×${height}×${channels} · ${state.card.num_classes} classes`;
  const target = $("target");
  target.replaceChildren(...state.card.class_names.map((n, i) => new Option(n, i)));
  const defaults = state.card.explain_defaults;
  $("rho").max = Math.max(0.5, 2 * defaults.rho);
  $("rho").value = defaults.rho;
  showRho();
  $("steps").value = defaults.steps;
  $("steps").max = state.limits.max_steps;
  clearResults();
  if (state.bitmap !== null) await useImage();
}

function showRho() {
  $("rho-value").textContent = Number($("rho").value).toFixed(3);
}

function clearResults() {
  state.probabilities = null;
  $("prediction").textContent = "";
  $("top5").tBodies[0].replaceChildren();
  clearExplanation();
}

function clearExplanation() {
  for (const id of ["explain-target", "confidence", "confidence-before", "heat-scale", "explain-outcome"]) {
    $(id).textContent = "";
  }
  $("explain-outcome").className = "";
  for (const id of ["explanation", "heatmap"]) {
    $(id).getContext("2d").clearRect(0, 0, $(id).width, $(id).height);
  }
  $("attributions").replaceChildren();
}

async function loadFile() {
  const file = $("file").files[0];
  if (!file) return;
  state.bitmap = null;
  state.png = null;
  clearResults();
  $("input").getContext("2d").clearRect(0, 0, $("input").width, $("input").height);
  try {
    state.bitmap = await createImageBitmap(file);
  } catch {
    throw new Error(`${file.name} is not an image this browser can decode`);
  }
  await useImage();
}

// The browser resizes the upload to the model's input size, so the request
// carries the pixels the page shows; the server decodes that PNG as is.
async function useImage() {
  const { height, width } = inputSize();
  const context = $("input").getContext("2d");
  context.imageSmoothingQuality = "high";
  context.clearRect(0, 0, width, height);
  context.drawImage(state.bitmap, 0, 0, width, height);
  state.png = $("input").toDataURL("image/png").split(",")[1];
  $("input-note").textContent =
    `${$("file").files[0].name}: ${state.bitmap.width}×${state.bitmap.height}, sent as ${width}×${height}`;
  await predict();
}

async function predict() {
  $("status").textContent = "Predicting…";
  const result = await call("POST", `${modelPath()}:predict`, { instances: [{ b64: state.png }] });
  const { probabilities, classes } = result.predictions[0];
  const names = state.card.class_names;
  state.probabilities = probabilities;
  const order = probabilities.map((p, i) => i).sort((a, b) => probabilities[b] - probabilities[a]);
  $("top5").tBodies[0].replaceChildren(...order.slice(0, 5).map((i) => top5Row(names[i], probabilities[i])));
  // docs/method.md §5's most telling target: the most confident class other than the prediction.
  $("target").value = order[1];
  $("prediction").textContent = `${names[classes]} (${probabilities[classes].toFixed(4)})`;
}

function top5Row(name, probability) {
  const row = document.createElement("tr");
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = `${Math.round(probability * 120)}px`;
  for (const content of [name, probability.toFixed(4), bar]) row.insertCell().append(content);
  return row;
}

async function explain() {
  $("explain").disabled = true;
  $("status").textContent = "Explaining…";
  clearExplanation();
  const target = Number($("target").value);
  const body = {
    instances: [{
      images: { b64: state.png },
      targets: target,
      rho: Number($("rho").value),
      steps: Number($("steps").value),
    }],
  };
  const result = await call("POST", `${modelPath()}:explain`, body);
  const answer = result.predictions[0];
  drawImage($("explanation"), answer.explanations);
  $("heat-scale").textContent = `(white = ${drawHeatMap($("heatmap"), answer.delta).toFixed(3)})`;
  $("explain-target").textContent = state.card.class_names[target];
  if (state.probabilities) $("confidence-before").textContent = `(${state.probabilities[target].toFixed(4)} before)`;
  $("confidence").textContent = answer.target_confidence.toFixed(4);
  showOutcome(answer, body.instances[0], state.card.class_names[target]);
  await attribute(target);
}

// Each attribution method the export has, toward the same target, one after the other (each is a heavy request).
async function attribute(target) {
  const { height, width } = inputSize();
  for (const method of Object.keys(METHOD_TITLES).filter((m) => m in state.card.signatures)) {
    $("status").textContent = `${METHOD_TITLES[method]}…`;
    const canvas = document.createElement("canvas");
    canvas.className = "pixels";
    canvas.id = `attribution-${method}`;
    [canvas.width, canvas.height] = [width, height];
    const caption = document.createElement("figcaption");
    caption.textContent = METHOD_TITLES[method];
    const figure = document.createElement("figure");
    figure.append(canvas, caption);
    $("attributions").append(figure);
    const body = { method, instances: [{ images: { b64: state.png }, targets: target }] };
    const map = (await call("POST", `${modelPath()}:explain`, body)).predictions[0].attributions;
    drawHeatMap(canvas, method === "grad_cam" ? map.map((row) => row.map((v) => [v])) : map);
  }
}

// An explanation is evidence only if δ reached its budget and the network now gives the target
// (the answer's first_met_step and target_is_top; an export without them says nothing here).
function showOutcome(answer, request, name) {
  if (answer.first_met_step === undefined) return;
  const half = Math.floor(request.steps / 2);
  const parts = [];
  if (answer.first_met_step < 0) {
    const steps = `${request.steps} step${request.steps === 1 ? "" : "s"}`;
    parts.push(`δ never reached the budget ρ = ${request.rho} in ${steps}: this is weaker than ` +
               "an explanation (the network's input gradient may vanish; try more steps).");
  } else {
    parts.push(`δ reached the budget ρ = ${request.rho} at step ${answer.first_met_step} of ${request.steps}` +
               (answer.first_met_step > half ? `, later than step ${half}: a loose explanation.` : "."));
  }
  parts.push(answer.target_is_top ? `The network now gives ${name} on x + δ.`
                                  : `The network does not give ${name} on x + δ: it is not the top class.`);
  $("explain-outcome").textContent = parts.join(" ");
  $("explain-outcome").className = answer.first_met_step < 0 || !answer.target_is_top ? "failed" : "";
}

function paint(canvas, rows, color) {
  const image = new ImageData(canvas.width, canvas.height);
  rows.forEach((row, y) => row.forEach((pixel, x) => {
    const offset = 4 * (y * canvas.width + x);
    image.data.set([...color(pixel), 255], offset);
  }));
  canvas.getContext("2d").putImageData(image, 0, 0);
}

// x + δ is not clipped by the attack (docs/method.md §4); the display clamps it to [0, 1].
function drawImage(canvas, rows) {
  const byte = (v) => Math.round(255 * Math.min(1, Math.max(0, v)));
  paint(canvas, rows, (p) => (p.length === 1 ? [byte(p[0]), byte(p[0]), byte(p[0])] : p.map(byte)));
}

// |δ| averaged over channels, scaled so its maximum is white (a "hot" colour map).
function drawHeatMap(canvas, rows) {
  const magnitude = rows.map((row) => row.map((p) => p.reduce((s, v) => s + Math.abs(v), 0) / p.length));
  const peak = Math.max(...magnitude.flat()) || 1;
  const hot = (m) => {
    const t = 3 * m / peak;
    return [t, t - 1, t - 2].map((v) => Math.round(255 * Math.min(1, Math.max(0, v))));
  };
  paint(canvas, magnitude, hot);
  return peak;
}

$("file").addEventListener("change", guarded(loadFile));
$("model").addEventListener("change", guarded(() => selectModel($("model").value)));
$("rho").addEventListener("input", showRho);
$("explain").addEventListener("click", guarded(explain));
guarded(init)();
