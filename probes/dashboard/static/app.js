// The dashboard page: chat, one card per attribute, pins, replies side by side, heatmap.
"use strict";
let INFO = null;
let STATE = { turns: [], pins: {}, tokens: [] };
const $ = (sel) => document.querySelector(sel);
const pct = (p) => (100 * p).toFixed(0) + "%";
const label = (c) => c.replace(/_/g, " ");
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]; // class i: chart and label

function status(text) { $("#status").textContent = text || ""; }

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function userTurns() { return STATE.turns.filter((t) => t.role === "user"); }

function renderMessages() {
  const box = $("#messages");
  box.innerHTML = "";
  for (const turn of STATE.turns) {
    const div = document.createElement("div");
    div.className = "msg " + turn.role;
    const pinned = turn.role === "assistant" && turn.pins.length ? " (steered)" : "";
    div.innerHTML = `<span class="who">${turn.role}${pinned}</span>`;
    div.appendChild(document.createTextNode(turn.text));
    box.appendChild(div);
  }
  box.scrollTop = box.scrollHeight;
  const last = STATE.turns[STATE.turns.length - 1];
  $("#regenerate").disabled = !(last && last.role === "assistant");
}

function bars(attr, probs) {
  return attr.classes.map((c, i) => `
    <div class="prob" data-class="${c}">
      <span style="color:${COLORS[i % COLORS.length]}">${label(c)}</span>
      <span class="bar"><span class="reading" style="width:${pct(probs.reading[i])}"></span>
        <span class="control" style="width:${pct(probs.control[i])}"></span></span>
      <span class="value" data-reading="${probs.reading[i].toFixed(4)}">${pct(probs.reading[i])}</span>
    </div>`).join("");
}

function buildCards() {
  const root = $("#cards");
  root.innerHTML = "";
  for (const attr of INFO.attributes) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.attribute = attr.name;
    const reader = INFO.readers.find((r) => r.attribute === attr.name);
    const options = attr.classes.map((c) => `<option value="${c}">${label(c)}</option>`).join("");
    card.innerHTML = `
      <h2>${label(attr.name)} <small>reading L${reader.reading_layer} (${pct(reader.reading_accuracy)}
        held out) · control L${reader.control_layer}</small></h2>
      <div class="probs"><div class="legend">send a message to see the reading</div></div>
      <div class="chart"></div>
      <div class="controls">
        <label>pin <select class="pin" data-attribute="${attr.name}"><option value="">none</option>${options}</select></label>
        <input type="range" class="strength" data-attribute="${attr.name}" min="0" max="${sliderMax()}" step="0.01"
          value="${INFO.steering.strength}">
        <span class="strength-value">${INFO.steering.strength.toFixed(2)}</span>
      </div>`;
    root.appendChild(card);
    const pin = card.querySelector(".pin");
    const slider = card.querySelector(".strength");
    pin.addEventListener("change", () => sendPin(attr.name));
    slider.addEventListener("input", () => {
      card.querySelector(".strength-value").textContent = Number(slider.value).toFixed(2);
    });
    slider.addEventListener("change", () => { if (pin.value) sendPin(attr.name); });
  }
}

function sliderMax() { return Math.min(2, Math.max(0.6, 3 * INFO.steering.strength)); }

function bandLayers() {
  const text = $("#band").value.trim();
  if (!text) return null;
  return text.split(/[ ,]+/).filter(Boolean).map(Number);
}

async function sendPin(name) {
  const card = document.querySelector(`.card[data-attribute="${name}"]`);
  const cls = card.querySelector(".pin").value || null;
  const strength = Number(card.querySelector(".strength").value);
  try {
    const data = await api("/api/pin", { attribute: name, class: cls, strength, layers: bandLayers() });
    STATE.pins = data.pins;
    status("");
    renderPins();
  } catch (err) { status(err.message); }
}

function renderPins() {
  for (const card of document.querySelectorAll(".card")) {
    const pin = STATE.pins[card.dataset.attribute];
    card.classList.toggle("pinned", !!pin);
    card.querySelector(".pin").value = pin ? pin.class : "";
    if (pin) {
      card.querySelector(".strength").value = pin.strength;
      card.querySelector(".strength-value").textContent = pin.strength.toFixed(2);
    }
  }
}

function renderCards() {
  const turns = userTurns();
  for (const attr of INFO.attributes) {
    const card = document.querySelector(`.card[data-attribute="${attr.name}"]`);
    if (!turns.length) continue;
    const latest = turns[turns.length - 1].readings[attr.name];
    card.querySelector(".probs").innerHTML = bars(attr, latest);
    const x = turns.map((_, i) => i + 1);
    const traces = attr.classes.map((c, i) => ({
      x, y: turns.map((t) => t.readings[attr.name].reading[i]), name: label(c),
      mode: "lines+markers", line: { width: 2, color: COLORS[i % COLORS.length] }, marker: { size: 5 },
    }));
    Plotly.react(card.querySelector(".chart"), traces, {
      margin: { l: 28, r: 4, t: 4, b: 20 }, height: 110, showlegend: false,
      yaxis: { range: [0, 1], tickformat: ".0%", nticks: 3 },
      xaxis: { dtick: 1, title: { text: "" } }, font: { size: 10 },
    }, { displayModeBar: false, staticPlot: true });
  }
}

