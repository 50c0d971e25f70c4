// Speaker timeline for "Assign Faces to Speakers" and "Diarize Speakers": one lane per speaker with its speech,
// coloured like the face track it drives (the same colours as the letters on the keyframe preview), and the
// mapping in words, so users see who is who before any diffusion and can correct the mapping widget.
import { app } from "../../scripts/app.js";
import { canvasWidget } from "./canvas_widget.js";

const NODE_TYPES = ["LatentSyncAssignFaces", "LatentSyncDiarize"];
const WIDGET_NAME = "speaker_timeline";
const COLORS = { background: "#18181c", lane: "#26262c", text: "#c8c8d0", unassigned: "#8a8a94" };

function laneColour(speaker, faces) {
  const face = faces.find((f) => speaker.faces.includes(f.label));
  return face ? `rgb(${face.colour.join(",")})` : COLORS.unassigned;
}

function draw(canvas, data) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth || 400);
  const lanes = data ? data.speakers.length : 0;
  const height = Math.max(1, canvas.clientHeight || 40 + 20 * lanes);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.fillStyle = COLORS.background;
  ctx.fillRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  if (!data) {
    ctx.fillStyle = COLORS.text;
    ctx.fillText("Run the node to see who speaks when", 8, height / 2);
    return;
  }
  const labelWidth = 110;
  const plotWidth = Math.max(1, width - labelWidth - 4);
  const laneHeight = Math.max(8, (height - 20) / Math.max(lanes, 1));
  const duration = Math.max(data.duration, 1e-9);
  data.speakers.forEach((speaker, row) => {
    const y = row * laneHeight;
    ctx.fillStyle = COLORS.lane;
    ctx.fillRect(labelWidth, y + 2, plotWidth, laneHeight - 4);
    ctx.fillStyle = laneColour(speaker, data.faces);
    for (const [start, end] of speaker.speech) {
      const x0 = labelWidth + (start / duration) * plotWidth;
      ctx.fillRect(x0, y + 2, Math.max(1, ((end - start) / duration) * plotWidth), laneHeight - 4);
    }
    ctx.fillStyle = COLORS.text;
    const faces = speaker.faces.length ? ` → ${speaker.faces.join(" + ")}` : "";
    ctx.fillText(`${speaker.name}${faces}`.slice(0, 18), 4, y + laneHeight / 2 + 4);
  });
  ctx.fillStyle = COLORS.text;
  ctx.fillText(data.mapping || data.how || "", 4, height - 5);
}

function timelineWidget(node) {
  const widget = canvasWidget(node, WIDGET_NAME, "latentsync_speakers", 80, draw);
  widget.canvas.className = "latentsync-speaker-timeline";
  return widget;
}

app.registerExtension({
  name: "latentsync.castView",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.includes(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      timelineWidget(this);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const data = output?.latentsync_cast?.[0];
      if (!data) return;
      const widget = timelineWidget(this);
      widget.data = data;
      widget.box.style.minHeight = `${Math.max(80, 40 + 20 * data.speakers.length)}px`; // a lane per speaker
      draw(widget.canvas, data);
      widget.canvas.dataset.speakers = JSON.stringify(data.speakers.map((s) => [s.name, s.faces]));
      widget.canvas.dataset.mapping = data.mapping;
      this.setDirtyCanvas?.(true, true);
    };
  },
});
