// Speech timeline for the "Voice Activity Detection (LatentSync)" node: after the node runs, draws the
// waveform with the detected speech segments highlighted, so users see what the VAD gate will do.
import { app } from "../../scripts/app.js";
import { canvasWidget } from "./canvas_widget.js";

const NODE_TYPE = "LatentSyncVAD";
const WIDGET_NAME = "speech_timeline";
const COLORS = { background: "#18181c", speech: "#26704a", wave: "#dcdcdc", prob: "#fabe3c", text: "#9a9aa2" };

function draw(canvas, data) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth || 400);
  const height = Math.max(1, canvas.clientHeight || 110);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = COLORS.background;
  ctx.fillRect(0, 0, width, height);
  if (!data) {
    ctx.fillStyle = COLORS.text;
    ctx.font = "12px sans-serif";
    ctx.fillText("Run the node to see its speech segments", 8, height / 2);
    return;
  }
  const plotHeight = height - 16;
  const duration = Math.max(data.duration, 1e-9);
  ctx.fillStyle = COLORS.speech;
  for (const [start, end] of data.speech) {
    const x0 = (start / duration) * width;
    ctx.fillRect(x0, 0, Math.max(1, (end / duration) * width - x0), plotHeight);
  }
  const mid = plotHeight / 2;
  ctx.fillStyle = COLORS.wave;
  data.envelope.forEach(([lo, hi], i) => {
    const x = (i / data.envelope.length) * width;
    const top = mid - hi * mid * 0.9;
    ctx.fillRect(x, top, Math.max(1, width / data.envelope.length), Math.max(1, mid - lo * mid * 0.9 - top));
  });
  if (data.probs.length) {
    ctx.strokeStyle = COLORS.prob;
    ctx.lineWidth = 1;
    ctx.beginPath();
    data.probs.forEach((p, i) => {
      const x = ((i + 0.5) / data.probs.length) * width;
      const y = 2 + (1 - p) * (plotHeight - 4);
      i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = COLORS.text;
  ctx.font = "11px sans-serif";
  const n = data.speech.length;
  ctx.fillText(`${n} segment${n === 1 ? "" : "s"} · ${data.speech_seconds.toFixed(2)} s speech of ` +
               `${data.duration.toFixed(2)} s`, 4, height - 3);
}

function timelineWidget(node) {
  const widget = canvasWidget(node, WIDGET_NAME, "latentsync_timeline", 110, draw);
  widget.canvas.className = "latentsync-vad-timeline";
  widget.canvas.dataset.segments ??= "";
  return widget;
}

app.registerExtension({
  name: "latentsync.vadTimeline",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_TYPE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      timelineWidget(this);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const data = output?.latentsync_vad?.[0];
      if (!data) return;
      const widget = timelineWidget(this);
      widget.data = data;
      draw(widget.canvas, data);
      widget.canvas.dataset.segments = JSON.stringify(data.speech);
      this.setDirtyCanvas?.(true, true);
    };
  },
});