function mini(readings) {
  if (!readings) return "";
  return INFO.attributes.map((attr) => {
    const p = readings[attr.name].reading;
    const k = p.indexOf(Math.max(...p));
    return `${label(attr.name)}: <b>${label(attr.classes[k])}</b> ${pct(p[k])}`;
  }).join(" · ");
}

function renderReplies() {
  const last = STATE.turns[STATE.turns.length - 1];
  const box = $("#replies");
  if (!last || last.role !== "assistant") { box.hidden = true; return; }
  box.hidden = false;
  for (const channel of ["unsteered", "steered"]) {
    const el = $("#reply-" + channel);
    const reply = last.replies[channel];
    el.hidden = !reply;
    if (!reply) continue;
    el.querySelector(".text").textContent = reply.text;
    el.querySelector(".mini").innerHTML = mini(reply.readings);
  }
}

function renderHeatmap() {
  const name = $("#heat-attribute").value;
  const attr = INFO.attributes.find((a) => a.name === name);
  if (!attr) return;
  const k = Math.max(0, attr.classes.indexOf($("#heat-class").value));
  const box = $("#heatmap");
  box.innerHTML = "";
  for (const token of STATE.tokens) {
    const p = Math.min(Math.max(token.probs[name][k], 1e-6), 1 - 1e-6);
    const logit = Math.log(p / (1 - p));
    const a = Math.min(1, Math.abs(logit) / 6);
    const span = document.createElement("span");
    span.className = token.role;
    span.textContent = token.text;
    span.title = `${label(attr.classes[k])} logit ${logit.toFixed(2)}`;
    span.style.background = logit > 0 ? `rgba(230,81,0,${a})` : `rgba(30,136,229,${a})`;
    box.appendChild(span);
  }
}

function fillHeatClasses() {
  const attr = INFO.attributes.find((a) => a.name === $("#heat-attribute").value);
  $("#heat-class").innerHTML = attr.classes.map((c) => `<option value="${c}">${label(c)}</option>`).join("");
  renderHeatmap();
}

function renderAll() { renderMessages(); renderCards(); renderPins(); renderReplies(); renderHeatmap(); }

async function stream(path) {
  const response = await fetch(path, { method: "POST" });
  if (!response.ok) { const data = await response.json(); throw new Error(data.error); }
  const live = document.createElement("div");
  live.className = "msg assistant live";
  live.innerHTML = '<span class="who">assistant (writing)</span>';
  const text = document.createTextNode("");
  live.appendChild(text);
  $("#messages").appendChild(live);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let channel = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffer.slice(0, cut));
      buffer = buffer.slice(cut + 1);
      if (line.error) throw new Error(line.error);
      if (line.token !== undefined) {
        if (channel !== line.channel) { channel = line.channel; text.textContent = ""; }
        live.querySelector(".who").textContent = `assistant (writing, ${channel})`;
        text.textContent += line.token;
        $("#messages").scrollTop = $("#messages").scrollHeight;
      }
    }
  }
}

async function refresh() { STATE = await api("/api/session"); renderAll(); }

async function run(action) {
  const buttons = ["#send", "#regenerate"].map((s) => $(s));
  buttons.forEach((b) => { b.disabled = true; });
  try { await action(); status(""); } catch (err) { status(err.message); }
  try { await refresh(); } catch (err) { status(err.message); }
  $("#send").disabled = false;
}

$("#composer").addEventListener("submit", (event) => {
  event.preventDefault();
  run(async () => {
    const text = $("#message").value;
    const turn = await api("/api/message", { text });
    $("#message").value = "";
    STATE.turns.push(turn);
    renderMessages(); renderCards();
    status(`read in ${(turn.reading_seconds * 1000).toFixed(0)} ms`);
    await stream("/api/reply");
  });
});
$("#message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("#send").click(); }
});
$("#regenerate").addEventListener("click", () => run(() => stream("/api/regenerate")));
$("#reset").addEventListener("click", () => run(() => api("/api/reset", {})));
$("#heat-attribute").addEventListener("change", fillHeatClasses);
$("#heat-class").addEventListener("change", renderHeatmap);

(async () => {
  INFO = await api("/api/info");
  $("#model").textContent = `${INFO.model.name} · ${INFO.frame} frame · fingerprint ${INFO.model.fingerprint}`;
  $("#band").value = INFO.steering.layers.join(",");
  buildCards();
  $("#heat-attribute").innerHTML = INFO.attributes.map((a) => `<option value="${a.name}">${label(a.name)}</option>`).join("");
  fillHeatClasses();
  await refresh();
  if (STATE.busy) status("another tab is generating a reply; this tab shows the conversation so far");
})();
