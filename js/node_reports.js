// Shows what a LatentSync node found or loaded (scores, face counts, model facts) on the node itself,
// from the node's UI output, so results are visible on the graph without extra preview nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const REPORTS = {
  // The report's lines: the three numbers, then "mouth sharpness ..." and "mouth flicker ..." when faces were
  // connected (d.sharpness, d.flicker).
  LatentSyncSyncNetScore: ["latentsync_score", (d) => d.report.split("\n")],
  LatentSyncDetectFaces: ["latentsync_faces", (d) =>
    [`${d.frames_with_face} of ${d.frames} frames with a face · ${d.resolution} px · ${d.detector}` +
     (d.smoothing === false ? " · not smoothed" : ""),
     ...(d.tracks?.length > 1 ? [`face tracks ${d.tracks.join(", ")}`] : [])]],
  LatentSyncUNetLoader: ["latentsync_unet", (d) =>
    [`${(d.parameters / 1e6).toFixed(1)} M parameters · ${d.dtype} · ${d.storage && d.storage !== "float" ? d.storage : d.quantization} · ${d.weights_mb} MB`,
     `${d.resolution} px faces · ${d.config}`, ...(d.download ? [d.download] : [])]],
  LatentSyncSampler: ["latentsync_sampler", (d) => [`${d.generated} of ${d.frames} frames generated`]],
  LatentSyncSampleVideo: ["latentsync_video", (d) => d.reused ? [`reused ${d.file}`] :
    [`${d.generated} of ${d.frames} frames generated${d.resumed_segments ? ` · ${d.resumed_segments} segments resumed` : ""}`]],
  LatentSyncSpeakersSampler: ["latentsync_sampler", (d) =>
    [`${d.generated} of ${d.frames} frames generated`, `faces: ${d.faces.join(", ")}`]],
  LatentSyncPrepareVideo: ["latentsync_prepared", (d) =>
    [`${d.faces} of ${d.frames} frames with a face ${d.made ? "prepared" : "read back"}`,
     ...(d.folder ? [`${d.folder}`] : [])]],
  LatentSyncWhisperEncode: ["latentsync_features", (d) =>
    [`${d.frames} frames at ${d.fps} fps · ${d.speech_frames} with speech`,
     `${d.duration.toFixed(2)} s of audio${d.speech_segments ? "" : " · no VAD"}${d.seamless ? " · seamless" : ""}`]],
};
const WIDGET_NAME = "latentsync_report";
// The last report, kept in the node's properties: ComfyUI sends UI output again only for output nodes, so a run
// served from cache (or a page reload) would otherwise leave these nodes blank. Saved with the workflow by the
// editor; files that never ran (the shipped workflows) have no such property.
const PROPERTY = "latentsync_report";
const FONT = "12px monospace";
const LINE_HEIGHT = 16; // px, set on the element so the height needed is exact
const PADDING = 4; // px on every side, inside the element (border-box)
const MARGIN = 4; // px the DOM widget leaves around the element

let measure;
function textWidth(text) {
  measure ??= document.createElement("canvas").getContext("2d");
  measure.font = FONT;
  return measure.measureText(text).width;
}

// The rows the text takes at the node's width (pre-wrap wraps a long line), and the widget height they need:
// the DOM widget draws the element `2 * MARGIN` smaller than the height it is given.
function rows(text, width) {
  const room = Math.max(1, width - 2 * MARGIN - 2 * PADDING);
  return text.split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(textWidth(line) / room - 1e-6)), 0);
}

function neededHeight(node, element) {
  return rows(element.textContent ?? "", node.size[0]) * LINE_HEIGHT + 2 * PADDING + 2 * MARGIN;
}

function reportWidget(node) {
  let widget = node.widgets?.find((w) => w.name === WIDGET_NAME);
  if (widget) return widget;
  const element = document.createElement("div");
  element.className = "latentsync-report";
  Object.assign(element.style, { font: FONT, lineHeight: `${LINE_HEIGHT}px`, color: "#ddd", whiteSpace: "pre-wrap",
                                 padding: `${PADDING}px`, boxSizing: "border-box", overflow: "hidden" });
  widget = node.addDOMWidget(WIDGET_NAME, "latentsync_report", element, {
    serialize: false, // display only: keeps widgets_values and API prompts unchanged
    hideOnZoom: false,
    margin: MARGIN,
    // Exactly as high as the report's lines (at least one), so none is cut off and none is left blank.
    getMinHeight: () => neededHeight(node, element),
    getMaxHeight: () => neededHeight(node, element),
  });
  widget.element = element;
  widget.serialize = false; // nor in the saved workflow's widgets_values (LiteGraph reads the widget's own flag)
  return widget;
}

// Shows `report` ({text, data}) on the node and makes the node tall enough for every row. Its width stays: a node
// that widened after a run would cover its neighbour in a laid-out graph, so long lines wrap instead.
function show(node, report) {
  const widget = reportWidget(node);
  widget.element.textContent = report.text;
  widget.element.dataset.report = JSON.stringify(report.data ?? null);
  const size = node.computeSize?.([node.size[0], node.size[1]]) ?? node.size;
  node.setSize?.([node.size[0], Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas?.(true, true);
}

function stored(node) {
  const report = node.properties?.[PROPERTY];
  return report && typeof report.text === "string" ? report : null;
}

app.registerExtension({
  name: "latentsync.nodeReports",
  setup() {
    // A prompt served from cache runs nothing: the cached nodes get no `executed` message, so their reports
    // come back from their properties (the element normally still shows them; this restores them regardless).
    api.addEventListener("execution_cached", ({ detail }) => {
      for (const id of detail?.nodes ?? []) {
        const node = app.graph?.getNodeById?.(id);
        const report = node && REPORTS[node.type] && stored(node);
        if (report) show(node, report);
      }
    });
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = REPORTS[nodeData.name];
    if (!spec) return;
    const [key, lines] = spec;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const data = output?.[key]?.[0];
      if (!data) return;
      // Warnings (a run that changed nothing, a video read upright, ...) follow the report, on every node.
      const warnings = (data.warnings ?? []).map((w) => `⚠ ${w}`);
      const report = { text: [...lines(data), ...warnings].join("\n"), data };
      this.properties ??= {};
      this.properties[PROPERTY] = report;
      show(this, report);
    };
    // A workflow saved after a run (or the page reloaded) shows the last report again.
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      const report = stored(this);
      if (report) show(this, report);
      return result;
    };
  },
});
