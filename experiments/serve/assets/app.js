// The page: choose a model, send a clip (a file, or a recording made into WAV here), show
// what the server answers.  No library, no network beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];

function status(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function showCard(model) {
  const rows = [
    ["file", model.file], ["preset", model.preset], ["trained on folds", model.trained_on],
    ["tested on fold", model.fold],
    ["accuracy", model.accuracy == null ? null : (100 * model.accuracy).toFixed(2) + "%"],
    ["float model's accuracy", model.float_accuracy == null ? null :
      (100 * model.float_accuracy).toFixed(2) + "%"],
    ["protocol", model.protocol], ["date", model.date], ["stored as", model.stored],
    ["input", `${model.n_mels} mel bands at ${model.sample_rate} Hz`],
    ["classes", model.classes]];
  $("model-card").replaceChildren(...rows.filter(([, v]) => v != null && v !== "").flatMap(
    ([k, v]) => { const dt = document.createElement("dt"); dt.textContent = k;
                  const dd = document.createElement("dd"); dd.textContent = String(v);
                  return [dt, dd]; }));
}

async function loadModels() {
  const answer = await fetch("/api/models").then((r) => r.json());
  models = answer.models;
  $("limit").textContent = `${answer.limits.max_seconds} s and ${answer.limits.max_mb} MB`;
  $("model-select").replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id + (m.accuracy == null ? "" :
      ` (${(100 * m.accuracy).toFixed(2)}% on fold ${m.fold})`);
    return option;
  }));
  showCard(models[0]);
}

$("model-select").addEventListener("change", () =>
  showCard(models.find((m) => m.id === $("model-select").value)));

function showResult(name, result) {
  $("result-name").textContent = name;
  $("top").replaceChildren(...result.top.map((entry) => {
    const li = document.createElement("li");
    const label = document.createElement("span"); label.className = "label";
    label.textContent = entry.label;
    const track = document.createElement("span");
    const bar = document.createElement("div"); bar.className = "bar";
    bar.style.width = (100 * entry.prob).toFixed(1) + "%";
    track.append(bar);
    const prob = document.createElement("span"); prob.className = "prob";
    prob.textContent = entry.prob.toFixed(3);
    li.append(label, track, prob);
    return li;
  }));
  $("waveform").src = result.pictures.waveform;
  $("logmel").src = result.pictures.logmel;
  $("maps").src = result.pictures.feature_maps;
  $("attention-part").hidden = !result.pictures.attention;
  if (result.pictures.attention) $("attention").src = result.pictures.attention;
  $("timeline").tBodies[0].replaceChildren(...result.timeline.map((w) => {
    const tr = document.createElement("tr");
    for (const text of [`${w.start.toFixed(2)}-${w.end.toFixed(2)}`, w.label,
                        w.prob.toFixed(3)]) {
      const td = document.createElement("td"); td.textContent = text; tr.append(td);
    }
    return tr;
  }));
  $("result").hidden = false;
}

async function classify(blob, name) {
  status(`Classifying ${name} ...`);
  $("player").src = URL.createObjectURL(blob);
  $("player").hidden = false;
  const model = encodeURIComponent($("model-select").value);
  let response, answer;
  try {
    response = await fetch(`/api/classify?model=${model}`, { method: "POST", body: blob });
    answer = await response.json();
  } catch (e) {
    status(`The server did not answer (${e}).`, true);
    return;
  }
  if (!response.ok) {
    status(`${name}: ${answer.error}`, true);
    return;
  }
  showResult(name, answer);
  status(`${name}: ${answer.top[0].label} (${answer.duration.toFixed(1)} s of audio)`);
}

$("file").addEventListener("change", () => {
  const file = $("file").files[0];
  if (file) classify(file, file.name);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const file = e.dataTransfer.files[0];
  if (file) classify(file, file.name);
});

// Recording: the microphone's samples through the Web Audio API, written as 16-bit PCM WAV
// (MediaRecorder's webm is not something the server can decode).
let recording = null;

function wavBlob(chunks, rate) {
  const length = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * length));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++)
    view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true);
  view.setUint16(22, 1, true); view.setUint32(24, rate, true);
  view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * length, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const x of chunk) {
      view.setInt16(offset, Math.max(-1, Math.min(1, x)) * 32767, true);
      offset += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

$("record").addEventListener("click", async () => {
  if (recording) {
    const { stream, context, processor, chunks } = recording;
    recording = null;
    processor.disconnect();
    stream.getTracks().forEach((t) => t.stop());
    await context.close();
    $("record").textContent = "Record from the microphone";
    $("record-state").textContent = "";
    classify(wavBlob(chunks, context.sampleRate), "recording.wav");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    status(`No microphone: ${e.message}`, true);
    return;
  }
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const processor = context.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  processor.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  source.connect(processor);
  processor.connect(context.destination);
  recording = { stream, context, processor, chunks };
  $("record").textContent = "Stop and classify";
  $("record-state").textContent = "recording ...";
});

loadModels().catch((e) => status(`Cannot list the models: ${e}`, true));
