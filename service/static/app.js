// tlstm playground: hand-written, no libraries, talks only to the server that served it.
//
// Language models: every keystroke is sent over `WS /v1/stream` (append, or reset then
// append after an edit), each character's prediction is drawn as a heat strip and the last
// one as bars; a continuation streams from `POST /v1/completions` (stream: true), read with
// fetch and a ReadableStream. Classifiers: a drawing or a dropped image is shrunk to the
// model's raw image form (its card's input.forms) and sent to `POST /v1/classify`.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOP_K = 10;        // next-character bars
  const MAX_APPEND = 1000; // characters per append message (the server caps a message)

  // ------------------------------------------------------------------ API access
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function apiKey() { return $("api-key").value.trim(); }

  function headers(json) {
    const h = {};
    if (json) h["Content-Type"] = "application/json";
    if (apiKey()) h.Authorization = "Bearer " + apiKey();
    return h;
  }

  async function errorOf(response) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON */ }
    return new ApiError(response.status, message);
  }

  async function api(path, body, signal) {
    const init = { headers: headers(body !== undefined), signal };
    if (body !== undefined) { init.method = "POST"; init.body = JSON.stringify(body); }
    const response = await fetch(path, init);
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  function base64url(text) {
    let binary = "";
    for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  // A browser cannot set headers on a WebSocket: the key travels as a subprotocol.
  function socketProtocols() {
    return apiKey() ? ["tlstm", "tlstm.bearer." + base64url(apiKey())] : ["tlstm"];
  }

  function setStatus(text, isError) {
    const status = $("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function showChar(char) {
    return { " ": "\u2423", "\n": "\u21b5", "\t": "\u21e5" }[char] || char;
  }

  function fmt(value, digits) {
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) ? value.toLocaleString("en") : value.toFixed(digits === undefined ? 4 : digits);
  }

  function bars(list, rows) {
    // rows: [{key, label, prob}], most likely first
    list.replaceChildren(...rows.map((row, i) => {
      const li = document.createElement("li");
      li.dataset.key = row.key;
      li.dataset.prob = String(row.prob);
      if (i === 0) li.classList.add("top");
      const label = document.createElement("span");
      label.className = "char";
      label.textContent = row.label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = (100 * row.prob).toFixed(1) + "%";
      fill.style.display = "block";
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = (100 * row.prob).toFixed(1) + "%";
      li.append(label, track, value);
      return li;
    }));
  }

  // ------------------------------------------------------------------ models and cards
  const app = { models: [], model: null };

  async function loadModels() {
    try {
      const list = await api("/v1/models");
      app.models = list.data;
    } catch (error) {
      app.models = [];
      setStatus(error.status === 401 ? "This server needs an API key: enter it above." : "Cannot list models: " + error.message, true);
      return;
    }
    const select = $("model-select");
    const current = app.model ? app.model.id : new URLSearchParams(location.hash.slice(1)).get("model");
    select.replaceChildren(...app.models.map((m) => new Option(m.id + " (" + m.kind + ")", m.id)));
    const list = $("model-list");
    list.replaceChildren(...app.models.map((m) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = m.id;
      button.addEventListener("click", () => { select.value = m.id; chooseModel(m.id); });
      li.append(button, " " + m.kind + (m.depth ? ", L=" + m.depth : ""));
      return li;
    }));
    const start = app.models.find((m) => m.id === current) || app.models.find((m) => m.kind === "lm") || app.models[0];
    if (start) { select.value = start.id; chooseModel(start.id); }
    setStatus(app.models.length + " model(s) served");
  }

  function renderCard(model) {
    const arch = model.architecture || {};
    const rows = [
      ["id", model.id], ["kind", model.kind === "lm" ? "language model" : "classifier"],
      ["depth L", model.depth],
      ["parameters", model.parameters === null || model.parameters === undefined ? "not recorded" : model.parameters],
      ["architecture", [arch.arch, arch.order ? arch.order + "D" : null, arch.norm && arch.norm !== "none" ? "+" + arch.norm : null]
        .filter(Boolean).join(" ")],
      ["tensor P x M", arch.tensor_size !== undefined ? arch.tensor_size + " x " + arch.channels : null],
      ["decoding", arch.decoding],
      ["input", model.input.type + ", " + model.input.size + " per step, up to " + model.input.max_length + " steps"],
      ["vocabulary", model.vocab_size ? model.vocab_size + " symbols" : null],
      ["labels", model.labels ? model.labels.join(" ") : null],
      ["provider", model.provider],
    ];
    const shown = new Set(rows.map(([key]) => key));
    for (const [key, value] of Object.entries(model.metrics || {})) if (!shown.has(key)) rows.push([key, value]);
    const dl = $("card-fields");
    dl.replaceChildren();
    for (const [key, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = fmt(value);
      dd.dataset.field = key;
      dl.append(dt, dd);
    }
  }

  function chooseModel(id) {
    const model = app.models.find((m) => m.id === id);
    if (!model) return;
    app.model = model;
    history.replaceState(null, "", "#model=" + encodeURIComponent(id));
    renderCard(model);
    lmClose();
    $("lm").hidden = model.kind !== "lm";
    $("classifier").hidden = model.kind !== "classifier";
    if (model.kind === "lm") lmStart(model);
    else drawStart(model);
  }

  // ------------------------------------------------------------------ language models: typing
  const lm = {
    ws: null, opening: null, chain: Promise.resolve(), sent: "", predictions: [], resets: 0,
    vocab: null, frame: 0,
  };

  function lmStart(model) {
    lm.vocab = new Set(model.vocab || []);
    lm.sent = "";
    lm.predictions = [];
    lmSync();
  }

  function lmClose() {
    if (lm.ws) { const ws = lm.ws; lm.ws = null; ws.close(1000); }
    lm.sent = "";
    lm.predictions = [];
  }

  // The text the model can read: up to the first character outside its vocabulary.
  function readable(text) {
    if (!lm.vocab || lm.vocab.size === 0) return { text, bad: null };
    const chars = Array.from(text);
    for (let i = 0; i < chars.length; i++) {
      if (!lm.vocab.has(chars[i])) return { text: chars.slice(0, i).join(""), bad: chars[i] };
    }
    return { text, bad: null };
  }

  function lmSocket() {
    if (lm.ws && lm.ws.readyState === WebSocket.OPEN) return Promise.resolve(lm.ws);
    if (lm.opening) return lm.opening;
    const model = app.model;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const url = scheme + location.host + "/v1/stream?model=" + encodeURIComponent(model.id) + "&top_k=" + TOP_K;
    lm.opening = new Promise((resolve, reject) => {
      const ws = new WebSocket(url, socketProtocols());
      let ready = false;
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (!ready && message.type === "ready") { ready = true; lm.ws = ws; lm.sent = ""; lm.predictions = []; resolve(ws); return; }
        if (!ready && message.type === "error") { reject(new ApiError(0, message.error.message)); return; }
        lmMessage(message);
      };
      ws.onclose = () => {
        if (lm.ws === ws) { lm.ws = null; lm.sent = ""; lm.resets = 0; }
        if (!ready) reject(new ApiError(0, "the stream session could not be opened"));
      };
    }).finally(() => { lm.opening = null; });
    return lm.opening;
  }

  function lmSync() {
    lm.chain = lm.chain.then(lmSyncOnce).catch((error) => setStatus(error.message, true));
    return lm.chain;
  }

  async function lmSyncOnce() {
    if (!app.model || app.model.kind !== "lm") return;
    const { text, bad } = readable($("lm-text").value);
    $("lm-text").title = bad ? "reads up to " + JSON.stringify(bad) + ", which is not in the model's vocabulary" : "";
    if (bad) setStatus("The model reads the text up to " + JSON.stringify(bad) + ": not in its vocabulary.", true);
    if (text === lm.sent && (lm.ws || text === "")) { lmRender(); return; } // a session opens with the first text
    const ws = await lmSocket();
    if (text === lm.sent) { lmRender(); return; }
    let piece = text;
    if (!text.startsWith(lm.sent)) {
      ws.send(JSON.stringify({ type: "reset" }));
      lm.resets += 1;
      lm.predictions = [];
    } else {
      piece = text.slice(lm.sent.length);
    }
    const chars = Array.from(piece);
    for (let i = 0; i < chars.length; i += MAX_APPEND) {
      ws.send(JSON.stringify({ type: "append", text: chars.slice(i, i + MAX_APPEND).join("") }));
    }
    lm.sent = text;
    lmRender();
  }

  function lmMessage(message) {
    if (message.type === "reset") { lm.resets = Math.max(0, lm.resets - 1); return; }
    if (message.type === "error") { setStatus(message.error.message, true); return; }
    if (message.type === "closed") { setStatus("stream session closed (" + message.reason + "); typing reopens it"); return; }
    if (message.type !== "prediction" || lm.resets > 0) return;
    lm.predictions[message.position] = message;
    if (!lm.frame) lm.frame = requestAnimationFrame(() => { lm.frame = 0; lmRender(); });
  }

  function lmRender() {
    const chars = Array.from(lm.sent);
    const heat = $("heat");
    const spans = [];
    let bits = 0;
    let scored = 0;
    for (let i = 0; i < chars.length; i++) {
      const p = lm.predictions[i];
      const span = document.createElement("span");
      span.textContent = chars[i] === "\n" ? "\u21b5\n" : chars[i];
      span.dataset.position = String(i);
      if (p && p.logprob !== null && p.logprob !== undefined) {
        const b = -p.logprob / Math.LN2;
        bits += b;
        scored += 1;
        span.dataset.logprob = String(p.logprob);
        span.style.backgroundColor = "rgba(220, 38, 38, " + Math.min(1, b / 8).toFixed(3) + ")";
        span.title = JSON.stringify(chars[i]) + ": p = " + Math.exp(p.logprob).toPrecision(3) + " (" + b.toFixed(2) + " bits)";
      } else if (p) {
        span.dataset.logprob = "";
        span.title = "the first character has no prediction";
      }
      spans.push(span);
    }
    heat.replaceChildren(...spans);
    heat.dataset.count = String(lm.predictions.filter(Boolean).length);
    $("lm-bits").textContent = scored ? (bits / scored).toFixed(3) + " bits/char over " + scored + " characters" : "";
    const last = chars.length ? lm.predictions[chars.length - 1] : null;
    const list = $("next-bars");
    list.dataset.position = last ? String(last.position) : "";
    bars(list, last ? last.top.map((t) => ({ key: t.char, label: showChar(t.char), prob: t.prob })) : []);
  }

  // ------------------------------------------------------------------ language models: generation
  const gen = { controller: null, text: "", timer: 0, started: 0, count: 0 };

  function unescape(text) {
    return text.replace(/\\(n|t|\\)/g, (_, c) => ({ n: "\n", t: "\t", "\\": "\\" })[c]);
  }

  function number(id) {
    const value = $(id).value.trim();
    return value === "" ? null : Number(value);
  }

  function generationRequest(prompt) {
    const body = {
      model: app.model.id, prompt, stream: true,
      max_tokens: number("gen-max-tokens"), temperature: number("gen-temperature"),
      top_k: number("gen-top-k"), top_p: number("gen-top-p"), seed: number("gen-seed"),
      frequency_penalty: number("gen-frequency-penalty"), presence_penalty: number("gen-presence-penalty"),
      repetition_penalty: number("gen-repetition-penalty"),
    };
    for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
    const stop = $("gen-stop").value;
    if (stop) body.stop = [unescape(stop)];
    return body;
  }

  function genRate() {
    const seconds = (performance.now() - gen.started) / 1000;
    $("gen-rate").textContent = (seconds > 0 ? gen.count / seconds : 0).toFixed(0) + " chars/s";
  }

  function genState(text, done, reason) {
    const output = $("gen-output");
    $("gen-state").textContent = text;
    output.dataset.done = done ? "1" : "";
    output.dataset.finishReason = reason || "";
  }

  async function generate(event) {
    event.preventDefault();
    if (gen.controller) return;
    const { text: prompt } = readable($("lm-text").value);
    if (!prompt) { setStatus("Type some text first: the model continues it.", true); return; }
    const body = generationRequest(prompt);
    gen.controller = new AbortController();
    gen.text = "";
    gen.count = 0;
    gen.started = performance.now();
    $("gen-prompt").textContent = prompt;
    $("gen-text").textContent = "";
    $("gen-start").disabled = true;
    $("gen-stop-button").disabled = false;
    $("gen-accept").disabled = true;
    genState("generating...", false);
    gen.timer = setInterval(genRate, 100);
    let reason = null;
    try {
      const response = await fetch("/v1/completions", {
        method: "POST", headers: headers(true), body: JSON.stringify(body), signal: gen.controller.signal,
      });
      if (!response.ok) throw await errorOf(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let finished = false;
      while (!finished) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!event.startsWith("data: ")) continue;
          const payload = event.slice(6);
          if (payload === "[DONE]") { finished = true; break; }
          const chunk = JSON.parse(payload);
          if (chunk.error) throw new ApiError(0, chunk.error.message);
          for (const choice of chunk.choices || []) {
            gen.text += choice.text;
            gen.count += Array.from(choice.text).length;
            if (choice.finish_reason) reason = choice.finish_reason;
          }
          $("gen-text").textContent = gen.text;
          genRate();
        }
      }
      genState(gen.count + " characters, finished: " + (reason || "?"), true, reason);
      setStatus("");
    } catch (error) {
      if (error.name === "AbortError") genState(gen.count + " characters, stopped", true, "stopped");
      else { genState("failed", true, "error"); setStatus(error.message, true); }
    } finally {
      clearInterval(gen.timer);
      genRate();
      gen.controller = null;
      $("gen-start").disabled = false;
      $("gen-stop-button").disabled = true;
      $("gen-accept").disabled = gen.text === "";
    }
  }

  // ------------------------------------------------------------------ classifiers
  const draw = { form: null, drawing: false, last: null, seq: 0, input: null };

  function canvasContext() { return $("draw-canvas").getContext("2d", { willReadFrequently: true }); }

  function drawClear() {
    const canvas = $("draw-canvas");
    const ctx = canvasContext();
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    $("draw-preview").getContext("2d").clearRect(0, 0, 112, 112);
    $("draw-preview").dataset.input = "";
    bars($("class-bars"), []);
    $("class-label").textContent = "";
  }

  function drawStart(model) {
    draw.form = (model.input.forms || []).find((f) => f.name === "image") || null;
    drawClear();
    if (!draw.form) {
      $("draw-shape").textContent = "this classifier takes no images";
      setStatus("Model " + model.id + " reads " + model.input.type + " sequences, not images: the playground draws for image classifiers only.", true);
      return;
    }
    $("draw-shape").textContent = draw.form.shape.join(" x ") + " pixels, values " + draw.form.range.join(" to ");
  }

  function point(event) {
    const canvas = $("draw-canvas");
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  }

  function stroke(from, to) {
    const ctx = canvasContext();
    ctx.strokeStyle = "#000";
    ctx.lineWidth = $("draw-canvas").width / 11;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from[0], from[1]);
    ctx.lineTo(to[0], to[1]);
    ctx.stroke();
  }

  // Ink per canvas pixel in [0, 1]: dark on light, or light on dark when the border is dark.
  function inkOf(image) {
    const { width, height, data } = image;
    const light = new Float32Array(width * height);
    for (let i = 0; i < light.length; i++) {
      light[i] = (0.299 * data[4 * i] + 0.587 * data[4 * i + 1] + 0.114 * data[4 * i + 2]) / 255;
    }
    let border = 0;
    for (let x = 0; x < width; x++) border += light[x] + light[(height - 1) * width + x];
    for (let y = 0; y < height; y++) border += light[y * width] + light[y * width + width - 1];
    const darkBackground = border / (2 * (width + height)) < 0.5;
    for (let i = 0; i < light.length; i++) light[i] = darkBackground ? light[i] : 1 - light[i];
    return light;
  }

  // The drawing as the model's raw image: (H, W) values in the form's range, averaged over
  // the canvas pixels each cell covers (the ink's bounding square when fitting).
  function downsample() {
    const canvas = $("draw-canvas");
    const [rows, cols] = draw.form.shape;
    const top = draw.form.range[1];
    const size = canvas.width;
    const ink = inkOf(canvasContext().getImageData(0, 0, size, size));
    let x0 = 0, y0 = 0, side = size;
    if ($("draw-fit").checked) {
      let left = size, right = -1, upper = size, lower = -1;
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          if (ink[y * size + x] > 0.1) {
            left = Math.min(left, x); right = Math.max(right, x);
            upper = Math.min(upper, y); lower = Math.max(lower, y);
          }
        }
      }
      if (right >= 0) {
        // MNIST-sized frames keep a margin (the digits sit in a 20x20 box of 28x28); the 8x8
        // digits fill their frame.
        const margin = rows >= 16 ? 4 / 20 : 0;
        const extent = Math.max(right - left + 1, lower - upper + 1);
        side = Math.max(8, Math.round(extent * (1 + 2 * margin)));
        x0 = Math.round((left + right + 1) / 2 - side / 2);
        y0 = Math.round((upper + lower + 1) / 2 - side / 2);
      }
    }
    const grid = [];
    for (let r = 0; r < rows; r++) {
      const row = [];
      for (let c = 0; c < cols; c++) {
        const ya = y0 + (r * side) / rows, yb = y0 + ((r + 1) * side) / rows;
        const xa = x0 + (c * side) / cols, xb = x0 + ((c + 1) * side) / cols;
        let sum = 0, count = 0;
        for (let y = Math.floor(ya); y < Math.ceil(yb); y++) {
          for (let x = Math.floor(xa); x < Math.ceil(xb); x++) {
            count += 1;
            if (x >= 0 && y >= 0 && x < size && y < size) sum += ink[y * size + x];
          }
        }
        row.push(Math.round(100 * top * (count ? sum / count : 0)) / 100);
      }
      grid.push(row);
    }
    return grid;
  }

  function preview(grid) {
    const canvas = $("draw-preview");
    const ctx = canvas.getContext("2d");
    const rows = grid.length, cols = grid[0].length, top = draw.form.range[1];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const shade = Math.round(255 * (1 - grid[r][c] / top));
        ctx.fillStyle = "rgb(" + shade + "," + shade + "," + shade + ")";
        ctx.fillRect((c * canvas.width) / cols, (r * canvas.height) / rows, canvas.width / cols + 1, canvas.height / rows + 1);
      }
    }
    canvas.dataset.input = JSON.stringify(grid);
  }

  async function classify() {
    if (!draw.form || !app.model || app.model.kind !== "classifier") return;
    const grid = downsample();
    preview(grid);
    const seq = ++draw.seq;
    try {
      const body = await api("/v1/classify", { model: app.model.id, inputs: [grid], input_format: "image" });
      if (seq !== draw.seq) return; // a newer drawing was sent meanwhile
      const result = body.data[0];
      const rows = body.labels.map((label, i) => ({ key: label, label, prob: result.probabilities[i] }));
      rows.sort((a, b) => b.prob - a.prob);
      bars($("class-bars"), rows);
      $("class-label").textContent = result.label;
      $("class-bars").dataset.seq = String(seq);
      setStatus("");
    } catch (error) {
      setStatus(error.message, true);
    }
  }

  async function drawFile(file) {
    if (!file || !file.type.startsWith("image/")) { setStatus("Drop an image file.", true); return; }
    const url = URL.createObjectURL(file);
    try {
      const image = new Image();
      await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = reject; image.src = url; });
      const canvas = $("draw-canvas");
      const ctx = canvasContext();
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
      const w = image.width * scale, h = image.height * scale;
      ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
      await classify();
    } catch (_) {
      setStatus("Cannot read that image.", true);
    } finally {
      URL.revokeObjectURL(url);
    }
  }

  // ------------------------------------------------------------------ wiring
  function wire() {
    $("model-select").addEventListener("change", (e) => chooseModel(e.target.value));
    window.addEventListener("hashchange", () => {
      const id = new URLSearchParams(location.hash.slice(1)).get("model");
      if (id && (!app.model || app.model.id !== id)) { $("model-select").value = id; chooseModel(id); }
    });
    $("api-key").value = sessionStorage.getItem("tlstm-api-key") || "";
    $("api-key").addEventListener("change", () => {
      sessionStorage.setItem("tlstm-api-key", apiKey());
      lmClose();
      loadModels();
    });
    $("lm-text").addEventListener("input", () => lmSync());
    $("gen-form").addEventListener("submit", generate);
    $("gen-stop-button").addEventListener("click", () => { if (gen.controller) gen.controller.abort(); });
    $("gen-accept").addEventListener("click", () => {
      $("lm-text").value = $("gen-prompt").textContent + gen.text;
      $("gen-accept").disabled = true;
      lmSync();
    });
    const canvas = $("draw-canvas");
    canvas.addEventListener("pointerdown", (e) => {
      draw.drawing = true;
      draw.last = point(e);
      canvas.setPointerCapture(e.pointerId);
      stroke(draw.last, draw.last);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!draw.drawing) return;
      const next = point(e);
      stroke(draw.last, next);
      draw.last = next;
    });
    const end = () => { if (draw.drawing) { draw.drawing = false; classify(); } };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("dragover", (e) => { e.preventDefault(); canvas.classList.add("drop"); });
    canvas.addEventListener("dragleave", () => canvas.classList.remove("drop"));
    canvas.addEventListener("drop", (e) => {
      e.preventDefault();
      canvas.classList.remove("drop");
      drawFile(e.dataTransfer.files[0]);
    });
    $("draw-file").addEventListener("change", (e) => drawFile(e.target.files[0]));
    $("draw-clear").addEventListener("click", drawClear);
  }

  wire();
  drawClear();
  loadModels();
})();
